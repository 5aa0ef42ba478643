// Memory ops: copy_columns on the CPU by hand; the CUDA memory helpers (fill, convert, copy_columns)
// against the CPU backend on the same inputs.
// These are exact operations (bf16 rounding is nearest-even on both sides), so the comparisons
// are exact: atol = rtol = 0. Without a GPU every case skips with one line.
#include <cstring>

#include "helpers.h"

using namespace ppo;

namespace {

// Random normals plus values that sit exactly halfway between two bf16 numbers (low 16 bits
// 0x8000), so round-to-nearest-even is exercised in both directions, and a few large/small ones.
std::vector<float> awkward_values(size_t n, uint64_t seed) {
  std::vector<float> v = test::randn(n, seed, 3.0f);
  for (size_t i = 0; i < n; i += 5) {
    uint32_t u;
    std::memcpy(&u, &v[i], 4);
    u = (u & 0xffff0000u) | 0x8000u;  // a tie: even or odd kept mantissa depending on bit 16
    std::memcpy(&v[i], &u, 4);
  }
  if (n > 3) {
    v[1] = 1.0e38f;   // near the top of the bf16 range
    v[2] = -1.0e-40f; // subnormal
    v[3] = 65504.0f;
  }
  return v;
}

// The CPU reference side: these ops need no scratch region.
struct CpuSide {
  Backend backend{DeviceKind::CPU, Precision::F32};
  test::Pool pool{DeviceKind::CPU, size_t(8) << 20};
  Tensor upload(const std::vector<float>& v, DType dtype, std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool.take(dtype, dims, name);
    backend.from_host(t, v);
    return t;
  }
};

}  // namespace

TEST_CASE("cuda fill matches the cpu for every dtype") {
  auto gpu = test::cuda_backend_or_skip();
  if (!gpu) return;
  CpuSide cpu;
  const int64_t n = 1037;  // odd: no vector-width multiple
  for (const float value : {1.37f, -2.5e-3f, 1.0e38f}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
      Tensor g = gpu->poisoned(dt, {n}, "gpu fill");
      Tensor c = cpu.pool.take(dt, {n}, "cpu fill");
      gpu->backend->fill(g, value);
      cpu.backend.fill(c, value);
      test::check_close(gpu->backend->to_host(g), cpu.backend.to_host(c), 0, 0,
                        std::string("fill ") + dtype_name(dt));
    }
  }
  Tensor g = gpu->pool->take(DType::I32, {n}, "gpu ids");
  gpu->backend->fill(g, 7.0f);
  const std::vector<int32_t> ids = gpu->backend->to_host_ids(g);
  for (size_t i = 0; i < ids.size(); ++i) REQUIRE_MESSAGE(ids[i] == 7, "fill i32: index ", i, " holds ", ids[i]);
}

TEST_CASE("cuda convert between f32, bf16 and f64 matches the cpu") {
  auto gpu = test::cuda_backend_or_skip();
  if (!gpu) return;
  CpuSide cpu;
  const int64_t n = 2 * 1000 + 3;
  const std::vector<float> values = awkward_values(size_t(n), 11);
  const DType dtypes[] = {DType::F32, DType::BF16, DType::F64};
  for (DType src_dt : dtypes) {
    // The same source values on both devices (uploads round to src_dt the same way on both).
    Tensor gsrc = gpu->upload(values, src_dt, {n}, "gpu src");
    Tensor csrc = cpu.upload(values, src_dt, {n}, "cpu src");
    for (DType dst_dt : dtypes) {
      Tensor gdst = gpu->poisoned(dst_dt, {n}, "gpu dst");
      Tensor cdst = cpu.pool.take(dst_dt, {n}, "cpu dst");
      gpu->backend->convert(gdst, gsrc);  // device to device: the CUDA kernel (or a copy for equal dtypes)
      cpu.backend.convert(cdst, csrc);
      test::check_close(gpu->backend->to_host(gdst), cpu.backend.to_host(cdst), 0, 0,
                        std::string("convert ") + dtype_name(src_dt) + " -> " + dtype_name(dst_dt));
    }
  }
}

