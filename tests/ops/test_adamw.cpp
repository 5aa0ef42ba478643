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

// backend.h's AdamW in double, in place.
void adamw_reference(std::vector<double>& w, std::vector<double>& m, std::vector<double>& v,
                     const std::vector<float>& grad, const AdamWParams& hp) {
  for (size_t i = 0; i < w.size(); ++i) {
    const double g = double(grad[i]) * hp.grad_scale;
    m[i] = hp.beta1 * m[i] + (1 - double(hp.beta1)) * g;
    v[i] = hp.beta2 * v[i] + (1 - double(hp.beta2)) * g * g;
    const double mhat = m[i] / (1 - std::pow(double(hp.beta1), double(hp.step)));
    const double vhat = v[i] / (1 - std::pow(double(hp.beta2), double(hp.step)));
    w[i] -= hp.lr * (mhat / (std::sqrt(vhat) + hp.eps) + hp.weight_decay * w[i]);
  }
}

std::vector<float> as_float(const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); }

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
  // w = 1 - 0.1 (1 + 0.5 * 1) = 0.85;   w = -2 - 0.1 (-1 + 0.5 * -2) = -1.8
  Tensor w = f.upload({1.0f, -2.0f}, DType::F64, {2}, "w"), g = f.upload({8.0f, -4.0f}, DType::F64, {2}, "g");
  Tensor m = f.upload({0, 0}, DType::F64, {2}, "m"), v = f.upload({0, 0}, DType::F64, {2}, "v");
  f.backend->adamw_update(w, Tensor{}, g, m, v, hp, 0, 0);
  check_close(f64_values(w), {0.85f, -1.8f}, 1e-6, 1e-6, "w");
  check_close(f64_values(m), {1.0f, -0.5f}, 0, 0, "m");
  check_close(f64_values(v), {1.0f, 0.25f}, 0, 0, "v");
}

TEST_CASE("adamw_update: three steps match the double loop, f32 and f64") {
  const std::vector<float> w0 = randn(n, 1), m0 = randn(n, 2, 0.01f);
  std::vector<float> v0 = randn(n, 3, 1e-3f);
  for (float& x : v0) x = x * x;  // v >= 0
  for (Precision p : {Precision::F32, Precision::F64}) {
    BackendFixture f(DeviceKind::CPU, p);
    const DType dt = f.backend->grad_dtype();
    CAPTURE(dtype_name(dt));
    Tensor w = f.upload(w0, dt, {n}, "w"), m = f.upload(m0, dt, {n}, "m"), v = f.upload(v0, dt, {n}, "v");
    Tensor g = f.pool->take(dt, {n}, "g");
    std::vector<double> w_ref(w0.begin(), w0.end()), m_ref(m0.begin(), m0.end()), v_ref(v0.begin(), v0.end());
    for (int64_t step = 3; step <= 5; ++step) {
      const std::vector<float> grad = randn(n, 10 + uint64_t(step));
      f.backend->from_host(g, grad);
      f.backend->adamw_update(w, Tensor{}, g, m, v, sample_params(step), 0, 0);
      adamw_reference(w_ref, m_ref, v_ref, grad, sample_params(step));
    }
    // f64 runs the same double math; f32 stores w, m, v in f32 between steps (6e-8 relative each),
    // and an update of size lr ~ 3e-3 moves w by far more than that.
    const double tol = p == Precision::F64 ? 1e-7 : 1e-6;
    check_close(f.backend->to_host(w), as_float(w_ref), tol, tol, "w");
    check_close(f.backend->to_host(m), as_float(m_ref), tol * 1e-2, tol, "m");
    check_close(f.backend->to_host(v), as_float(v_ref), tol * 1e-4, tol, "v");
  }
}

