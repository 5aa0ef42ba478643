// GELU (tanh) and SwiGLU forward and backward: against the formulas in double, finite differences
// in f64, input validation, and CUDA against CPU.
#include "helpers.h"

#include <cmath>
#include <limits>
#include "engine/dtype.h"
#include "fd_check.h"
#include "kernels/cpu/vec_math.h"

using namespace ppo;
using namespace ppo::test;

namespace {

constexpr int64_t N = 7, F = 13;

double gelu(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
double silu(double g) { return g / (1 + std::exp(-g)); }

}  // namespace

TEST_CASE("vec_math: float exp and tanh against the double library functions; limits, -inf and NaN") {
  // exp: relative error < 2e-7 over the normal range; tanh: absolute error < 2e-7.
  double exp_err = 0, tanh_err = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.0f + 175.0f * float(i) / 200000.0f;
    exp_err = std::max(exp_err, std::fabs(double(cpu::exp_of(x)) / std::exp(double(x)) - 1));
    const float u = -12.0f + 24.0f * float(i) / 200000.0f;
    tanh_err = std::max(tanh_err, std::fabs(double(cpu::tanh_of(u)) - std::tanh(double(u))));
  }
  CHECK(exp_err < 2e-7);
  CHECK(tanh_err < 2e-7);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(cpu::exp_of(-inf) == 0.0f);
  CHECK(cpu::exp_of(-100.0f) == 0.0f);
  CHECK(cpu::exp_of(0.0f) == 1.0f);
  CHECK(cpu::exp_of(100.0f) == inf);
  CHECK(std::isnan(cpu::exp_of(nan)));
  CHECK(cpu::tanh_of(50.0f) == 1.0f);
  CHECK(cpu::tanh_of(-50.0f) == -1.0f);
  CHECK(std::isnan(cpu::tanh_of(nan)));
}

TEST_CASE("gelu_forward and swiglu_forward match the formulas in double") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  // Wide inputs (sd 3) reach both tails, where tanh and exp saturate.
  const std::vector<float> x_h = randn(N * 2 * F, 1, 3.0f);
  Tensor inp = f.upload(x_h, DType::F32, {N, 2 * F}, "inp");

  Tensor g_out = f.poisoned(DType::F32, {N, 2 * F}, "gelu_out");
  f.backend->gelu_forward(g_out, inp);
  std::vector<float> g_ref(x_h.size());
  for (size_t i = 0; i < x_h.size(); ++i) g_ref[i] = float(gelu(x_h[i]));
  // f32 evaluation of tanh/exp: a few ulps of O(1..10) values.
  check_close(f.backend->to_host(g_out), g_ref, 1e-6, 1e-5, "gelu out");

  Tensor s_out = f.poisoned(DType::F32, {N, F}, "swiglu_out");
  f.backend->swiglu_forward(s_out, inp);
  std::vector<float> s_ref(size_t(N * F));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < F; ++j)
      s_ref[size_t(n * F + j)] = float(silu(x_h[size_t(n * 2 * F + j)]) * x_h[size_t(n * 2 * F + F + j)]);
  check_close(f.backend->to_host(s_out), s_ref, 1e-6, 1e-5, "swiglu out");
}

TEST_CASE("gelu_backward and swiglu_backward match finite differences in f64") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  Tensor inp = f.upload(randn(N * 2 * F, 11, 2.0f), DType::F64, {N, 2 * F}, "inp");
  // h = 1e-6 in f64: truncation O(h^2 |f'''|) ~ 1e-12 and rounding ~1e-16 |L| / h ~ 1e-9; the f32
  // view adds 6e-8 relative. Both grads are "=": the outputs are poisoned first.
  SUBCASE("gelu") {
    Tensor out = f.pool->take(DType::F64, {N, 2 * F}, "out");
    const std::vector<float> w = randn(N * 2 * F, 12);
    auto loss = [&] {
      f.backend->gelu_forward(out, inp);
      return weighted_sum(out, w);
    };
    Tensor dout = f.upload(w, DType::F64, {N, 2 * F}, "dout"), dinp = f.poisoned(DType::F64, {N, 2 * F}, "dinp");
    f.backend->gelu_backward(dinp, dout, inp);
    check_close(f64_values(dinp), central_diff(inp, loss), 1e-6, 1e-5, "gelu dinp");
  }
  SUBCASE("swiglu") {
    Tensor out = f.pool->take(DType::F64, {N, F}, "out");
    const std::vector<float> w = randn(N * F, 13);
    auto loss = [&] {
      f.backend->swiglu_forward(out, inp);
      return weighted_sum(out, w);
    };
    Tensor dout = f.upload(w, DType::F64, {N, F}, "dout"), dinp = f.poisoned(DType::F64, {N, 2 * F}, "dinp");
    f.backend->swiglu_backward(dinp, dout, inp);
    check_close(f64_values(dinp), central_diff(inp, loss), 1e-6, 1e-5, "swiglu dinp");
  }
}

