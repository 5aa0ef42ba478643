// Small pieces shared by the CUDA op files: grid sizing, 16-byte bf16 vectors, fixed-order block
// reductions (deterministic for a fixed blockDim), and a scratch frame over ctx.scratch.
#pragma once
#include <cstdint>

#include "engine/dtype.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/launch.cuh"

namespace ppo::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n items: enough to fill the chip, never more than needed.
inline int grid_for(const CudaContext& ctx, int64_t n, int threads) {
  const int64_t want = ceil_div(n, threads);
  const int64_t cap = int64_t(ctx.props.multiProcessorCount) * 32;
  return int(want < 1 ? 1 : (want < cap ? want : cap));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// A temporary region of ctx.scratch, given back (rewound) when the frame goes out of scope. Work
// queued on ctx.stream before the rewind still sees its bytes: later ops run after it in stream order.
class ScratchFrame {
 public:
  ScratchFrame(CudaContext& ctx, const char* op) : carver_(ctx.scratch) {
    PPO_ASSERT(carver_ != nullptr, op, " needs scratch memory: call Backend::set_scratch first");
    mark_ = carver_->mark();
  }
  ~ScratchFrame() { carver_->rewind(mark_); }
  ScratchFrame(const ScratchFrame&) = delete;
  ScratchFrame& operator=(const ScratchFrame&) = delete;
  // `count` elements of T, 256-byte aligned.
  template <class T>
  T* take(int64_t count, const char* name) {
    const int64_t words = ceil_div(count * int64_t(sizeof(T)), 4);
    return static_cast<T*>(carver_->take(DType::I32, {words}, name).data);
  }

 private:
  Carver* carver_;
  size_t mark_;
};

// Eight bf16 values, loaded and stored as one 16-byte access.
struct alignas(16) Bf16x8 {
  bf16 v[8];
};

__device__ __forceinline__ float to_f32(bf16 x) { return f32_from_bf16(x); }
__device__ __forceinline__ bf16 to_bf16(float x) { return bf16_from_f32(x); }

// Loads VEC consecutive bf16 (VEC = 8: one 16-byte access, pointer 16-byte aligned) as f32.
template <int VEC>
__device__ __forceinline__ void load_bf16(float (&out)[VEC], const bf16* p) {
  if constexpr (VEC == 8) {
    const Bf16x8 pack = *reinterpret_cast<const Bf16x8*>(p);
#pragma unroll
    for (int k = 0; k < 8; ++k) out[k] = to_f32(pack.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = to_f32(p[k]);
  }
}

template <int VEC>
__device__ __forceinline__ void store_bf16(bf16* p, const float (&in)[VEC]) {
  if constexpr (VEC == 8) {
    Bf16x8 pack;
#pragma unroll
    for (int k = 0; k < 8; ++k) pack.v[k] = to_bf16(in[k]);
    *reinterpret_cast<Bf16x8*>(p) = pack;
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) p[k] = to_bf16(in[k]);
  }
}

// Codes of DeviceStatus: which check failed (Backend::check_device_errors names op and tensor).
enum class RangeCheck : int32_t {
  None = 0,
  TokenIds = 1,
  Positions = 2,
  TargetIds = 3,
  GatherRows = 4,
  CacheStart = 5,    // kv_cache_write's start read on the device
  SampleColumn = 6,  // append_sampled's step
};

// True when 0 <= value < bound; otherwise records the first such error (code, value, row) in the
// device status and returns false: the caller then reads row 0 instead, never out of bounds.
__device__ __forceinline__ bool in_range(DeviceStatus* status, RangeCheck check, int32_t value, int64_t bound,
                                         int64_t row) {
  if (value >= 0 && value < bound) return true;
  if (atomicCAS(&status->code, 0, int32_t(check)) == 0) {
    status->value = value;
    status->index = row;
  }
  return false;
}

template <class T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Sum of K values over the block, in a fixed order (warp butterflies, then warp 0 over the warp
// sums): the same inputs and blockDim give the same bits. Every thread gets the totals.
// blockDim.x must be a multiple of 32, at most 1024. Uses one __syncthreads pair; callable repeatedly.
template <int K, class T>
__device__ __forceinline__ void block_sum(T (&x)[K]) {
  __shared__ T warp_partial[K][32];
  __shared__ T total[K];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) x[k] = warp_sum(x[k]);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) warp_partial[k][warp] = x[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      T y = lane < warps ? warp_partial[k][lane] : T(0);
      y = warp_sum(y);
      if (lane == 0) total[k] = y;
    }
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) x[k] = total[k];
  __syncthreads();  // the shared arrays may be reused by the next call
}

// How the second pass stores its totals.
enum class Totals : uint8_t { Overwrite, Accumulate };

// Second pass of a deterministic reduction: partials (blocks, K) in double, written by the first
// pass one row per block, summed per column in a fixed order by one block; totals (K) on the device,
// overwritten or added to.
template <int K>
__global__ void sum_partials_kernel(double* totals, const double* partials, int blocks, Totals mode) {
  double acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) acc[k] = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
#pragma unroll
    for (int k = 0; k < K; ++k) acc[k] += partials[int64_t(b) * K + k];
  }
  block_sum<K>(acc);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) totals[k] = mode == Totals::Accumulate ? totals[k] + acc[k] : acc[k];
  }
}

// Launches the second pass into `totals` (K doubles on the device) without reading them back.
template <int K>
void sum_partials(CudaContext& ctx, double* totals, const double* partials, int blocks,
                  Totals mode = Totals::Overwrite) {
  PPO_LAUNCH(1, 256, 0, ctx.stream, sum_partials_kernel<K>, totals, partials, blocks, mode);
}

// Blocks of the first pass of a deterministic reduction over n items: a function of n only, so the
// summation order (and the result's bits) does not depend on the device.
constexpr int kReduceThreads = 256;
constexpr int kReduceMaxBlocks = 1024;
inline int reduce_blocks(int64_t n) {
  const int64_t want = ceil_div(n, kReduceThreads * 4);
  return int(want < 1 ? 1 : (want < kReduceMaxBlocks ? want : kReduceMaxBlocks));
}

}  // namespace ppo::cuda
