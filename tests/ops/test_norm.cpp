// LayerNorm / RMSNorm forward and backward, the fused residual add, residual_forward: against a
// plain double loop, finite differences in f64, input validation, and CUDA against CPU.
#include "helpers.h"

#include <cmath>
#include "engine/dtype.h"
#include "fd_check.h"

using namespace ppo;
using namespace ppo::test;

namespace {

constexpr int64_t N = 7, C = 24;
constexpr float kEps = 1e-5f;

// Rows with an offset and scale of their own, so mean and variance are far from 0 and 1.
std::vector<float> sample_rows(uint64_t seed) {
  std::vector<float> x = randn(N * C, seed);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) x[size_t(n * C + c)] = x[size_t(n * C + c)] * (0.5f + 0.3f * n) + 0.4f * n - 1;
  return x;
}

struct NormReference {
  std::vector<float> out, mean, rstd;
};

// The formulas of backend.h in double, one row at a time.
NormReference norm_reference(NormKind kind, const std::vector<float>& x, const std::vector<float>& w,
                             const std::vector<float>* b) {
  NormReference r{std::vector<float>(x.size()), std::vector<float>(N), std::vector<float>(N)};
  for (int64_t n = 0; n < N; ++n) {
    const float* row = &x[size_t(n * C)];
    double mean = 0, sq = 0;
    if (kind == NormKind::LayerNorm) {
      for (int64_t c = 0; c < C; ++c) mean += row[c];
      mean /= C;
    }
    for (int64_t c = 0; c < C; ++c) sq += (row[c] - mean) * (row[c] - mean);
    const double rstd = 1 / std::sqrt(sq / C + kEps);
    for (int64_t c = 0; c < C; ++c)
      r.out[size_t(n * C + c)] = float((row[c] - mean) * rstd * w[size_t(c)] + (b ? (*b)[size_t(c)] : 0.0));
    r.mean[size_t(n)] = float(mean);
    r.rstd[size_t(n)] = float(rstd);
  }
  return r;
}

const char* kind_name(NormKind kind) { return kind == NormKind::LayerNorm ? "LayerNorm" : "RMSNorm"; }

}  // namespace

TEST_CASE("norm_forward matches the plain double loop") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const std::vector<float> x_h = sample_rows(1), w_h = randn(C, 2, 0.5f), b_h = randn(C, 3);
  Tensor inp = f.upload(x_h, DType::F32, {N, C}, "inp");
  Tensor weight = f.upload(w_h, DType::F32, {C}, "weight"), bias = f.upload(b_h, DType::F32, {C}, "bias");
  // f32 storage of O(1) outputs computed from f32 inputs; statistics summed in double.
  const double atol = 1e-5, rtol = 1e-5;
  for (NormKind kind : {NormKind::LayerNorm, NormKind::RMSNorm}) {
    const bool ln = kind == NormKind::LayerNorm;
    for (bool with_bias : {true, false}) {
      if (!ln && with_bias) continue;
      CAPTURE(kind_name(kind));
      CAPTURE(with_bias);
      Tensor out = f.poisoned(DType::F32, {N, C}, "out"), rstd = f.poisoned(DType::F32, {N}, "rstd");
      Tensor mean = ln ? f.poisoned(DType::F32, {N}, "mean") : Tensor{};
      f.backend->norm_forward(kind, out, mean, rstd, inp, weight, with_bias ? bias : Tensor{}, kEps);
      const NormReference ref = norm_reference(kind, x_h, w_h, with_bias ? &b_h : nullptr);
      check_close(f.backend->to_host(out), ref.out, atol, rtol, "out");
      check_close(f.backend->to_host(rstd), ref.rstd, atol, rtol, "rstd");
      if (ln) check_close(f.backend->to_host(mean), ref.mean, atol, rtol, "mean");
    }
  }
}

