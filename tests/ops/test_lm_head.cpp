// Fused LM head (log-prob of the target and entropy over the vocabulary): forward against a naive
// full-softmax reference in float64, entropy against its definition, temperature, backward by
// float64 finite differences and (across the CPU's row blocks and vocabulary chunks) against the
// float64 formula, range errors, CUDA against CPU.
#include <cmath>
#include <tuple>
#include "helpers.h"

using namespace ppo;
using namespace ppo::test;

namespace {

struct Reference { std::vector<float> logp, entropy, lse; };

// Row n of z = hidden @ wte^T * inv_t, in double.
std::vector<double> logits_row(const std::vector<float>& hidden, const std::vector<float>& wte, int64_t n, int64_t C,
                               int64_t V, double inv_t) {
  std::vector<double> z(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) {
    double d = 0;
    for (int64_t c = 0; c < C; ++c) d += double(hidden[size_t(n * C + c)]) * wte[size_t(v * C + c)];
    z[size_t(v)] = d * inv_t;
  }
  return z;
}

// lse = log sum exp z and entropy = -sum p log p of one row's softmax p.
struct RowSoftmax { double lse, entropy; };
RowSoftmax row_softmax(const std::vector<double>& z) {
  double mx = z[0], Z = 0, ent = 0;
  for (double x : z) mx = std::max(mx, x);
  for (double x : z) Z += std::exp(x - mx);
  for (double x : z) {
    const double p = std::exp(x - mx) / Z;
    if (p > 0) ent -= p * std::log(p);
  }
  return {mx + std::log(Z), ent};
}

// The full (N,V) softmax of z in double.
Reference lm_reference(const std::vector<float>& hidden, const std::vector<float>& wte, const std::vector<int32_t>& targets,
                       int64_t N, int64_t C, int64_t V, double inv_t) {
  Reference r;
  for (int64_t n = 0; n < N; ++n) {
    const std::vector<double> z = logits_row(hidden, wte, n, C, V, inv_t);
    const RowSoftmax sm = row_softmax(z);
    r.lse.push_back(float(sm.lse));
    r.logp.push_back(float(z[size_t(targets[size_t(n)])] - sm.lse));
    r.entropy.push_back(float(sm.entropy));
  }
  return r;
}

struct ReferenceGrad { std::vector<float> dhidden, dwte; };

// The backward in double from the full softmax, weights a (logp) and c (entropy):
//   dz = a (1[v==target] - p) - c p (log p + entropy);  dhidden = inv_t dz @ wte;  dwte = inv_t dz^T @ hidden
ReferenceGrad lm_reference_backward(const std::vector<float>& hidden, const std::vector<float>& wte,
                                    const std::vector<int32_t>& targets, const std::vector<float>& a,
                                    const std::vector<float>& c, int64_t N, int64_t C, int64_t V, double inv_t) {
  std::vector<double> dh(size_t(N * C)), dw(size_t(V * C));
  for (int64_t n = 0; n < N; ++n) {
    const std::vector<double> z = logits_row(hidden, wte, n, C, V, inv_t);
    const RowSoftmax sm = row_softmax(z);
    for (int64_t v = 0; v < V; ++v) {
      const double log_p = z[size_t(v)] - sm.lse, p = std::exp(log_p);
      const double dz = a[size_t(n)] * ((v == targets[size_t(n)] ? 1.0 : 0.0) - p) - c[size_t(n)] * p * (log_p + sm.entropy);
      for (int64_t k = 0; k < C; ++k) {
        dh[size_t(n * C + k)] += inv_t * dz * wte[size_t(v * C + k)];
        dw[size_t(v * C + k)] += inv_t * dz * hidden[size_t(n * C + k)];
      }
    }
  }
  return {std::vector<float>(dh.begin(), dh.end()), std::vector<float>(dw.begin(), dw.end())};
}

}  // namespace