TEST_CASE("activations reject bad inputs, naming the argument") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Tensor inp = f.upload(randn(N * 2 * F, 21), DType::F32, {N, 2 * F}, "inp");
  Tensor out64 = f.pool->take(DType::F64, {N, 2 * F}, "out64");
  CHECK_THROWS_WITH_AS(f.backend->gelu_forward(out64, inp), doctest::Contains("'out'"), Error);
  Tensor dout64 = f.pool->take(DType::F64, {N, 2 * F}, "dout64"), dinp = f.pool->take(DType::F32, {N, 2 * F}, "dinp");
  CHECK_THROWS_WITH_AS(f.backend->gelu_backward(dinp, dout64, inp), doctest::Contains("'dout'"), Error);
  Tensor wide_out = f.pool->take(DType::F32, {N, 2 * F}, "wide_out");  // swiglu halves the width
  CHECK_THROWS_WITH_AS(f.backend->swiglu_forward(wide_out, inp), doctest::Contains("'out'"), Error);
  Tensor odd = f.upload(randn(N * 5, 22), DType::F32, {N, 5}, "odd");
  CHECK_THROWS_WITH_AS(f.backend->swiglu_forward(wide_out, odd), doctest::Contains("is odd"), Error);
}

TEST_CASE("activations: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  constexpr int64_t Nb = 37, Fb = 301;  // odd sizes: no vector-width multiple
  const std::vector<float> x_h = bf16_rounded(randn(Nb * 2 * Fb, 31, 2.0f));
  const std::vector<float> dg_h = bf16_rounded(randn(Nb * 2 * Fb, 32)), ds_h = bf16_rounded(randn(Nb * Fb, 33));
  std::vector<float> r[2][4];  // [cuda, cpu][gelu out, gelu dinp, swiglu out, swiglu dinp]
  auto run = [&](auto* fx, std::vector<float>* res) {
    Backend& be = *fx->backend;
    const DType act = be.act_dtype();
    Tensor inp = fx->upload(x_h, act, {Nb, 2 * Fb}, "inp");
    Tensor g_out = fx->poisoned(act, {Nb, 2 * Fb}, "gelu_out"), g_dinp = fx->poisoned(act, {Nb, 2 * Fb}, "gelu_dinp");
    Tensor g_dout = fx->upload(dg_h, act, {Nb, 2 * Fb}, "gelu_dout");
    be.gelu_forward(g_out, inp);
    be.gelu_backward(g_dinp, g_dout, inp);
    Tensor s_out = fx->poisoned(act, {Nb, Fb}, "swiglu_out"), s_dinp = fx->poisoned(act, {Nb, 2 * Fb}, "swiglu_dinp");
    Tensor s_dout = fx->upload(ds_h, act, {Nb, Fb}, "swiglu_dout");
    be.swiglu_forward(s_out, inp);
    be.swiglu_backward(s_dinp, s_dout, inp);
    res[0] = be.to_host(g_out);
    res[1] = be.to_host(g_dinp);
    res[2] = be.to_host(s_out);
    res[3] = be.to_host(s_dinp);
  };
  run(gpu.get(), r[0]);
  run(&cpu, r[1]);
  const char* names[4] = {"gelu out", "gelu dinp", "swiglu out", "swiglu dinp"};
  for (int i = 0; i < 4; ++i) {
    CAPTURE(names[i]);
    CHECK(rel_l2(r[0][i], r[1][i]) < 2e-2);
  }
}
