// adamw_update and sum_squares: a hand-computed step, several steps against a plain double loop,
// deterministic sums, input validation, and CUDA against CPU.
#include "helpers.h"

#include <omp.h>
#include <cmath>
#include "engine/dtype.h"
#include "fd_check.h"

using namespace ppo;
using namespace ppo::test;

namespace {

constexpr int64_t n = 1000 + 7;

AdamWParams sample_params(int64_t step) {
  AdamWParams hp;
  hp.lr = 3e-3f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-6f;
  hp.weight_decay = 0.1f;
  hp.step = step;
  hp.grad_scale = 0.5f;
  return hp;
}

// backend.h's AdamW in double, in place: decay on [0, decayed), clipping from the gradients' norm.
void adamw_reference(std::vector<double>& w, std::vector<double>& m, std::vector<double>& v,
                     const std::vector<float>& grad, const AdamWParams& hp, size_t decayed, float max_grad_norm) {
  double sumsq = 0;
  for (float g : grad) sumsq += double(g) * g;
  const float clip = max_grad_norm > 0 ? float(std::min(1.0, max_grad_norm / (std::sqrt(sumsq) + 1e-6))) : 1.0f;
  const float scale = hp.grad_scale * clip;
  for (size_t i = 0; i < w.size(); ++i) {
    const double g = double(grad[i]) * scale;
    m[i] = hp.beta1 * m[i] + (1 - double(hp.beta1)) * g;
    v[i] = hp.beta2 * v[i] + (1 - double(hp.beta2)) * g * g;
    const double mhat = m[i] / (1 - std::pow(double(hp.beta1), double(hp.step)));
    const double vhat = v[i] / (1 - std::pow(double(hp.beta2), double(hp.step)));
    const double wd = i < decayed ? hp.weight_decay : 0.0;
    w[i] -= hp.lr * (mhat / (std::sqrt(vhat) + hp.eps) + wd * w[i]);
  }
}

std::vector<float> as_float(const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); }

// The sum of squares of `grad`, computed by the backend into a (1) f64 tensor of the fixture.
Tensor sumsq_of(BackendFixture& f, Tensor grad) {
  Tensor s = f.pool->take(DType::F64, {1}, "grad_sumsq");
  f.backend->sum_squares(s, grad);
  return s;
}

}  // namespace

TEST_CASE("adamw_update: first step by hand") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  AdamWParams hp;
  hp.lr = 0.1f;
  hp.beta1 = 0.5f;  // binary-exact betas keep the hand values exact
  hp.beta2 = 0.75f;
  hp.eps = 0;
  hp.weight_decay = 0.5f;
  hp.step = 1;
  hp.grad_scale = 0.25f;
  // g = 8 * 0.25 = 2 and -1;  m = 0.5 g, v = 0.25 g^2;  mhat = g, vhat = g^2: update = sign(g).
  // decayed: w = 1 - 0.1 (1 + 0.5 * 1) = 0.85;   not decayed: w = -2 - 0.1 (-1) = -1.9
  Tensor w = f.upload({1.0f, -2.0f}, DType::F64, {2}, "w"), g = f.upload({8.0f, -4.0f}, DType::F64, {2}, "g");
  Tensor m = f.upload({0, 0}, DType::F64, {2}, "m"), v = f.upload({0, 0}, DType::F64, {2}, "v");
  f.backend->adamw_update(w, Tensor{}, g, m, v, 1, sumsq_of(f, g), 0.0f, hp, 0);
  check_close(f64_values(w), {0.85f, -1.9f}, 1e-6, 1e-6, "w");
  check_close(f64_values(m), {1.0f, -0.5f}, 0, 0, "m");
  check_close(f64_values(v), {1.0f, 0.25f}, 0, 0, "v");
  // clipped to norm 4.4721/2: every gradient halved (80 = 8^2 + 4^2)
  Tensor w2 = f.upload({1.0f, -2.0f}, DType::F64, {2}, "w2"), m2 = f.upload({0, 0}, DType::F64, {2}, "m2"),
         v2 = f.upload({0, 0}, DType::F64, {2}, "v2");
  f.backend->adamw_update(w2, Tensor{}, g, m2, v2, 1, sumsq_of(f, g), float(std::sqrt(80.0) / 2), hp, 0);
  check_close(f64_values(m2), {0.5f, -0.25f}, 1e-6, 1e-6, "m clipped");
}

