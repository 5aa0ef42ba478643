// RoPE (rotate-half layout) on the packed qkv rows: forward against the formula evaluated here in
// double, the relative-position property, v heads untouched, backward by finite differences, and
// CUDA against CPU.
#include <cmath>
#include "helpers.h"

using namespace ppo;
using namespace ppo::test;

namespace {

using Shape = AttentionShape;

// The rotation written out from backend.h, in double: for each q/k head and i < HS/2,
// f = pos theta^(-2i/HS), (x_i, x_{i+HS/2}) <- (x_i cos f - x_{i+HS/2} sin f, x_{i+HS/2} cos f + x_i sin f).
std::vector<double> rope_reference(std::vector<float> x, const std::vector<int32_t>& pos, const Shape& s, double theta) {
  std::vector<double> y(x.begin(), x.end());
  const int half = s.HS / 2;
  for (int64_t n = 0; n < s.B * s.T; ++n)
    for (int h = 0; h < s.NH + s.NKV; ++h)
      for (int i = 0; i < half; ++i) {
        const double f = pos[size_t(n)] / std::pow(theta, 2.0 * i / s.HS);
        const size_t a = size_t(n * s.width() + h * s.HS + i), b = a + size_t(half);
        y[a] = x[a] * std::cos(f) - x[b] * std::sin(f);
        y[b] = x[b] * std::cos(f) + x[a] * std::sin(f);
      }
  return y;
}

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

}  // namespace

TEST_CASE("rope_forward matches the rotate-half formula; v heads untouched") {
  for (Shape s : {Shape{2, 7, 4, 2, 8}, Shape{1, 5, 3, 3, 6}}) {
    for (float theta : {10000.0f, 1000000.0f}) {
      CAPTURE(s.HS);
      CAPTURE(theta);
      BackendFixture fx(DeviceKind::CPU, Precision::F32);
      const auto x = randn(size_t(s.qkv_numel()), 11);
      const auto pos = randint(size_t(s.B * s.T), 12, 0, 4000);
      Tensor qkv = fx.upload(x, DType::F32, {s.B, s.T, s.width()}, "qkv");
      Tensor p = fx.upload_ids(pos, {s.B, s.T}, "pos");
      fx.backend->rope_forward(qkv, p, s.NH, s.NKV, s.HS, theta);
      const auto got = fx.backend->to_host(qkv);
      // f32 storage: |error| <= a few ulp of |x| ~ 1e-6 for unit-scale inputs.
      check_close(got, to_float(rope_reference(x, pos, s, theta)), 2e-6, 2e-6, "rope_forward");
      for (int64_t n = 0; n < s.B * s.T; ++n)
        for (int64_t i = int64_t(s.NH + s.NKV) * s.HS; i < s.width(); ++i)
          REQUIRE(got[size_t(n * s.width() + i)] == x[size_t(n * s.width() + i)]);
    }
  }
}

TEST_CASE("rope: q.k depends only on the position difference") {
  // <R(m) q, R(n) k> == <R(m+d) q, R(n+d) k>: a property of the rotation, independent of the formula above.
  const Shape s{1, 2, 1, 1, 8};  // row 0 holds the query's position, row 1 the key's
  BackendFixture fx(DeviceKind::CPU, Precision::F64);
  const auto x = randn(size_t(s.qkv_numel()), 21);
  auto qk = [&](int32_t m, int32_t n) {
    Tensor qkv = fx.upload(x, DType::F64, {s.B, s.T, s.width()}, "qkv");
    fx.backend->rope_forward(qkv, fx.upload_ids({m, n}, {1, 2}, "pos"), s.NH, s.NKV, s.HS, 10000.0f);
    const double* d = qkv.ptr<double>();
    double dot = 0;
    for (int i = 0; i < s.HS; ++i) dot += d[i] * d[s.width() + s.HS + i];  // q at row 0 . k at row 1
    return dot;
  };
  CHECK(qk(3, 10) == doctest::Approx(qk(103, 110)).epsilon(1e-10));
  CHECK(qk(0, 57) == doctest::Approx(qk(900, 957)).epsilon(1e-10));
  CHECK(qk(3, 10) != doctest::Approx(qk(3, 11)).epsilon(1e-3));  // and it does depend on the difference
}

