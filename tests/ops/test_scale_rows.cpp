// Backend::scale_rows (x[b,t] *= row_scale[b]): the CPU reference against the plain loop in f32 and
// f64, shape errors naming the argument, CUDA against CPU (skips without a GPU).
#include "helpers.h"

using namespace ppo;
using namespace ppo::test;

namespace {

std::vector<float> scaled_by_loop(std::vector<float> x, const std::vector<float>& s, int64_t B, int64_t T) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) x[size_t(b * T + t)] *= s[size_t(b)];
  return x;
}

}  // namespace

TEST_CASE("scale_rows: CPU equals the loop (f32, f64)") {
  constexpr int64_t B = 5, T = 13;
  const std::vector<float> x = randn(B * T, 1), s = randn(B, 2);
  for (Precision p : {Precision::F32, Precision::F64}) {
    BackendFixture f(DeviceKind::CPU, p);
    const DType dt = f.backend->stat_dtype();
    Tensor xt = f.upload(x, dt, {B, T}, "x");
    f.backend->scale_rows(xt, f.upload(s, dt, {B}, "row_scale"));
    check_close(f.backend->to_host(xt), scaled_by_loop(x, s, B, T), 0, 1e-7, "scale_rows");
  }
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Tensor xt = f.upload(x, DType::F32, {B, T}, "x");
  CHECK_THROWS_WITH_AS(f.backend->scale_rows(xt, f.upload({1, 2, 3, 4}, DType::F32, {B - 1}, "short")),
                       doctest::Contains("'row_scale'"), Error);
  CHECK_THROWS_WITH_AS(f.backend->scale_rows(f.upload(x, DType::F32, {B * T}, "flat"), f.upload(s, DType::F32, {B}, "s")),
                       doctest::Contains("must be (B,T)"), Error);
}

TEST_CASE("scale_rows: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  constexpr int64_t B = 7, T = 301;  // rows longer than a block
  const std::vector<float> x = randn(B * T, 3), s = randn(B, 4);
  Tensor xt = gpu->upload(x, DType::F32, {B, T}, "x");
  gpu->backend->scale_rows(xt, gpu->upload(s, DType::F32, {B}, "row_scale"));
  check_close(gpu->backend->to_host(xt), scaled_by_loop(x, s, B, T), 0, 1e-7, "scale_rows cuda");
}
