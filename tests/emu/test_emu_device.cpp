// The emulated device itself (kernels/cuda/emu): each check it promises catches what it should, and
// the semantics it emulates (PTX shuffles, mma/ldmatrix fragments, cp.async, cuBLAS/cuBLASLt, the
// radix sort, the counters) match their specifications. Built only in emulated-device builds; the
// kernels below are device code compiled against the emulator's prelude.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/device_memory.h"
#include "engine/dtype.h"
#include "kernels/cuda/emu/internal.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/radix_sort.h"
#include "kernels/cuda/tensor_core.cuh"

using namespace ppo;

namespace {

// ---- helpers ------------------------------------------------------------------------------------

template <class T>
struct DeviceArray {
  T* p = nullptr;
  size_t n;
  explicit DeviceArray(size_t count) : n(count) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)) == cudaSuccess);
  }
  DeviceArray(const std::vector<T>& v) : DeviceArray(v.size()) {
    REQUIRE(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  ~DeviceArray() { cudaFree(p); }
  std::vector<T> host() const {
    std::vector<T> v(n);
    REQUIRE(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return v;
  }
};

// The message of the ppo::Error that `f` throws ("" when it returns).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs `f` with the device's thread order set, then restores the default.
void with_order(emu::Order order, uint64_t seed, const std::function<void()>& f) {
  emu::device().order = order;
  emu::device().shuffle_seed = seed;
  f();
  emu::device().order = emu::Order::Forward;
}

// ---- kernels ------------------------------------------------------------------------------------

// out[t] = smem[(t + 1) % n] after every thread wrote smem[t] = t + 1; the barrier is optional.
template <bool kBarrier>
__global__ void neighbour_kernel(int* out) {
  __shared__ int smem[64];
  const int t = threadIdx.x, n = blockDim.x;
  smem[t] = t + 1;
  if (kBarrier) __syncthreads();
  out[t] = smem[(t + 1) % n];
}

__global__ void two_barrier_sites_kernel(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void early_return_barrier_kernel(int* out, int n) {
  const int i = threadIdx.x;
  if (i >= n) return;
  __syncthreads();
  out[i] = 1;
}

__global__ void early_return_shuffle_kernel(float* out, int n) {
  const int i = threadIdx.x;
  if (i >= n) return;
  out[i] = __shfl_xor_sync(0xffffffffu, float(i), 1);
}

__global__ void lane_outside_mask_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, int(threadIdx.x), 0);  // lanes 16..31 are not in the mask
}

__global__ void differing_masks_kernel(int* out) {
  const unsigned mask = threadIdx.x == 3 ? 0x0000ffffu : 0xffffffffu;
  out[threadIdx.x] = __shfl_sync(mask, int(threadIdx.x), 0);
}

__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x < 16)
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  else
    __syncthreads();
}

enum class ShuffleKind : int { Idx, Up, Down, Xor };

// out[t] = the shuffle of value t + 100 over the whole warp.
__global__ void shuffle_kernel(int* out, ShuffleKind kind, int b, int width) {
  const int v = int(threadIdx.x) + 100;
  int r = 0;
  switch (kind) {
    case ShuffleKind::Idx:
      r = __shfl_sync(0xffffffffu, v, b, width);
      break;
    case ShuffleKind::Up:
      r = __shfl_up_sync(0xffffffffu, v, unsigned(b), width);
      break;
    case ShuffleKind::Down:
      r = __shfl_down_sync(0xffffffffu, v, unsigned(b), width);
      break;
    case ShuffleKind::Xor:
      r = __shfl_xor_sync(0xffffffffu, v, b, width);
      break;
  }
  out[threadIdx.x] = r;
}

__global__ void ballot_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;  // two disjoint halves
  out[threadIdx.x] = __ballot_sync(mask, lane % 3 == 0);
}

__global__ void read_dynamic_shared_kernel(uint32_t* out) {
  PPO_DYNAMIC_SHARED(uint32_t, smem);
  out[threadIdx.x] = smem[threadIdx.x];
}

__global__ void write_kernel(float* out) { out[threadIdx.x] = 1.0f; }

// Fragments of m16n8k16 from row-major A (16x16), B (16x8, k-major), C (16x8) by the PTX-ISA layouts,
// the product through the tensor-core function, D back to row-major.
__global__ void mma_kernel(float* d, const bf16* a, const bf16* b, const float* c) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto bits = [](bf16 x) { return uint32_t(x.bits); };
  uint32_t ra[4], rb0, rb1;
  float acc[4];
  for (int r = 0; r < 4; ++r) {  // register r holds A elements i = 2r, 2r + 1
    const int i0 = 2 * r, i1 = 2 * r + 1;
    const int row = g + 8 * ((i0 >> 1) & 1);
    ra[r] = bits(a[row * 16 + 2 * t + (i0 & 1) + 8 * (i0 >> 2)]) |
            (bits(a[row * 16 + 2 * t + (i1 & 1) + 8 * (i1 >> 2)]) << 16);
  }
  rb0 = bits(b[(2 * t) * 8 + g]) | (bits(b[(2 * t + 1) * 8 + g]) << 16);
  rb1 = bits(b[(2 * t + 8) * 8 + g]) | (bits(b[(2 * t + 9) * 8 + g]) << 16);
  for (int i = 0; i < 4; ++i) acc[i] = c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
  cuda::mma_m16n8k16_bf16(acc, ra, rb0, rb1);
  for (int i = 0; i < 4; ++i) d[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}