TEST_CASE("residual_norm_forward adds then normalizes; residual_forward adds") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const std::vector<float> a_h = sample_rows(11), b_h = randn(N * C, 12), w_h = randn(C, 13), bias_h = randn(C, 14);
  Tensor a = f.upload(a_h, DType::F32, {N, C}, "a"), b = f.upload(b_h, DType::F32, {N, C}, "b");
  Tensor weight = f.upload(w_h, DType::F32, {C}, "weight"), bias = f.upload(bias_h, DType::F32, {C}, "bias");
  std::vector<float> sum(a_h.size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = a_h[i] + b_h[i];

  Tensor res = f.poisoned(DType::F32, {N, C}, "res"), out = f.poisoned(DType::F32, {N, C}, "out");
  Tensor mean = f.poisoned(DType::F32, {N}, "mean"), rstd = f.poisoned(DType::F32, {N}, "rstd");
  f.backend->residual_norm_forward(NormKind::LayerNorm, res, out, mean, rstd, a, b, weight, bias, kEps);
  check_close(f.backend->to_host(res), sum, 0, 0, "res_out");
  check_close(f.backend->to_host(out), norm_reference(NormKind::LayerNorm, sum, w_h, &bias_h).out, 1e-5, 1e-5, "out");

  Tensor plain = f.poisoned(DType::F32, {N, C}, "plain");
  f.backend->residual_forward(plain, a, b);
  check_close(f.backend->to_host(plain), sum, 0, 0, "residual_forward");
}

TEST_CASE("norm_backward matches finite differences in f64, accumulating into every gradient") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  for (NormKind kind : {NormKind::LayerNorm, NormKind::RMSNorm}) {
    CAPTURE(kind_name(kind));
    const bool ln = kind == NormKind::LayerNorm;
    Tensor inp = f.upload(sample_rows(21), DType::F64, {N, C}, "inp");
    Tensor weight = f.upload(randn(C, 22, 0.7f), DType::F64, {C}, "weight");
    Tensor bias = ln ? f.upload(randn(C, 23), DType::F64, {C}, "bias") : Tensor{};
    Tensor out = f.pool->take(DType::F64, {N, C}, "out"), rstd = f.pool->take(DType::F64, {N}, "rstd");
    Tensor mean = ln ? f.pool->take(DType::F64, {N}, "mean") : Tensor{};
    const std::vector<float> w = randn(N * C, 24);  // L = sum(out * w), so dout = w
    auto loss = [&] {
      f.backend->norm_forward(kind, out, mean, rstd, inp, weight, bias, kEps);
      return weighted_sum(out, w);
    };
    loss();  // mean and rstd of the unperturbed input, for the backward pass

    const std::vector<float> dinp0 = randn(N * C, 25), dw0 = randn(C, 26), db0 = randn(C, 27);
    Tensor dinp = f.upload(dinp0, DType::F64, {N, C}, "dinp"), dweight = f.upload(dw0, DType::F64, {C}, "dweight");
    Tensor dbias = ln ? f.upload(db0, DType::F64, {C}, "dbias") : Tensor{};
    Tensor dout = f.upload(w, DType::F64, {N, C}, "dout");
    f.backend->norm_backward(kind, dinp, dweight, dbias, dout, inp, weight, mean, rstd);

    // h = 1e-6 in f64: truncation O(h^2 |L'''|) ~ 1e-11 and rounding ~1e-16 |L| / h ~ 1e-9 here,
    // plus 6e-8 relative from the f32 view; a wrong term of the formula is off by O(0.1..1).
    check_close(minus(f64_values(dinp), dinp0), central_diff(inp, loss), 1e-6, 1e-5, "dinp");
    check_close(minus(f64_values(dweight), dw0), central_diff(weight, loss), 1e-6, 1e-5, "dweight");
    if (ln) check_close(minus(f64_values(dbias), db0), central_diff(bias, loss), 1e-6, 1e-5, "dbias");

    // The parameter gradients are optional; dinp comes out the same without them.
    loss();
    Tensor dinp2 = f.upload(dinp0, DType::F64, {N, C}, "dinp2");
    f.backend->norm_backward(kind, dinp2, Tensor{}, Tensor{}, dout, inp, weight, mean, rstd);
    check_close(f64_values(dinp2), f64_values(dinp), 0, 0, "dinp without dweight, dbias");
  }
}