TEST_CASE("lm_logprob_entropy_forward matches the full softmax; temperature; large logits") {
  // (N,C,V) = (21,24,37): one row block and one vocabulary chunk on the CPU; (300,8,2100) crosses
  // its 256-row blocks and 1024-column chunks (the online logsumexp rescales when a later chunk
  // holds a row's max).
  for (const auto& shape : {std::tuple<int64_t, int64_t, int64_t>{21, 24, 37}, {300, 8, 2100}})
  for (float temperature : {1.0f, 0.7f, 1.6f}) {
    // no structured binding: doctest's CAPTURE takes N into a lambda
    const int64_t N = std::get<0>(shape), C = std::get<1>(shape), V = std::get<2>(shape);
    for (float scale : {1.0f, 30.0f}) {  // scale 30: logits in the hundreds (exp overflows without max-subtraction)
      CAPTURE(N);
      CAPTURE(temperature);
      CAPTURE(scale);
      BackendFixture fx(DeviceKind::CPU, Precision::F32);
      const auto hidden = randn(size_t(N * C), 701, scale), wte = randn(size_t(V * C), 702);
      const auto targets = randint(size_t(N), 703, 0, int32_t(V));
      Tensor logp = fx.poisoned(DType::F32, {N}, "logp"), ent = fx.poisoned(DType::F32, {N}, "entropy"),
             lse = fx.poisoned(DType::F32, {N}, "lse");
      fx.backend->lm_logprob_entropy_forward(logp, ent, lse, fx.upload(hidden, DType::F32, {3, N / 3, C}, "hidden"),
                                             fx.upload(wte, DType::F32, {V, C}, "wte"),
                                             fx.upload_ids(targets, {3, N / 3}, "targets"), 1.0f / temperature);
      const Reference r = lm_reference(hidden, wte, targets, N, C, V, 1.0 / temperature);
      // f32 logits (sum of 24 products) carry relative error ~ 1e-6 of |z| <= ~150*scale/30:
      // atol 1e-5 * scale, rtol 1e-5.
      const double atol = 1e-5 * scale;
      check_close(fx.backend->to_host(logp), r.logp, atol, 1e-5, "logp");
      check_close(fx.backend->to_host(ent), r.entropy, atol, 1e-5, "entropy (vs -sum p log p)");
      check_close(fx.backend->to_host(lse), r.lse, atol, 1e-5, "lse");
    }
  }
}

TEST_CASE("lm_logprob_entropy_backward matches float64 finite differences") {
  // L = sum_n a_n logp_n + c_n entropy_n, both weights nonzero, at temperature 0.8, with respect
  // to hidden and wte. Central differences, eps = 1e-5: truncation ~ eps^2 |L'''| ~ 1e-10, rounding
  // ~ 1e-16 |L| / eps ~ 1e-10; tolerance 1e-7 + 1e-6 |ref|; a wrong term is O(0.01..1).
  const int64_t N = 10, C = 6, V = 13;
  const float inv_t = 1.0f / 0.8f;
  BackendFixture fx(DeviceKind::CPU, Precision::F64);
  const auto a = randn(size_t(N), 801), c = randn(size_t(N), 802);
  const auto dwte0 = randn(size_t(V * C), 803);  // dwte is "+=": start from nonzero values
  Tensor hidden = fx.upload(randn(size_t(N * C), 804), DType::F64, {N, C}, "hidden");
  Tensor wte = fx.upload(randn(size_t(V * C), 805), DType::F64, {V, C}, "wte");
  Tensor targets = fx.upload_ids(randint(size_t(N), 806, 0, int32_t(V)), {N}, "targets");
  Tensor logp = fx.poisoned(DType::F64, {N}, "logp"), ent = fx.poisoned(DType::F64, {N}, "entropy"),
         lse = fx.poisoned(DType::F64, {N}, "lse");
  auto loss = [&]() {
    fx.backend->lm_logprob_entropy_forward(logp, ent, lse, hidden, wte, targets, inv_t);
    double l = 0;
    for (int64_t n = 0; n < N; ++n) l += a[size_t(n)] * logp.ptr<double>()[n] + c[size_t(n)] * ent.ptr<double>()[n];
    return l;
  };
  auto finite_differences = [&](Tensor x) {
    std::vector<float> g(size_t(x.numel()));
    const double eps = 1e-5;
    for (int64_t i = 0; i < x.numel(); ++i) {
      double* xi = x.ptr<double>() + i;
      const double x0 = *xi;
      *xi = x0 + eps;
      const double lp = loss();
      *xi = x0 - eps;
      const double lm = loss();
      *xi = x0;
      g[size_t(i)] = float((lp - lm) / (2 * eps));
    }
    return g;
  };
  loss();  // lse, entropy at the unperturbed point
  Tensor dhidden = fx.poisoned(DType::F64, {N, C}, "dhidden");
  Tensor dwte = fx.upload(dwte0, DType::F64, {V, C}, "dwte");
  Tensor ga = fx.upload(a, DType::F64, {N}, "g_logp"), gc = fx.upload(c, DType::F64, {N}, "g_entropy");
  fx.backend->lm_logprob_entropy_backward(dhidden, dwte, ga, gc, hidden, wte, targets, lse, ent, inv_t);
  std::vector<float> dw(size_t(V * C));
  for (size_t i = 0; i < dw.size(); ++i) dw[i] = float(dwte.ptr<double>()[i] - dwte0[i]);
  const auto dh = fx.backend->to_host(dhidden);
  check_close(dh, finite_differences(hidden), 1e-7, 1e-6, "dhidden vs finite differences");
  check_close(dw, finite_differences(wte), 1e-7, 1e-6, "dwte (+=) vs finite differences");

  // An empty weight means zero: g_entropy empty == g_entropy all zeros; dwte empty is allowed.
  Tensor zeros = fx.pool->take(DType::F64, {N}, "zeros");
  fx.backend->zero(zeros);
  Tensor dh_zero = fx.poisoned(DType::F64, {N, C}, "dh_zero"), dh_empty = fx.poisoned(DType::F64, {N, C}, "dh_empty");
  fx.backend->lm_logprob_entropy_backward(dh_zero, Tensor{}, ga, zeros, hidden, wte, targets, lse, ent, inv_t);
  fx.backend->lm_logprob_entropy_backward(dh_empty, Tensor{}, ga, Tensor{}, hidden, wte, targets, lse, ent, inv_t);
  check_close(fx.backend->to_host(dh_empty), fx.backend->to_host(dh_zero), 0, 0, "empty g_entropy == zeros");
  CHECK(rel_l2(fx.backend->to_host(dh_empty), dh) > 1e-2);  // the entropy term mattered above
}