// ldmatrix.x4 of four 8x8 matrices stored one after another (row stride 8): out[lane * 4 + m].
template <bool kTrans>
__global__ void ldmatrix_kernel(uint32_t* out, const bf16* m) {
  __shared__ __align__(16) bf16 tile[4 * 64];
  for (int i = threadIdx.x; i < 256; i += 32) tile[i] = m[i];
  __syncwarp();
  const int lane = threadIdx.x;
  uint32_t r[4];
  if (kTrans)
    cuda::ldmatrix_x4_trans(r, tile + (lane / 8) * 64 + (lane % 8) * 8);
  else
    cuda::ldmatrix_x4(r, tile + (lane / 8) * 64 + (lane % 8) * 8);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

// before[t] = what smem holds before the wait, after[t] after it; src 16 bytes per thread.
__global__ void cp_async_kernel(float* before, float* after, const float* src) {
  __shared__ __align__(16) float smem[4 * 32];
  const int t = threadIdx.x;
  smem[4 * t] = -1.0f;
  cuda::cp_async16(smem + 4 * t, src + 4 * t, true);
  cuda::cp_async_commit();
  before[t] = smem[4 * t];
  cuda::cp_async_wait<0>();
  after[t] = smem[4 * t];
}

// *counter += 1, by one thread.
__global__ void increment_kernel(int* counter) { *counter += 1; }

// out[t] = in[0] * (t + 1) + offset: reads a device value when it runs.
__global__ void scale_kernel(float* out, const float* in, float offset) {
  out[threadIdx.x] = in[0] * float(threadIdx.x + 1) + offset;
}

// ---- barriers -----------------------------------------------------------------------------------

TEST_CASE("a missing __syncthreads gives different results in different thread orders; with it, the same") {
  DeviceArray<int> out(64);
  auto run = [&](auto kernel) {
    std::vector<std::vector<int>> results;
    for (emu::Order o : {emu::Order::Forward, emu::Order::Reverse, emu::Order::Shuffle})
      with_order(o, 3, [&] {
        PPO_LAUNCH(1, 64, 0, nullptr, kernel, out.p);
        results.push_back(out.host());
      });
    return results;
  };
  const auto racy = run(neighbour_kernel<false>);
  CHECK(racy[0] != racy[1]);
  const auto fixed = run(neighbour_kernel<true>);
  CHECK(fixed[0] == fixed[1]);
  CHECK(fixed[0] == fixed[2]);
  CHECK(fixed[0][63] == 1);
}

TEST_CASE("__syncthreads reached at different lines, or after some threads exited, fails the launch") {
  DeviceArray<int> out(64);
  const std::string sites = error_of([&] { PPO_LAUNCH(1, 64, 0, nullptr, two_barrier_sites_kernel, out.p); });
  CHECK(contains(sites, "different __syncthreads"));
  CHECK(contains(sites, "two_barrier_sites_kernel"));
  CHECK(contains(sites, "test_emu_device.cpp"));
  const std::string exited = error_of([&] { PPO_LAUNCH(1, 64, 0, nullptr, early_return_barrier_kernel, out.p, 40); });
  CHECK(contains(exited, "exited"));
  CHECK(contains(exited, "block (0,0,0)"));
  CHECK(error_of([&] { PPO_LAUNCH(1, 64, 0, nullptr, early_return_barrier_kernel, out.p, 64); }).empty());
}

TEST_CASE("a deadlock names every waiting thread and where it waits") {
  DeviceArray<int> out(32);
  const std::string e = error_of([&] { PPO_LAUNCH(1, 32, 0, nullptr, deadlock_kernel, out.p); });
  CHECK(contains(e, "deadlock"));
  CHECK(contains(e, "threads (16,0,0) to (31,0,0) wait in __syncthreads"));
  CHECK(contains(e, "threads (0,0,0) to (15,0,0) wait in __shfl_sync"));
}

// ---- warp collectives -----------------------------------------------------------------------------

// CUDA's documented results (the C++ programming guide), independent of the emulator's PTX form.
int expected_shuffle(ShuffleKind kind, int lane, int b, int width) {
  const int base = lane / width * width, v = lane + 100;
  switch (kind) {
    case ShuffleKind::Idx:
      return base + (b % width) + 100;
    case ShuffleKind::Up:
      return lane - base < b ? v : v - b;
    case ShuffleKind::Down:
      return lane - base + b >= width ? v : v + b;
    case ShuffleKind::Xor: {
      const int src = lane ^ b;
      return src >= base + width ? v : src + 100;  // a later segment is not readable
    }
  }
  return 0;
}

TEST_CASE("shuffles follow CUDA's rules for every kind, offset and width") {
  DeviceArray<int> out(32);
  for (ShuffleKind kind : {ShuffleKind::Idx, ShuffleKind::Up, ShuffleKind::Down, ShuffleKind::Xor})
    for (int width : {1, 2, 4, 8, 16, 32})
      for (int b : {0, 1, 3, 5, 16, 31, 37}) {
        if (kind != ShuffleKind::Idx && b > 31) continue;
        PPO_LAUNCH(1, 32, 0, nullptr, shuffle_kernel, out.p, kind, b, width);
        const std::vector<int> got = out.host();
        for (int lane = 0; lane < 32; ++lane)
          CHECK_MESSAGE(got[size_t(lane)] == expected_shuffle(kind, lane, b, width), "kind ", int(kind), " b ", b,
                        " width ", width, " lane ", lane);
      }
  const std::string bad_width =
      error_of([&] { PPO_LAUNCH(1, 32, 0, nullptr, shuffle_kernel, out.p, ShuffleKind::Xor, 1, 12); });
  CHECK(contains(bad_width, "width 12"));
}

TEST_CASE("warp collectives: a lane outside its mask, masks that differ, and a mask naming an exited lane fail") {
  DeviceArray<int> out(32);
  DeviceArray<float> outf(32);
  CHECK(contains(error_of([&] { PPO_LAUNCH(1, 32, 0, nullptr, lane_outside_mask_kernel, out.p); }),
                 "does not include it"));
  CHECK(contains(error_of([&] { PPO_LAUNCH(1, 32, 0, nullptr, differing_masks_kernel, out.p); }), "disagree"));
  const std::string exited = error_of([&] { PPO_LAUNCH(1, 32, 0, nullptr, early_return_shuffle_kernel, outf.p, 20); });
  CHECK((contains(exited, "exited") && contains(exited, "__shfl_xor_sync")));
  CHECK(error_of([&] { PPO_LAUNCH(1, 32, 0, nullptr, early_return_shuffle_kernel, outf.p, 32); }).empty());
}

TEST_CASE("__ballot_sync over two disjoint half-warp masks") {
  DeviceArray<unsigned> out(64);
  PPO_LAUNCH(1, 64, 0, nullptr, ballot_kernel, out.p);
  const std::vector<unsigned> got = out.host();
  unsigned lo = 0, hi = 0;
  for (unsigned lane = 0; lane < 32; ++lane)
    if (lane % 3 == 0) (lane < 16 ? lo : hi) |= 1u << lane;
  for (size_t t = 0; t < 64; ++t) CHECK(got[t] == (t % 32 < 16 ? lo : hi));
}

// ---- memory, launches -----------------------------------------------------------------------------

TEST_CASE("dynamic shared memory starts as NaN bytes; more than 48 KiB needs the function attribute") {
  DeviceArray<uint32_t> out(32);
  PPO_LAUNCH(1, 32, 128, nullptr, read_dynamic_shared_kernel, out.p);
  for (uint32_t v : out.host()) CHECK(v == 0xffffffffu);
  const size_t big = 64 << 10;
  CHECK(contains(error_of([&] { PPO_LAUNCH(1, 32, big, nullptr, read_dynamic_shared_kernel, out.p); }),
                 "cudaFuncAttributeMaxDynamicSharedMemorySize"));
  REQUIRE(cudaFuncSetAttribute(read_dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(big)) ==
          cudaSuccess);
  CHECK(error_of([&] { PPO_LAUNCH(1, 32, big, nullptr, read_dynamic_shared_kernel, out.p); }).empty());
  CHECK(cudaFuncSetAttribute(read_dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 << 10) ==
        cudaErrorInvalidValue);
  cudaGetLastError();
}

TEST_CASE("a host pointer passed to a kernel, and an invalid launch configuration, fail the launch") {
  std::vector<float> host(32);
  CHECK(contains(error_of([&] { PPO_LAUNCH(1, 32, 0, nullptr, write_kernel, host.data()); }), "not device memory"));
  DeviceArray<float> out(32);
  CHECK(contains(error_of([&] { PPO_LAUNCH(1, 2048, 0, nullptr, write_kernel, out.p); }), "not a valid launch"));
  CHECK(contains(error_of([&] { PPO_LAUNCH(0, 32, 0, nullptr, write_kernel, out.p); }), "not a valid launch"));
}

TEST_CASE("copies check their kind and ranges; fresh device memory is NaN; the counters count") {
  reset_cuda_counters();
  DeviceArray<float> d(8);
  std::vector<float> h(8, 2.0f);
  for (float v : d.host()) CHECK(std::isnan(v));
  CHECK(cudaMemcpy(d.p, h.data(), 8 * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemcpy(h.data(), d.p, 9 * sizeof(float), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);  // past the end
  CHECK(cudaMemcpy(d.p, h.data(), 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);  // kinds swapped
  CHECK(contains(cudaGetErrorString(cudaErrorInvalidValue), "device memory"));
  cudaGetLastError();
  PPO_LAUNCH(1, 8, 0, nullptr, write_kernel, d.p);
  const DeviceCounters c = cuda_counters();
  CHECK(c.allocations == 1);
  CHECK(c.h2d_copies == 1);
  CHECK(c.h2d_bytes == 32);
  CHECK(c.d2h_copies == 1);  // the NaN read; the failed copies count nothing
  CHECK(c.launches == 1);
  CHECK(c.syncs == 1);  // the copy to the host waited; the copy from it had nothing to wait for
  cudaDeviceSynchronize();  // waits for the launch
  cudaDeviceSynchronize();  // nothing left to wait for
  CHECK(cuda_counters().syncs == 2);
}

// ---- tensor cores, cp.async -------------------------------------------------------------------------

TEST_CASE("mma m16n8k16: fragments in the PTX-ISA layout give D = A B + C exactly on small integers") {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> small(-8, 8);
  std::vector<bf16> a(256), b(128);
  std::vector<float> c(128);
  for (bf16& x : a) x = bf16_from_f32(float(small(rng)));
  for (bf16& x : b) x = bf16_from_f32(float(small(rng)));
  for (float& x : c) x = float(small(rng));
  DeviceArray<bf16> da(a), db(b);
  DeviceArray<float> dc(c), dd(128);
  PPO_LAUNCH(1, 32, 0, nullptr, mma_kernel, dd.p, da.p, db.p, dc.p);
  const std::vector<float> d = dd.host();
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      float want = c[size_t(r * 8 + n)];
      for (int k = 0; k < 16; ++k) want += f32_from_bf16(a[size_t(r * 16 + k)]) * f32_from_bf16(b[size_t(k * 8 + n)]);
      CHECK_MESSAGE(d[size_t(r * 8 + n)] == want, "row ", r, " column ", n);
    }
}

TEST_CASE("ldmatrix.x4 and .trans hand each lane the PTX-ISA elements") {
  std::vector<bf16> m(256);
  for (size_t i = 0; i < m.size(); ++i) m[i] = bf16{uint16_t(i)};
  DeviceArray<bf16> dm(m);
  DeviceArray<uint32_t> out(128);
  for (bool trans : {false, true}) {
    if (trans)
      PPO_LAUNCH(1, 32, 0, nullptr, ldmatrix_kernel<true>, out.p, dm.p);
    else
      PPO_LAUNCH(1, 32, 0, nullptr, ldmatrix_kernel<false>, out.p, dm.p);
    const std::vector<uint32_t> got = out.host();
    for (int lane = 0; lane < 32; ++lane)
      for (int mat = 0; mat < 4; ++mat) {
        const int g = lane / 4, c = 2 * (lane % 4);
        auto at = [&](int row, int col) { return uint32_t(mat * 64 + row * 8 + col); };
        const uint32_t want = trans ? at(c, g) | (at(c + 1, g) << 16) : at(g, c) | (at(g, c + 1) << 16);
        CHECK_MESSAGE(got[size_t(lane * 4 + mat)] == want, "trans ", trans, " lane ", lane, " matrix ", mat);
      }
  }
}

TEST_CASE("cp.async lands at cp_async_wait, not before") {
  std::vector<float> src(128);
  std::iota(src.begin(), src.end(), 1.0f);
  DeviceArray<float> dsrc(src), before(32), after(32);
  PPO_LAUNCH(1, 32, 0, nullptr, cp_async_kernel, before.p, after.p, dsrc.p);
  const std::vector<float> b = before.host(), a = after.host();
  for (size_t t = 0; t < 32; ++t) {
    CHECK(b[t] == -1.0f);
    CHECK(a[t] == src[4 * t]);
  }
}

// ---- libraries ------------------------------------------------------------------------------------

// Column-major reference: D(m,n) = alpha op(A) op(B) + beta C.
std::vector<float> gemm_reference(bool ta, bool tb, int m, int n, int k, const std::vector<float>& A, int lda,
                                  const std::vector<float>& B, int ldb, float beta, const std::vector<float>& C,
                                  int ldc) {
  std::vector<float> D(size_t(ldc) * size_t(n));
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int p = 0; p < k; ++p)
        s += double(ta ? A[size_t(i * lda + p)] : A[size_t(p * lda + i)]) *
             double(tb ? B[size_t(p * ldb + j)] : B[size_t(j * ldb + p)]);
      D[size_t(j * ldc + i)] = float(s) + beta * C[size_t(j * ldc + i)];
    }
  return D;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_from_f32(v[i]);
  return out;
}

TEST_CASE("cublasGemmEx: transposes and padded leading dimensions against a loop; a wrong ld is refused") {
  cublasHandle_t h;
  REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> small(-4, 4);
  const int m = 5, n = 3, k = 7;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 1, ldc = m + 3;
      std::vector<float> A(size_t(lda) * (ta ? m : k)), B(size_t(ldb) * (tb ? k : n)), C(size_t(ldc) * n);
      for (float& x : A) x = float(small(rng));
      for (float& x : B) x = float(small(rng));
      for (float& x : C) x = float(small(rng));
      DeviceArray<bf16> dA(to_bf16(A)), dB(to_bf16(B));
      DeviceArray<float> dC(C);
      const float alpha = 1.0f, beta = 1.0f;
      REQUIRE(cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA.p,
                           CUDA_R_16BF, lda, dB.p, CUDA_R_16BF, ldb, &beta, dC.p, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
      const std::vector<float> want = gemm_reference(ta, tb, m, n, k, A, lda, B, ldb, 1.0f, C, ldc);
      const std::vector<float> got = dC.host();
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) CHECK(got[size_t(j * ldc + i)] == want[size_t(j * ldc + i)]);
      // lda below the stored rows, and an ld that reads past the allocation
      CHECK(cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, dA.p, CUDA_R_16BF,
                         (ta ? k : m) - 1, dB.p, CUDA_R_16BF, ldb, &beta, dC.p, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
      CHECK(cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA.p,
                         CUDA_R_16BF, lda + 5, dB.p, CUDA_R_16BF, ldb, &beta, dC.p, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
    }
  cublasDestroy(h);
}

TEST_CASE("cuBLASLt: BIAS and BGRADB epilogues against a loop; the heuristic refuses an unaligned leading dimension") {
  cublasLtHandle_t h;
  REQUIRE(cublasLtCreate(&h) == CUBLAS_STATUS_SUCCESS);
  const int m = 8, n = 16, k = 8;  // D(m,n) = A(m,k) op(B), B stored (n,k) with opB = T
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-4, 4);
  std::vector<float> A(static_cast<size_t>(m * k)), B(static_cast<size_t>(n * k)), bias(static_cast<size_t>(m));
  for (float& x : A) x = float(small(rng));
  for (float& x : B) x = float(small(rng));
  for (float& x : bias) x = float(small(rng));
  DeviceArray<bf16> dA(to_bf16(A)), dB(to_bf16(B)), dbias(to_bf16(bias));
  DeviceArray<float> dD(static_cast<size_t>(m * n)), dgrad(static_cast<size_t>(n));
  DeviceArray<char> workspace(size_t(8) << 20);

  auto run = [&](cublasLtEpilogue_t epilogue, void* vector, int ldb) {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulPreference_t pref;
    const cublasOperation_t tn = CUBLAS_OP_N, tt = CUBLAS_OP_T;
    cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tn, sizeof tn);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tt, sizeof tt);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
    const int32_t bias_type = CUDA_R_16BF;
    if (epilogue == CUBLASLT_EPILOGUE_BIAS)
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, 4);
    if (vector) cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vector, sizeof vector);
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, m, k, m);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, n, k, ldb);
    cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, m);
    cublasLtMatmulPreferenceCreate(&pref);
    const uint64_t ws = workspace.n;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, ld, ld, pref, 1, &result, &found);
    bool ran = false;
    if (st == CUBLAS_STATUS_SUCCESS && found == 1) {
      const float alpha = 1.0f, beta = 0.0f;
      REQUIRE(cublasLtMatmul(h, op, &alpha, dA.p, la, dB.p, lb, &beta, dD.p, ld, dD.p, ld, &result.algo, workspace.p,
                             workspace.n, nullptr) == CUBLAS_STATUS_SUCCESS);
      ran = true;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatmulDescDestroy(op);
    return ran;
  };

  REQUIRE(run(CUBLASLT_EPILOGUE_BIAS, dbias.p, n));
  const std::vector<float> D = dD.host();
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      float want = bias[size_t(i)];
      for (int p = 0; p < k; ++p) want += A[size_t(p * m + i)] * B[size_t(p * n + j)];
      CHECK(D[size_t(j * m + i)] == want);
    }
  REQUIRE(run(CUBLASLT_EPILOGUE_BGRADB, dgrad.p, n));
  const std::vector<float> grad = dgrad.host();
  for (int j = 0; j < n; ++j) {
    float want = 0;
    for (int p = 0; p < k; ++p) want += B[size_t(p * n + j)];  // sum over k of op(B)[p, j] = B(j, p)
    CHECK(grad[size_t(j)] == want);
  }
  CHECK_FALSE(run(CUBLASLT_EPILOGUE_DEFAULT, nullptr, n + 1));  // ldb 17 bf16 = 34 bytes: no algorithm
  cublasLtDestroy(h);
}