TEST_CASE("cuda convert rounds f32 to bf16 to nearest even") {
  auto gpu = test::cuda_backend_or_skip();
  if (!gpu) return;
  // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even gives 1.0;
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: gives 1 + 2^-6.
  const std::vector<float> values = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -(1.0f + 0x1p-8f), 1.0f + 0x1p-8f + 0x1p-20f};
  const std::vector<float> want = {1.0f, 1.0f + 0x1p-6f, -1.0f, 1.0f + 0x1p-7f};
  const int64_t n = int64_t(values.size());
  Tensor src = gpu->upload(values, DType::F32, {n}, "src");
  Tensor dst = gpu->poisoned(DType::BF16, {n}, "dst");
  gpu->backend->convert(dst, src);
  test::check_close(gpu->backend->to_host(dst), want, 0, 0, "bf16 ties to even");
}

TEST_CASE("copy_columns (cpu): a window of columns each way; other columns kept; errors name the tensors") {
  CpuSide cpu;
  // (B=2, T=4, C=2) -> columns 1..2 into (2, 3, 2) at column 1
  std::vector<float> src(16);
  for (size_t i = 0; i < src.size(); ++i) src[i] = float(i);
  Tensor s = cpu.upload(src, DType::F32, {2, 4, 2}, "src");
  Tensor d = cpu.upload(std::vector<float>(12, -1.0f), DType::F32, {2, 3, 2}, "dst");
  cpu.backend.copy_columns(d, 1, s, 1, 2);
  CHECK(cpu.backend.to_host(d) == std::vector<float>{-1, -1, 2, 3, 4, 5, -1, -1, 10, 11, 12, 13});
  Tensor ids = cpu.pool.take(DType::I32, {2, 4}, "ids"), first = cpu.pool.take(DType::I32, {2, 1}, "first");
  cpu.backend.from_host_ids(ids, {1, 2, 3, 4, 5, 6, 7, 8});
  cpu.backend.copy_columns(first, 0, ids, 3, 1);
  CHECK(cpu.backend.to_host_ids(first) == std::vector<int32_t>{4, 8});
  CHECK_THROWS_WITH_AS(cpu.backend.copy_columns(d, 2, s, 0, 2), doctest::Contains("of 3"), Error);
  CHECK_THROWS_WITH_AS(cpu.backend.copy_columns(first, 0, s, 0, 1), doctest::Contains("dtype"), Error);
  CHECK_THROWS_WITH_AS(cpu.backend.copy_columns(d, 0, ids, 0, 1), doctest::Contains("dtype"), Error);
}

TEST_CASE("cuda copy_columns matches the cpu") {
  auto gpu = test::cuda_backend_or_skip();
  if (!gpu) return;
  CpuSide cpu;
  const int64_t B = 3, T = 11, W = 5, start = 4, C = 6;
  const std::vector<float> values = test::randn(size_t(B * T), 21);
  Tensor gsrc = gpu->upload(values, DType::F32, {B, T}, "gpu src");
  Tensor csrc = cpu.upload(values, DType::F32, {B, T}, "cpu src");
  Tensor gdst = gpu->poisoned(DType::F32, {B, W}, "gpu dst");
  Tensor cdst = cpu.pool.take(DType::F32, {B, W}, "cpu dst");
  gpu->backend->copy_columns(gdst, 0, gsrc, start, W);
  cpu.backend.copy_columns(cdst, 0, csrc, start, W);
  test::check_close(gpu->backend->to_host(gdst), cpu.backend.to_host(cdst), 0, 0, "copy_columns f32 gather");

  const std::vector<int32_t> ids = test::randint(size_t(B * T), 22, 0, 1000);
  Tensor gids = gpu->upload_ids(ids, {B, T}, "gpu ids");
  Tensor gids_dst = gpu->pool->take(DType::I32, {B, W}, "gpu ids dst");
  gpu->backend->copy_columns(gids_dst, 0, gids, start, W);
  const std::vector<int32_t> got = gpu->backend->to_host_ids(gids_dst);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t w = 0; w < W; ++w)
      REQUIRE_MESSAGE(got[size_t(b * W + w)] == ids[size_t(b * T + start + w)], "copy_columns i32 at (", b, ",", w, ")");

  // scatter bf16 (B,W,C) into (B,T,C) at column `start`: the other columns keep their values
  const std::vector<float> window = test::randn(size_t(B * W * C), 23), base = test::randn(size_t(B * T * C), 24);
  Tensor gwin = gpu->upload(window, DType::BF16, {B, W, C}, "gpu window");
  Tensor gbase = gpu->upload(base, DType::BF16, {B, T, C}, "gpu base");
  gpu->backend->copy_columns(gbase, start, gwin, 0, W);
  const std::vector<float> merged = gpu->backend->to_host(gbase), win = gpu->backend->to_host(gwin);
  Tensor kept = gpu->upload(base, DType::BF16, {B, T, C}, "gpu base again");
  const std::vector<float> before = gpu->backend->to_host(kept);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const bool inside = t >= start && t < start + W;
        const float want = inside ? win[size_t((b * W + t - start) * C + c)] : before[size_t((b * T + t) * C + c)];
        REQUIRE_MESSAGE(merged[size_t((b * T + t) * C + c)] == want, "copy_columns bf16 at (", b, ",", t, ",", c, ")");
      }
}