TEST_CASE("lm_logprob_entropy_backward across row blocks and vocabulary chunks matches the float64 formula") {
  // (300,8,2100) crosses the CPU's 256-row blocks and 1024-column chunks, which the finite-difference
  // case above (one block, one chunk) does not; f32 against the float64 formula (whose terms the
  // finite differences check). f32 sums of up to 2100 terms (measured max error 1e-5 at values ~1):
  // atol 2e-5, rtol 1e-4; a wrong or misplaced chunk is off by O(0.1..10).
  const int64_t N = 300, C = 8, V = 2100;
  const float inv_t = 1.0f / 0.8f;
  BackendFixture fx(DeviceKind::CPU, Precision::F32);
  const auto hidden = randn(size_t(N * C), 811), wte = randn(size_t(V * C), 812);
  const auto targets = randint(size_t(N), 813, 0, int32_t(V));
  const auto a = randn(size_t(N), 814), c = randn(size_t(N), 815), dwte0 = randn(size_t(V * C), 816);
  Tensor h = fx.upload(hidden, DType::F32, {N, C}, "hidden"), w = fx.upload(wte, DType::F32, {V, C}, "wte");
  Tensor tg = fx.upload_ids(targets, {N}, "targets");
  Tensor logp = fx.poisoned(DType::F32, {N}, "logp"), ent = fx.poisoned(DType::F32, {N}, "entropy"),
         lse = fx.poisoned(DType::F32, {N}, "lse");
  fx.backend->lm_logprob_entropy_forward(logp, ent, lse, h, w, tg, inv_t);
  Tensor dhidden = fx.poisoned(DType::F32, {N, C}, "dhidden"), dwte = fx.upload(dwte0, DType::F32, {V, C}, "dwte");
  fx.backend->lm_logprob_entropy_backward(dhidden, dwte, fx.upload(a, DType::F32, {N}, "g_logp"),
                                          fx.upload(c, DType::F32, {N}, "g_entropy"), h, w, tg, lse, ent, inv_t);
  const ReferenceGrad r = lm_reference_backward(hidden, wte, targets, a, c, N, C, V, inv_t);
  std::vector<float> dw = fx.backend->to_host(dwte);
  for (size_t i = 0; i < dw.size(); ++i) dw[i] -= dwte0[i];
  check_close(fx.backend->to_host(dhidden), r.dhidden, 2e-5, 1e-4, "dhidden");
  check_close(dw, r.dwte, 2e-5, 1e-4, "dwte (+=)");
}