// ---- stream capture, graphs ---------------------------------------------------------------------

cudaStream_t make_stream() {
  cudaStream_t s;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  return s;
}

cudaStreamCaptureStatus capture_status(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  REQUIRE(cudaStreamIsCapturing(s, &status) == cudaSuccess);
  return status;
}

// cublasLtMatmul D = alpha A B (n x n, column-major; A, B bf16, D f32) on `stream`.
cublasStatus_t lt_matmul(cublasLtHandle_t h, int n, const float* alpha, const bf16* A, const bf16* B, float* D,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t lab, ld;
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  cublasLtMatrixLayoutCreate(&lab, CUDA_R_16BF, uint64_t(n), uint64_t(n), n);
  cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, uint64_t(n), uint64_t(n), n);
  cublasLtMatmulPreferenceCreate(&pref);
  const uint64_t ws = workspace_bytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, op, lab, lab, ld, ld, pref, 1, &result, &found);
  const float beta = 0.0f;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmul(h, op, alpha, A, lab, B, lab, &beta, D, ld, D, ld, &result.algo, workspace, workspace_bytes,
                        stream);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatrixLayoutDestroy(lab);
  cublasLtMatmulDescDestroy(op);
  return st;
}

TEST_CASE("stream capture: nothing runs while capturing; each graph launch runs every node in order, as one launch") {
  cudaStream_t s = make_stream();
  cublasHandle_t blas;
  cublasLtHandle_t lt;
  REQUIRE(cublasCreate(&blas) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasSetStream(blas, s) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
  const int n = 8;
  std::vector<float> A(size_t(n * n)), B(size_t(n * n));
  for (int i = 0; i < n * n; ++i) {
    A[size_t(i)] = float(i % 5 - 2);
    B[size_t(i)] = float(i % 3 - 1);
  }
  const std::vector<float> AB =
      gemm_reference(false, false, n, n, n, A, n, B, n, 0.0f, std::vector<float>(size_t(n * n)), n);
  DeviceArray<bf16> dA(to_bf16(A)), dB(to_bf16(B));
  DeviceArray<float> gemm(size_t(n * n)), lt_out(size_t(n * n)), in(std::vector<float>{2.0f}), out(8), copied(8),
      cleared(4);
  DeviceArray<int> counter(std::vector<int>{0});
  DeviceArray<char> workspace(size_t(8) << 20);
  REQUIRE(cudaMemset(cleared.p, 0x7f, 4 * sizeof(float)) == cudaSuccess);
  reset_cuda_counters();

  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(capture_status(s) == cudaStreamCaptureStatusActive);
  PPO_LAUNCH(1, 1, 0, s, increment_kernel, counter.p);
  float offset = 0.5f;
  PPO_LAUNCH(1, 8, 0, s, scale_kernel, out.p, in.p, offset);
  REQUIRE(cudaMemcpyAsync(copied.p, out.p, 8 * sizeof(float), cudaMemcpyDeviceToDevice, s) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(cleared.p, 0, 4 * sizeof(float), s) == cudaSuccess);
  float alpha = 1.0f, beta = 0.0f;
  REQUIRE(cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, dA.p, CUDA_R_16BF, n, dB.p, CUDA_R_16BF, n,
                       &beta, gemm.p, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  const float lt_alpha = 2.0f;
  REQUIRE(lt_matmul(lt, n, &lt_alpha, dA.p, dB.p, lt_out.p, workspace.p, workspace.n, s) == CUBLAS_STATUS_SUCCESS);
  alpha = offset = 100.0f;  // the capture holds the values it was given
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  REQUIRE(graph != nullptr);
  CHECK(capture_status(s) == cudaStreamCaptureStatusNone);
  CHECK(cudaGetLastError() == cudaSuccess);

  CHECK(cuda_counters().launches == 0);  // nothing ran
  CHECK(counter.host()[0] == 0);
  for (float v : out.host()) CHECK(std::isnan(v));
  for (float v : copied.host()) CHECK(std::isnan(v));
  for (float v : cleared.host()) CHECK(v > 1e38f);
  for (float v : gemm.host()) CHECK(std::isnan(v));
  for (float v : lt_out.host()) CHECK(std::isnan(v));

  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);  // the exec stands alone
  const DeviceCounters before = cuda_counters();
  for (int launch = 1; launch <= 3; ++launch) {
    const float x = float(launch + 1);
    REQUIRE(cudaMemcpy(in.p, &x, sizeof x, cudaMemcpyHostToDevice) == cudaSuccess);  // read at each launch
    REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
    CHECK(cuda_counters().launches == before.launches + launch);
    CHECK(counter.host()[0] == launch);
    const std::vector<float> o = out.host(), c = copied.host();
    for (size_t t = 0; t < 8; ++t) {
      CHECK(o[t] == x * float(t + 1) + 0.5f);
      CHECK(c[t] == o[t]);  // the copy ran after the kernel
    }
  }
  const DeviceCounters after = cuda_counters();
  CHECK(after.d2d_copies - before.d2d_copies == 3);  // a copy node counts at every launch
  CHECK(after.d2d_bytes - before.d2d_bytes == 3 * 8 * int64_t(sizeof(float)));
  for (float v : cleared.host()) CHECK(v == 0.0f);
  const std::vector<float> g = gemm.host(), l = lt_out.host();
  for (size_t i = 0; i < g.size(); ++i) {
    CHECK(g[i] == AB[i]);
    CHECK(l[i] == 2.0f * AB[i]);
  }
  REQUIRE(cudaGraphExecDestroy(exec) == cudaSuccess);
  cublasLtDestroy(lt);
  cublasDestroy(blas);
  cudaStreamDestroy(s);
}

TEST_CASE("stream capture: a call that cannot be captured fails and invalidates the capture; nothing captured runs") {
  cudaStream_t s = make_stream();
  DeviceArray<int> counter(std::vector<int>{0});
  DeviceArray<int32_t> keys(std::vector<int32_t>{3, 1, 2}), sorted(3);
  DeviceArray<char> temp(4096);
  std::vector<int> host(1);
  // `call`, made while `s` captures one launch, fails with `want`; cudaStreamEndCapture then names `what`.
  auto invalidates = [&](const std::string& what, cudaError_t want, const std::function<cudaError_t()>& call,
                         cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal) {
    CAPTURE(what);
    REQUIRE(cudaStreamBeginCapture(s, mode) == cudaSuccess);
    PPO_LAUNCH(1, 1, 0, s, increment_kernel, counter.p);
    CHECK(call() == want);
    CHECK(cudaGetLastError() == want);
    CHECK(capture_status(s) == cudaStreamCaptureStatusInvalidated);
    CHECK(cudaMemsetAsync(counter.p, 0, sizeof(int), s) == cudaErrorStreamCaptureInvalidated);
    cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&host);
    CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(graph == nullptr);
    CHECK(contains(cudaGetErrorString(cudaErrorStreamCaptureInvalidated), "invalidated by " + what));
    cudaGetLastError();
    CHECK(capture_status(s) == cudaStreamCaptureStatusNone);
  };
  invalidates("cudaStreamSynchronize", cudaErrorStreamCaptureUnsupported, [&] { return cudaStreamSynchronize(s); });
  invalidates("cudaDeviceSynchronize", cudaErrorStreamCaptureUnsupported, [&] { return cudaDeviceSynchronize(); });
  invalidates("cudaStreamQuery", cudaErrorStreamCaptureUnsupported, [&] { return cudaStreamQuery(s); });
  invalidates("cudaMemcpyAsync", cudaErrorStreamCaptureUnsupported,
              [&] { return cudaMemcpyAsync(host.data(), counter.p, sizeof(int), cudaMemcpyDeviceToHost, s); });
  invalidates("cudaMemcpy", cudaErrorStreamCaptureUnsupported,
              [&] { return cudaMemcpy(temp.p, counter.p, sizeof(int), cudaMemcpyDeviceToDevice); });
  invalidates("cudaMalloc", cudaErrorStreamCaptureUnsupported, [&] {
    void* p = nullptr;
    return cudaMalloc(&p, 16);
  });
  invalidates("radix_sort_pairs", cudaErrorStreamCaptureUnsupported, [&] {
    size_t bytes = temp.n;
    return cuda::radix_sort_pairs(temp.p, bytes, keys.p, sorted.p, keys.p, sorted.p, 3, 0, 8, s);
  });
  invalidates("cudaMemsetAsync on the legacy stream", cudaErrorStreamCaptureImplicit,
              [&] { return cudaMemsetAsync(temp.p, 0, 16, nullptr); });
  cudaEvent_t event;
  REQUIRE(cudaEventCreate(&event) == cudaSuccess);
  cudaStream_t other = make_stream();
  invalidates("cudaStreamWaitEvent", cudaErrorStreamCaptureUnsupported, [&] {
    REQUIRE(cudaEventRecord(event, s) == cudaSuccess);  // a node of the capture
    return cudaStreamWaitEvent(other, event, 0);        // a fork into it
  });
  cudaStreamDestroy(other);
  cudaEventDestroy(event);
  CHECK(counter.host()[0] == 0);  // no captured launch ran

  // A Relaxed capture permits an allocation; every capture refuses a wait.
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 16) == cudaSuccess);
  CHECK(cudaFree(p) == cudaSuccess);
  CHECK(capture_status(s) == cudaStreamCaptureStatusActive);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  cudaGraphDestroy(graph);
  invalidates(
      "cudaStreamSynchronize", cudaErrorStreamCaptureUnsupported, [&] { return cudaStreamSynchronize(s); },
      cudaStreamCaptureModeRelaxed);
  cudaStreamDestroy(s);
}