TEST_CASE("gather_rows: rows picked in order into a column range, the other columns kept; CUDA matches CPU") {
  CpuSide cpu;
  // src (3,2) i32, rows {2, 0, 2} into dst (3,4) at column 1
  Tensor src = cpu.pool.take(DType::I32, {3, 2}, "src"), dst = cpu.pool.take(DType::I32, {3, 4}, "dst");
  Tensor rows = cpu.pool.take(DType::I32, {3}, "rows");
  cpu.backend.from_host_ids(src, {10, 11, 20, 21, 30, 31});
  cpu.backend.from_host_ids(dst, std::vector<int32_t>(12, -1));
  cpu.backend.from_host_ids(rows, {2, 0, 2});
  cpu.backend.gather_rows(dst, 1, src, rows);
  CHECK(cpu.backend.to_host_ids(dst) == std::vector<int32_t>{-1, 30, 31, -1, -1, 10, 11, -1, -1, 30, 31, -1});
  cpu.backend.from_host_ids(rows, {2, 3, 0});
  CHECK_THROWS_WITH_AS(cpu.backend.gather_rows(dst, 1, src, rows), doctest::Contains("row 3 in 'rows' outside [0,3)"),
                       Error);
  CHECK_THROWS_WITH_AS(cpu.backend.gather_rows(dst, 3, src, rows), doctest::Contains("columns [3,5)"), Error);

  auto gpu = test::cuda_backend_or_skip();
  if (!gpu) return;
  const int64_t B = 7, Ts = 5, n = 4, Td = 9;
  const std::vector<float> s_h = test::randn(size_t(B * Ts), 61), d0 = test::randn(size_t(n * Td), 62);
  const std::vector<int32_t> r_h = {6, 0, 3, 6};
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor cs = cpu.upload(s_h, dt == DType::BF16 ? DType::F32 : dt, {B, Ts}, "src");
    Tensor cd = cpu.upload(d0, dt == DType::BF16 ? DType::F32 : dt, {n, Td}, "dst");
    Tensor cr = cpu.pool.take(DType::I32, {n}, "rows");
    cpu.backend.from_host_ids(cr, r_h);
    cpu.backend.gather_rows(cd, 2, cs, cr);
    Tensor gs = gpu->upload(s_h, dt, {B, Ts}, "src"), gd = gpu->upload(d0, dt, {n, Td}, "dst");
    Tensor gr = gpu->upload_ids(r_h, {n}, "rows");
    gpu->backend->gather_rows(gd, 2, gs, gr);
    std::vector<float> want = cpu.backend.to_host(cd);
    if (dt == DType::BF16)
      for (float& v : want) v = f32_from_bf16(bf16_from_f32(v));
    test::check_close(gpu->backend->to_host(gd), want, 0, 0, std::string("gather_rows ") + dtype_name(dt));
  }
  Tensor gs = gpu->upload(s_h, DType::F32, {B, Ts}, "src"), gd = gpu->upload(d0, DType::F32, {n, Td}, "dst");
  gpu->backend->gather_rows(gd, 2, gs, gpu->upload_ids({0, 9, 1, 2}, {n}, "rows"));
  CHECK_THROWS_WITH_AS(gpu->backend->synchronize(),
                       doctest::Contains("gather_rows: row 9 in 'rows' (row 1) is outside [0,7)"), Error);
}