TEST_CASE("adamw_update: three steps match the double loop (decay on the leading part, clipping), f32 and f64") {
  const std::vector<float> w0 = randn(n, 1), m0 = randn(n, 2, 0.01f);
  std::vector<float> v0 = randn(n, 3, 1e-3f);
  for (float& x : v0) x = x * x;  // v >= 0
  const size_t decayed = 600;
  for (Precision p : {Precision::F32, Precision::F64}) {
    BackendFixture f(DeviceKind::CPU, p);
    const DType dt = f.backend->grad_dtype();
    CAPTURE(dtype_name(dt));
    Tensor w = f.upload(w0, dt, {n}, "w"), m = f.upload(m0, dt, {n}, "m"), v = f.upload(v0, dt, {n}, "v");
    Tensor g = f.pool->take(dt, {n}, "g");
    std::vector<double> w_ref(w0.begin(), w0.end()), m_ref(m0.begin(), m0.end()), v_ref(v0.begin(), v0.end());
    for (int64_t step = 3; step <= 5; ++step) {
      const std::vector<float> grad = randn(n, 10 + uint64_t(step));
      const float max_norm = step == 4 ? 5.0f : 0.0f;  // the norm is ~sqrt(1007): step 4 clips
      f.backend->from_host(g, grad);
      f.backend->adamw_update(w, Tensor{}, g, m, v, int64_t(decayed), sumsq_of(f, g), max_norm, sample_params(step), 0);
      adamw_reference(w_ref, m_ref, v_ref, grad, sample_params(step), decayed, max_norm);
    }
    // f64 runs the same double math; f32 stores w, m, v in f32 between steps (6e-8 relative each),
    // and an update of size lr ~ 3e-3 moves w by far more than that.
    const double tol = p == Precision::F64 ? 1e-7 : 1e-6;
    check_close(f.backend->to_host(w), as_float(w_ref), tol, tol, "w");
    check_close(f.backend->to_host(m), as_float(m_ref), tol * 1e-2, tol, "m");
    check_close(f.backend->to_host(v), as_float(v_ref), tol * 1e-4, tol, "v");
  }
}

TEST_CASE("adamw_update: a non-finite gradient norm changes nothing") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const std::vector<float> w0 = randn(n, 5);
  std::vector<float> grad = randn(n, 6);
  grad[17] = std::nanf("");
  Tensor w = f.upload(w0, DType::F32, {n}, "w"), g = f.upload(grad, DType::F32, {n}, "g");
  Tensor m = f.upload(std::vector<float>(n, 0.0f), DType::F32, {n}, "m"), v = f.upload(std::vector<float>(n, 0.0f), DType::F32, {n}, "v");
  f.backend->adamw_update(w, Tensor{}, g, m, v, n, sumsq_of(f, g), 1.0f, sample_params(1), 0);
  CHECK(f.backend->to_host(w) == w0);
  CHECK(f.backend->to_host(m) == std::vector<float>(n, 0.0f));
}

TEST_CASE("sum_squares: the double sum, independent of the thread count") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const int64_t big = 600011;  // several chunks and a ragged tail; above worth_threads' threshold
  const std::vector<float> x_h = randn(big, 21);
  Tensor x = f.upload(x_h, DType::F32, {big}, "x");
  double ref = 0;
  for (float e : x_h) ref += double(e) * e;
  auto sum = [&](Tensor t) { return f.backend->to_host_f64(sumsq_of(f, t))[0]; };
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = sum(x);
  omp_set_num_threads(3);
  const double three = sum(x);
  omp_set_num_threads(threads);
  CHECK(one == three);  // bit-identical
  CHECK(std::fabs(one - ref) <= 1e-12 * ref);  // only the summation order differs
  CHECK(sum(f.upload({3, -4}, DType::F32, {2}, "pair")) == 25.0);
}