TEST_CASE("stream capture and graphs: misuse of the API fails, naming the call") {
  cudaStream_t s = make_stream();
  DeviceArray<int> counter(std::vector<int>{0});
  cudaGraph_t graph = nullptr;
  CHECK(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorIllegalState);  // not capturing
  CHECK(contains(cudaGetErrorString(cudaErrorIllegalState), "cudaStreamEndCapture"));
  cudaGetLastError();
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaErrorIllegalState);  // already capturing
  CHECK(contains(cudaGetErrorString(cudaErrorIllegalState), "already captures"));
  cudaStreamCaptureStatus status;
  CHECK(cudaStreamIsCapturing(nullptr, &status) == cudaErrorStreamCaptureImplicit);
  cudaGetLastError();
  PPO_LAUNCH(1, 1, 0, s, increment_kernel, counter.p);
  unsigned long long id = 0;
  size_t dependencies = 0;
  cudaGraph_t capturing = nullptr;
  REQUIRE(cudaStreamGetCaptureInfo(s, &status, &id, &capturing, nullptr, nullptr, &dependencies) == cudaSuccess);
  CHECK(status == cudaStreamCaptureStatusActive);
  CHECK(id != 0);
  CHECK(dependencies == 1);
  CHECK(cudaGraphDestroy(capturing) == cudaErrorIllegalState);  // still being captured
  cudaGetLastError();
  // an invalid launch configuration fails at the launch, not at a replay
  CHECK(contains(error_of([&] { PPO_LAUNCH(0, 32, 0, s, increment_kernel, counter.p); }), "not a valid launch"));
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  CHECK(graph == capturing);
  cudaGetLastError();

  cudaGraphExec_t exec = nullptr;
  CHECK(cudaGraphInstantiate(&exec, graph, 1) == cudaErrorInvalidValue);
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  CHECK(cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(graph), s) == cudaErrorInvalidResourceHandle);
  REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaErrorInvalidResourceHandle);
  CHECK(cudaGraphInstantiate(&exec, graph, 0) == cudaErrorInvalidResourceHandle);

  // launching into a capture is refused and invalidates it
  cudaStream_t other = make_stream();
  REQUIRE(cudaStreamBeginCapture(other, cudaStreamCaptureModeGlobal) == cudaSuccess);
  CHECK(cudaGraphLaunch(exec, other) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(other, &graph) == cudaErrorStreamCaptureInvalidated);
  CHECK(contains(cudaGetErrorString(cudaErrorStreamCaptureInvalidated), "cudaGraphLaunch"));
  cudaStreamDestroy(other);
  CHECK(counter.host()[0] == 0);

  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(counter.host()[0] == 1);
  REQUIRE(cudaGraphExecDestroy(exec) == cudaSuccess);
  CHECK(cudaGraphLaunch(exec, s) == cudaErrorInvalidResourceHandle);
  CHECK(contains(cudaGetErrorString(cudaErrorInvalidResourceHandle), "cudaGraphLaunch"));
  CHECK(cudaGraphExecDestroy(exec) == cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  CHECK(counter.host()[0] == 1);

  // destroying a capturing stream discards its capture
  cudaStream_t dropped = make_stream();
  REQUIRE(cudaStreamBeginCapture(dropped, cudaStreamCaptureModeGlobal) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(dropped) == cudaSuccess);
  CHECK(cudaStreamIsCapturing(nullptr, &status) == cudaSuccess);
  cudaStreamDestroy(s);
}