TEST_CASE("rope_backward matches float64 finite differences") {
  // L = sum(w * rope(x)); dL/dx = rope_backward(w). L is linear in x, so central differences are
  // exact up to rounding: eps = 1e-3 gives |error| ~ 1e-13 / 1e-3 = 1e-10; tolerance 1e-8.
  const Shape s{2, 3, 4, 2, 6};
  BackendFixture fx(DeviceKind::CPU, Precision::F64);
  const auto x = randn(size_t(s.qkv_numel()), 31);
  const auto w = randn(size_t(s.qkv_numel()), 32);
  const auto pos = randint(size_t(s.B * s.T), 33, 0, 50);
  Tensor p = fx.upload_ids(pos, {s.B, s.T}, "pos");
  Tensor xt = fx.upload(x, DType::F64, {s.B, s.T, s.width()}, "x");
  Tensor y = fx.pool->take(DType::F64, {s.B, s.T, s.width()}, "y");
  auto loss = [&]() {
    copy_tensor(y, xt);
    fx.backend->rope_forward(y, p, s.NH, s.NKV, s.HS, 10000.0f);
    double l = 0;
    for (int64_t i = 0; i < s.qkv_numel(); ++i) l += w[size_t(i)] * y.ptr<double>()[i];
    return l;
  };
  Tensor g = fx.upload(w, DType::F64, {s.B, s.T, s.width()}, "dqkv");
  fx.backend->rope_backward(g, p, s.NH, s.NKV, s.HS, 10000.0f);
  std::vector<float> got(size_t(s.qkv_numel())), want(size_t(s.qkv_numel()));
  const double eps = 1e-3;
  for (int64_t i = 0; i < s.qkv_numel(); ++i) {
    double* xi = xt.ptr<double>() + i;
    const double x0 = *xi;
    *xi = x0 + eps;
    const double lp = loss();
    *xi = x0 - eps;
    const double lm = loss();
    *xi = x0;
    want[size_t(i)] = float((lp - lm) / (2 * eps));
    got[size_t(i)] = float(g.ptr<double>()[i]);
  }
  check_close(got, want, 1e-6, 1e-6, "rope_backward vs finite differences");  // float() storage of the comparison
}

TEST_CASE("rope CUDA vs CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  const Shape s{2, 7, 4, 2, 64};
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const auto x = randn(size_t(s.qkv_numel()), 41);
  const auto pos = randint(size_t(s.B * s.T), 42, 0, 2000);
  Tensor qc = cpu.upload(x, DType::F32, {s.B, s.T, s.width()}, "qkv");
  Tensor qg = gpu->upload(x, DType::BF16, {s.B, s.T, s.width()}, "qkv");
  cpu.backend->convert(qc, qg);  // the CPU gets the same bf16-rounded inputs
  Tensor pc = cpu.upload_ids(pos, {s.B, s.T}, "pos"), pg = gpu->upload_ids(pos, {s.B, s.T}, "pos");
  // in place: no poisoning possible; the comparison covers every element
  cpu.backend->rope_forward(qc, pc, s.NH, s.NKV, s.HS, 10000.0f);
  gpu->backend->rope_forward(qg, pg, s.NH, s.NKV, s.HS, 10000.0f);
  CHECK(rel_l2(gpu->backend->to_host(qg), cpu.backend->to_host(qc)) < 2e-2);
  cpu.backend->rope_backward(qc, pc, s.NH, s.NKV, s.HS, 10000.0f);
  gpu->backend->rope_backward(qg, pg, s.NH, s.NKV, s.HS, 10000.0f);
  CHECK(rel_l2(gpu->backend->to_host(qg), cpu.backend->to_host(qc)) < 2e-2);
}