TEST_CASE("adamw rejects bad inputs, naming the argument") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Tensor w = f.upload(randn(n, 31), DType::F32, {n}, "w"), g = f.upload(randn(n, 32), DType::F32, {n}, "g");
  Tensor m = f.upload(randn(n, 33), DType::F32, {n}, "m"), v = f.upload(randn(n, 34), DType::F32, {n}, "v");
  Tensor g64 = f.pool->take(DType::F64, {n}, "g64"), v_short = f.pool->take(DType::F32, {n - 1}, "v_short");
  const Tensor s = sumsq_of(f, g);
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g64, m, v, n, s, 0.0f, AdamWParams{}, 0),
                       doctest::Contains("'grad'"), Error);
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g, m, v_short, n, s, 0.0f, AdamWParams{}, 0),
                       doctest::Contains("'v'"), Error);
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, w, g, m, v, n, s, 0.0f, AdamWParams{}, 0),
                       doctest::Contains("no master copy"), Error);
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g, m, v, n + 1, s, 0.0f, AdamWParams{}, 0),
                       doctest::Contains("decayed"), Error);
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g, m, v, n, g, 0.0f, AdamWParams{}, 0),
                       doctest::Contains("'grad_sumsq'"), Error);
  AdamWParams step0;
  step0.step = 0;
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g, m, v, n, s, 0.0f, step0, 0),
                       doctest::Contains("step counts from 1"), Error);
  CHECK_THROWS_WITH_AS(f.backend->sum_squares(s, g64), doctest::Contains("'x'"), Error);
}

TEST_CASE("adamw: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const int64_t nb = 100003, decayed = 70000;
  // The CUDA master starts from the bf16 parameter value, as after loading bf16 weights.
  const std::vector<float> w0 = bf16_rounded(randn(nb, 41)), grad = randn(nb, 42), m0 = randn(nb, 43, 0.01f);
  std::vector<float> v0 = randn(nb, 44, 1e-2f);
  for (float& x : v0) x = x * x;
  const AdamWParams hp = sample_params(7);
  const float max_norm = 100.0f;  // the norm is ~316: clipped

  Backend& gb = *gpu->backend;
  Tensor gw = gpu->upload(w0, DType::BF16, {nb}, "w"), gmaster = gpu->upload(w0, DType::F32, {nb}, "master");
  Tensor gg = gpu->upload(grad, DType::F32, {nb}, "g"), gm = gpu->upload(m0, DType::F32, {nb}, "m");
  Tensor gv = gpu->upload(v0, DType::F32, {nb}, "v");
  const Tensor gs = sumsq_of(*gpu, gg);
  reset_cuda_counters();
  gb.adamw_update(gw, gmaster, gg, gm, gv, decayed, gs, max_norm, hp, 1234);
  CHECK(cuda_counters().launches == 1);  // one pass, the clipping read on the device
  CHECK(cuda_counters().syncs == 0);
  Tensor cw = cpu.upload(w0, DType::F32, {nb}, "w"), cg = cpu.upload(grad, DType::F32, {nb}, "g");
  Tensor cm = cpu.upload(m0, DType::F32, {nb}, "m"), cv = cpu.upload(v0, DType::F32, {nb}, "v");
  const Tensor cs = sumsq_of(cpu, cg);
  cpu.backend->adamw_update(cw, Tensor{}, cg, cm, cv, decayed, cs, max_norm, hp, 1234);

  // f32 master, m, v: the same f32 math up to operation order.
  const std::vector<float> w_cpu = cpu.backend->to_host(cw);
  check_close(gb.to_host(gmaster), w_cpu, 1e-6, 1e-5, "master");
  check_close(gb.to_host(gm), cpu.backend->to_host(cm), 1e-7, 1e-5, "m");
  check_close(gb.to_host(gv), cpu.backend->to_host(cv), 1e-9, 1e-5, "v");
  // bf16 param: stochastic rounding of the master lands on a neighbour, within 2^-7 relative.
  const std::vector<float> w_gpu = gb.to_host(gw);
  CHECK(rel_l2(w_gpu, w_cpu) < 2e-2);
  check_close(w_gpu, w_cpu, 1e-30, 1.0 / 128, "bf16 param");
  const double s_gpu = gb.to_host_f64(gs)[0], s_cpu = cpu.backend->to_host_f64(cs)[0];
  CHECK(std::fabs(s_gpu - s_cpu) <= 1e-12 * s_cpu);
}