TEST_CASE("capture modes: a Global capture refuses another thread's allocation, a ThreadLocal one ends on its thread") {
  cudaStream_t s = make_stream();
  auto on_another_thread = [](const std::function<cudaError_t()>& call) {
    cudaError_t result = cudaSuccess;
    std::thread([&] { result = call(); }).join();
    return result;
  };
  auto allocate = [] {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, 16);
    return e != cudaSuccess ? e : cudaFree(p);
  };
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(on_another_thread(allocate) == cudaSuccess);
  CHECK(on_another_thread([&] { return cudaStreamEndCapture(s, &graph); }) == cudaErrorStreamCaptureWrongThread);
  cudaGetLastError();
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  cudaGraphDestroy(graph);
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
  CHECK(on_another_thread(allocate) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  cudaStreamDestroy(s);
}

TEST_CASE("a kernel that fails in a graph launch reports through cudaGetLastError, naming it") {
  cudaStream_t s = make_stream();
  DeviceArray<int> out(64);
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
  CHECK(error_of([&] { PPO_LAUNCH(1, 64, 0, s, two_barrier_sites_kernel, out.p); }).empty());  // not run yet
  cudaGraph_t graph;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  cudaGraphExec_t exec;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  cudaGraphDestroy(graph);
  CHECK(cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(contains(cudaGetErrorString(cudaErrorLaunchFailure), "two_barrier_sites_kernel"));
  cudaGraphExecDestroy(exec);
  cudaStreamDestroy(s);
}

TEST_CASE("radix_sort_pairs: stable, by the bit range, two-call protocol, too little temp storage refused") {
  std::mt19937 rng(13);
  std::uniform_int_distribution<int> key(0, 300);
  const int n = 1000;
  std::vector<int32_t> keys(n), values(n);
  for (int i = 0; i < n; ++i) {
    keys[size_t(i)] = key(rng);
    values[size_t(i)] = i;
  }
  DeviceArray<int32_t> kin(keys), vin(values), kout(static_cast<size_t>(n)), vout(static_cast<size_t>(n));
  size_t temp_bytes = 0;
  REQUIRE(cuda::radix_sort_pairs(nullptr, temp_bytes, kin.p, kout.p, vin.p, vout.p, n, 0, 9, nullptr) == cudaSuccess);
  DeviceArray<char> temp(temp_bytes);
  REQUIRE(cuda::radix_sort_pairs(temp.p, temp_bytes, kin.p, kout.p, vin.p, vout.p, n, 0, 9, nullptr) == cudaSuccess);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return keys[size_t(a)] < keys[size_t(b)]; });
  const std::vector<int32_t> ks = kout.host(), vs = vout.host();
  for (int i = 0; i < n; ++i) {
    CHECK(vs[size_t(i)] == order[size_t(i)]);
    CHECK(ks[size_t(i)] == keys[size_t(order[size_t(i)])]);
  }
  size_t small = temp_bytes - 1;
  CHECK(cuda::radix_sort_pairs(temp.p, small, kin.p, kout.p, vin.p, vout.p, n, 0, 9, nullptr) == cudaErrorInvalidValue);
  cudaGetLastError();
}

}  // namespace