TEST_CASE("norm rejects bad inputs, naming the argument") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Tensor inp = f.upload(sample_rows(31), DType::F32, {N, C}, "inp"), out = f.pool->take(DType::F32, {N, C}, "out");
  Tensor weight = f.upload(randn(C, 32), DType::F32, {C}, "weight");
  Tensor mean = f.pool->take(DType::F32, {N}, "mean"), rstd = f.pool->take(DType::F32, {N}, "rstd");
  Tensor rstd64 = f.pool->take(DType::F64, {N}, "rstd64"), short_w = f.pool->take(DType::F32, {C - 1}, "short_w");
  CHECK_THROWS_WITH_AS(f.backend->norm_forward(NormKind::LayerNorm, out, mean, rstd64, inp, weight, Tensor{}, kEps),
                       doctest::Contains("'rstd'"), Error);
  CHECK_THROWS_WITH_AS(f.backend->norm_forward(NormKind::LayerNorm, out, mean, rstd, inp, short_w, Tensor{}, kEps),
                       doctest::Contains("'weight'"), Error);
  CHECK_THROWS_WITH_AS(f.backend->norm_forward(NormKind::LayerNorm, out, Tensor{}, rstd, inp, weight, Tensor{}, kEps),
                       doctest::Contains("'mean'"), Error);
  CHECK_THROWS_WITH_AS(f.backend->norm_forward(NormKind::RMSNorm, out, mean, rstd, inp, weight, Tensor{}, kEps),
                       doctest::Contains("RMSNorm takes no mean"), Error);
  Tensor dout64 = f.pool->take(DType::F64, {N, C}, "dout64");
  CHECK_THROWS_WITH_AS(f.backend->norm_backward(NormKind::RMSNorm, out, Tensor{}, Tensor{}, dout64, inp, weight,
                                                Tensor{}, rstd),
                       doctest::Contains("'dout'"), Error);
  // A gradient with a different element count fails in the reshape, which names the tensor.
  Tensor dout_short = f.pool->take(DType::F32, {N - 1, C}, "dout_short");
  CHECK_THROWS_WITH_AS(f.backend->norm_backward(NormKind::RMSNorm, out, Tensor{}, Tensor{}, dout_short, inp, weight,
                                                Tensor{}, rstd),
                       doctest::Contains("'dout_short'"), Error);
}

TEST_CASE("norm: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const std::vector<float> a_h = bf16_rounded(sample_rows(41)), b_h = bf16_rounded(randn(N * C, 42));
  const std::vector<float> w_h = bf16_rounded(randn(C, 43)), bias_h = bf16_rounded(randn(C, 44));
  const std::vector<float> dout_h = bf16_rounded(randn(N * C, 45)), dinp0 = bf16_rounded(randn(N * C, 46));
  const std::vector<float> dw0 = randn(C, 47), db0 = randn(C, 48);
  for (NormKind kind : {NormKind::LayerNorm, NormKind::RMSNorm}) {
    CAPTURE(kind_name(kind));
    const bool ln = kind == NormKind::LayerNorm;
    std::vector<float> r[2][7];  // [cuda, cpu][res, out, mean, rstd, dinp, dweight, dbias]
    auto run = [&](auto* fx, std::vector<float>* res) {
      Backend& be = *fx->backend;
      const DType act = be.act_dtype(), stat = be.stat_dtype(), grad = be.grad_dtype();
      Tensor a = fx->upload(a_h, act, {N, C}, "a"), b = fx->upload(b_h, act, {N, C}, "b");
      Tensor weight = fx->upload(w_h, act, {C}, "weight");
      Tensor bias = ln ? fx->upload(bias_h, act, {C}, "bias") : Tensor{};
      Tensor res_out = fx->poisoned(act, {N, C}, "res_out"), out = fx->poisoned(act, {N, C}, "out");
      Tensor mean = ln ? fx->poisoned(stat, {N}, "mean") : Tensor{};
      Tensor rstd = fx->poisoned(stat, {N}, "rstd");
      be.residual_norm_forward(kind, res_out, out, mean, rstd, a, b, weight, bias, kEps);
      Tensor dout = fx->upload(dout_h, act, {N, C}, "dout"), dinp = fx->upload(dinp0, act, {N, C}, "dinp");
      Tensor dweight = fx->upload(dw0, grad, {C}, "dweight");
      Tensor dbias = ln ? fx->upload(db0, grad, {C}, "dbias") : Tensor{};
      be.norm_backward(kind, dinp, dweight, dbias, dout, res_out, weight, mean, rstd);
      res[0] = be.to_host(res_out);
      res[1] = be.to_host(out);
      if (ln) res[2] = be.to_host(mean);
      res[3] = be.to_host(rstd);
      res[4] = be.to_host(dinp);
      res[5] = be.to_host(dweight);
      if (ln) res[6] = be.to_host(dbias);
    };
    run(gpu.get(), r[0]);
    run(&cpu, r[1]);
    const char* names[7] = {"res_out", "out", "mean", "rstd", "dinp", "dweight", "dbias"};
    for (int i = 0; i < 7; ++i) {
      if (r[1][i].empty()) continue;
      CAPTURE(names[i]);
      CHECK(rel_l2(r[0][i], r[1][i]) < 2e-2);
    }
  }
}