TEST_CASE("sum_squares: the double sum, independent of the thread count") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const int64_t big = 600011;  // several chunks and a ragged tail; above worth_threads' threshold
  const std::vector<float> x_h = randn(big, 21);
  Tensor x = f.upload(x_h, DType::F32, {big}, "x");
  double ref = 0;
  for (float e : x_h) ref += double(e) * e;
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = f.backend->sum_squares(x);
  omp_set_num_threads(3);
  const double three = f.backend->sum_squares(x);
  omp_set_num_threads(threads);
  CHECK(one == three);  // bit-identical
  CHECK(std::fabs(one - ref) <= 1e-12 * ref);  // only the summation order differs
  CHECK(f.backend->sum_squares(f.upload({3, -4}, DType::F32, {2}, "pair")) == 25.0);
}

TEST_CASE("adamw rejects bad inputs, naming the argument") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Tensor w = f.upload(randn(n, 31), DType::F32, {n}, "w"), g = f.upload(randn(n, 32), DType::F32, {n}, "g");
  Tensor m = f.upload(randn(n, 33), DType::F32, {n}, "m"), v = f.upload(randn(n, 34), DType::F32, {n}, "v");
  Tensor g64 = f.pool->take(DType::F64, {n}, "g64"), v_short = f.pool->take(DType::F32, {n - 1}, "v_short");
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g64, m, v, AdamWParams{}, 0, 0), doctest::Contains("'grad'"),
                       Error);
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g, m, v_short, AdamWParams{}, 0, 0),
                       doctest::Contains("'v'"), Error);
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, w, g, m, v, AdamWParams{}, 0, 0), doctest::Contains("no master copy"),
                       Error);
  AdamWParams step0;
  step0.step = 0;
  CHECK_THROWS_WITH_AS(f.backend->adamw_update(w, Tensor{}, g, m, v, step0, 0, 0), doctest::Contains("step counts from 1"),
                       Error);
  CHECK_THROWS_WITH_AS(f.backend->sum_squares(g64), doctest::Contains("'grad'"), Error);
}

TEST_CASE("adamw: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const int64_t nb = 100003;
  // The CUDA master starts from the bf16 parameter value, as after loading bf16 weights.
  const std::vector<float> w0 = bf16_rounded(randn(nb, 41)), grad = randn(nb, 42), m0 = randn(nb, 43, 0.01f);
  std::vector<float> v0 = randn(nb, 44, 1e-2f);
  for (float& x : v0) x = x * x;
  const AdamWParams hp = sample_params(7);

  Backend& gb = *gpu->backend;
  Tensor gw = gpu->upload(w0, DType::BF16, {nb}, "w"), gmaster = gpu->upload(w0, DType::F32, {nb}, "master");
  Tensor gg = gpu->upload(grad, DType::F32, {nb}, "g"), gm = gpu->upload(m0, DType::F32, {nb}, "m");
  Tensor gv = gpu->upload(v0, DType::F32, {nb}, "v");
  gb.adamw_update(gw, gmaster, gg, gm, gv, hp, 1234, 5);
  Tensor cw = cpu.upload(w0, DType::F32, {nb}, "w"), cg = cpu.upload(grad, DType::F32, {nb}, "g");
  Tensor cm = cpu.upload(m0, DType::F32, {nb}, "m"), cv = cpu.upload(v0, DType::F32, {nb}, "v");
  cpu.backend->adamw_update(cw, Tensor{}, cg, cm, cv, hp, 1234, 5);

  // f32 master, m, v: the same f32 math up to operation order.
  const std::vector<float> w_cpu = cpu.backend->to_host(cw);
  check_close(gb.to_host(gmaster), w_cpu, 1e-6, 1e-5, "master");
  check_close(gb.to_host(gm), cpu.backend->to_host(cm), 1e-7, 1e-5, "m");
  check_close(gb.to_host(gv), cpu.backend->to_host(cv), 1e-9, 1e-5, "v");
  // bf16 param: stochastic rounding of the master lands on a neighbour, within 2^-7 relative.
  const std::vector<float> w_gpu = gb.to_host(gw);
  CHECK(rel_l2(w_gpu, w_cpu) < 2e-2);
  check_close(w_gpu, w_cpu, 1e-30, 1.0 / 128, "bf16 param");
  CHECK(std::fabs(gb.sum_squares(gg) - cpu.backend->sum_squares(cg)) <= 1e-6 * cpu.backend->sum_squares(cg));
}