TEST_CASE("lm_logprob_entropy_forward: a target id outside the vocabulary is an error naming the tensor") {
  const int64_t N = 4, C = 8, V = 11;
  BackendFixture fx(DeviceKind::CPU, Precision::F32);
  Tensor hidden = fx.upload(randn(size_t(N * C), 901), DType::F32, {N, C}, "hidden");
  Tensor wte = fx.upload(randn(size_t(V * C), 902), DType::F32, {V, C}, "wte");
  Tensor logp = fx.poisoned(DType::F32, {N}, "logp"), ent = fx.poisoned(DType::F32, {N}, "entropy"),
         lse = fx.poisoned(DType::F32, {N}, "lse");
  for (int32_t bad : {int32_t(V), -1}) {
    Tensor targets = fx.upload_ids({0, 3, bad, 1}, {N}, "response_targets");
    CHECK_THROWS_WITH_AS(fx.backend->lm_logprob_entropy_forward(logp, ent, lse, hidden, wte, targets, 1.0f),
                         doctest::Contains("'response_targets'"), Error);
  }
}

TEST_CASE("lm head CUDA vs CPU") {
  const int64_t N = 70, C = 64, V = 1000;
  auto gpu = cuda_backend_or_skip(V);
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32, size_t(64) << 20, V);
  const float inv_t = 1.0f / 0.7f;
  auto both = [&](const std::vector<float>& v, DType gpu_dtype, std::initializer_list<int64_t> dims, const char* name) {
    Tensor g = gpu->upload(v, gpu_dtype, dims, name);
    Tensor c = cpu.pool->take(DType::F32, dims, name);
    cpu.backend->convert(c, g);  // the CPU gets the same (bf16-rounded) values
    return std::pair<Tensor, Tensor>{c, g};
  };
  auto [hc, hg] = both(randn(size_t(N * C), 1001), DType::BF16, {N, C}, "hidden");
  auto [wc, wg] = both(randn(size_t(V * C), 1002, 0.3f), DType::BF16, {V, C}, "wte");
  auto [ac, ag] = both(randn(size_t(N), 1003), DType::F32, {N}, "g_logp");
  auto [ec, eg] = both(randn(size_t(N), 1004), DType::F32, {N}, "g_entropy");
  auto [dwc, dwg] = both(randn(size_t(V * C), 1005), DType::F32, {V, C}, "dwte");
  const auto targets = randint(size_t(N), 1006, 0, int32_t(V));
  Tensor tc = cpu.upload_ids(targets, {N}, "targets"), tg = gpu->upload_ids(targets, {N}, "targets");
  auto stat = [](BackendFixture& f, const char* name) { return f.poisoned(DType::F32, {N}, name); };
  Tensor lpc = stat(cpu, "logp"), enc = stat(cpu, "entropy"), lsc = stat(cpu, "lse");
  Tensor lpg = stat(*gpu, "logp"), eng = stat(*gpu, "entropy"), lsg = stat(*gpu, "lse");
  cpu.backend->lm_logprob_entropy_forward(lpc, enc, lsc, hc, wc, tc, inv_t);
  gpu->backend->lm_logprob_entropy_forward(lpg, eng, lsg, hg, wg, tg, inv_t);
  CHECK(rel_l2(gpu->backend->to_host(lpg), cpu.backend->to_host(lpc)) < 2e-2);
  CHECK(rel_l2(gpu->backend->to_host(eng), cpu.backend->to_host(enc)) < 2e-2);
  CHECK(rel_l2(gpu->backend->to_host(lsg), cpu.backend->to_host(lsc)) < 2e-2);
  Tensor dhc = cpu.poisoned(DType::F32, {N, C}, "dhidden"), dhg = gpu->poisoned(DType::BF16, {N, C}, "dhidden");
  cpu.backend->lm_logprob_entropy_backward(dhc, dwc, ac, ec, hc, wc, tc, lsc, enc, inv_t);
  gpu->backend->lm_logprob_entropy_backward(dhg, dwg, ag, eg, hg, wg, tg, lsg, eng, inv_t);
  CHECK(rel_l2(gpu->backend->to_host(dhg), cpu.backend->to_host(dhc)) < 2e-2);
  CHECK(rel_l2(gpu->backend->to_host(dwg), cpu.backend->to_host(dwc)) < 2e-2);
}
