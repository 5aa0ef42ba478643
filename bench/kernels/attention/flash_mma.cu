// Tensor-core flash attention forward, HS = 64 (see flash_mma.h). Never run on a GPU yet: the
// harness validates it against the CPU op before timing it.
//
// Block: 4 warps own 64 queries (16 per warp) of one head h of one batch row b; key tiles of 64 rows
// stream through shared memory, two stages deep (cp.async), K and V of kv head g = h / (NH/NKV).
// Per warp and key tile, with fragments of mma.m16n8k16 (row-major A, column-major B):
//   S(16x64)  = Q(16x64) K^T     A = Q from ldmatrix (kept in registers), B = K rows via ldmatrix
//   online softmax in f32, in the log2 domain: s2 = S scale log2(e); m = running row max;
//   P = 2^(s2 - m);  l = l 2^(m_old - m) + sum P;  O = O 2^(m_old - m)
//   O(16x64) += P(16x64) V      A = P re-packed to bf16 straight from S's accumulator layout,
//                               B = V via ldmatrix.trans (V is stored key-major)
// At the end out = O / l and lse = (m + log2 l) ln 2; a query with no visible key gets out = 0 and
// lse = -inf. Query t sees key s iff s <= t and mask[b,s] == 1. Query tiles run longest first.
#include <cuda_bf16.h>

#include <cmath>

#include "bench/kernels/attention/flash_mma.h"
#include "engine/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/tensor_core.cuh"

namespace ppo::kbench::attention {
namespace {

constexpr int kHS = 64;
constexpr int kRows = 64;              // queries per block and keys per tile
constexpr int kThreads = 128;          // 4 warps x 16 query rows
constexpr int kStride = kHS + 8;       // bf16 per shared row: 144 bytes, ldmatrix rows on distinct banks
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

using cuda::cp_async16;
using cuda::cp_async_commit;
using cuda::cp_async_wait;
using cuda::ldmatrix_x4;
using cuda::ldmatrix_x4_trans;
using cuda::mma_m16n8k16_bf16;

// Two floats as a bf16 pair, `lo` in the low half (the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  return bits;
}

// Rows [row0, row0+64) of one head's 64 columns (src = row 0 of that column block, row stride W)
// into tile[64][kStride]; rows >= T are zero. 8 chunks of 16 bytes per row.
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* src, int64_t W, int64_t row0, int64_t T) {
  for (int c = threadIdx.x; c < kRows * 8; c += kThreads) {
    const int r = c >> 3, chunk = c & 7;
    const int64_t row = row0 + r;
    const bool valid = row < T;
    cp_async16(tile + r * kStride + chunk * 8, src + (valid ? row : 0) * W + chunk * 8, valid);
  }
}

// grid (ceil(T/64), NH, B), 128 threads.
__global__ void __launch_bounds__(kThreads)
flash_mma_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv,
                         const int32_t* __restrict__ mask, int64_t T, int NH, int NKV) {
  __shared__ __align__(16) bf16 Qs[kRows * kStride];
  __shared__ __align__(16) bf16 Ks[2][kRows * kStride];
  __shared__ __align__(16) bf16 Vs[2][kRows * kStride];
  __shared__ float key_bias[2][kRows];  // 0 for a visible key, -inf for a masked or absent one

  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kRows;  // longest query tiles first
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int g = h / (NH / NKV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t W = int64_t(NH + 2 * NKV) * kHS;
  const bf16* base = qkv + b * T * W;
  const bf16* k_src = base + int64_t(NH + g) * kHS;
  const bf16* v_src = base + int64_t(NH + NKV + g) * kHS;
  const int32_t* mask_b = mask + b * T;

  const int64_t key_end = min(T, q0 + kRows);  // causal: no key past the block's last query
  const int tiles = int((key_end + kRows - 1) / kRows);
  auto prefetch = [&](int tile, int stage) {
    const int64_t k0 = int64_t(tile) * kRows;
    load_tile(Ks[stage], k_src, W, k0, T);
    load_tile(Vs[stage], v_src, W, k0, T);
    if (threadIdx.x < kRows) {
      const int64_t s = k0 + threadIdx.x;
      key_bias[stage][threadIdx.x] = (s < T && mask_b[s] == 1) ? 0.0f : -INFINITY;
    }
  };
  load_tile(Qs, base + int64_t(h) * kHS, W, q0, T);
  prefetch(0, 0);
  cp_async_commit();

  // Thread's rows in the m16n8 accumulator layout: lo = group, hi = group + 8; columns 2 quad + {0,1}.
  const int group = lane >> 2, quad = lane & 3;
  const int64_t row_lo = q0 + warp * 16 + group, row_hi = row_lo + 8;
  const float scale_log2 = rsqrtf(float(kHS)) * kLog2e;
  uint32_t qf[4][4];  // Q fragments, k-steps of 16 head dims
  float o[8][4];      // O accumulators, 8 tiles of 8 head dims
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

  for (int i = 0; i < tiles; ++i) {
    const int stage = i & 1;
    if (i + 1 < tiles) {
      prefetch(i + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile (and Q) landed for every thread
    if (i == 0) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        ldmatrix_x4(qf[kk], Qs + (warp * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kStride + kk * 16 + 8 * (lane >> 4));
    }
    const bf16* Kt = Ks[stage];
    const bf16* Vt = Vs[stage];

    // S = Q K^T: key tile j (8 keys), two ldmatrix.x4 cover the 64 head dims.
    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        uint32_t kb[4];
        ldmatrix_x4(kb, Kt + (8 * j + (lane & 7)) * kStride + half * 32 + 8 * (lane >> 3));
        mma_m16n8k16_bf16(s[j], qf[2 * half], kb[0], kb[1]);
        mma_m16n8k16_bf16(s[j], qf[2 * half + 1], kb[2], kb[3]);
      }
    }

    // Scale, mask (causal and key mask), running max over the row (the 4 threads of a quad group).
    const int64_t k0 = int64_t(i) * kRows;
    float mx_lo = m_lo, mx_hi = m_hi;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * j + 2 * quad + e;
        const int64_t key = k0 + col;
        const float bias = key_bias[stage][col];
        s[j][e] = key <= row_lo ? s[j][e] * scale_log2 + bias : -INFINITY;
        s[j][2 + e] = key <= row_hi ? s[j][2 + e] * scale_log2 + bias : -INFINITY;
        mx_lo = fmaxf(mx_lo, s[j][e]);
        mx_hi = fmaxf(mx_hi, s[j][2 + e]);
      }
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    // A row with nothing visible yet keeps max -inf: subtract 0 instead (every p is then 0).
    const float use_lo = mx_lo == -INFINITY ? 0.0f : mx_lo, use_hi = mx_hi == -INFINITY ? 0.0f : mx_hi;
    const float alpha_lo = exp2f(m_lo - use_lo), alpha_hi = exp2f(m_hi - use_hi);  // 0 while m was -inf
    m_lo = mx_lo;
    m_hi = mx_hi;
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[j][e] = exp2f(s[j][e] - use_lo);
        s[j][2 + e] = exp2f(s[j][2 + e] - use_hi);
        sum_lo += s[j][e];
        sum_hi += s[j][2 + e];
      }
      o[j][0] *= alpha_lo;
      o[j][1] *= alpha_lo;
      o[j][2] *= alpha_hi;
      o[j][3] *= alpha_hi;
    }
    l_lo = l_lo * alpha_lo + sum_lo;  // this thread's columns; the quad's partial sums add up at the end
    l_hi = l_hi * alpha_hi + sum_hi;

    // O += P V: k-step kk = keys 16kk..16kk+15 = S tiles 2kk and 2kk+1; V tiles of 16 head dims.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int jp = 0; jp < 4; ++jp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, Vt + (16 * kk + (lane & 7) + 8 * ((lane >> 3) & 1)) * kStride + 16 * jp + 8 * (lane >> 4));
        mma_m16n8k16_bf16(o[2 * jp], pa, vb[0], vb[1]);
        mma_m16n8k16_bf16(o[2 * jp + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage before the next prefetch overwrites it
  }

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const int64_t OW = int64_t(NH) * kHS;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = half == 0 ? row_lo : row_hi;
    if (row >= T) continue;
    const float l = half == 0 ? l_lo : l_hi, m = half == 0 ? m_lo : m_hi;
    const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    bf16* o_row = out + (b * T + row) * OW + int64_t(h) * kHS;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(o_row + 8 * j + 2 * quad) = pack_bf16(o[j][2 * half] * inv_l, o[j][2 * half + 1] * inv_l);
    if (quad == 0) lse[(b * NH + h) * T + row] = l > 0.0f ? (m + log2f(l)) * kLn2 : -INFINITY;
  }
}

}  // namespace

bool flash_mma_supports(int HS) { return HS == kHS; }

void flash_mma_forward(cudaStream_t stream, bf16* out, float* lse, const bf16* qkv, const int32_t* mask, int64_t B,
                       int64_t T, int NH, int NKV, int HS) {
  PPO_ASSERT(HS == kHS, "flash_mma_forward: head size ", HS, " (only ", kHS, ")");
  PPO_ASSERT(NKV >= 1 && NH % NKV == 0, "flash_mma_forward: NH=", NH, " is not a multiple of NKV=", NKV);
  PPO_ASSERT(B <= 65535 && NH <= 65535, "flash_mma_forward: B=", B, " NH=", NH, " exceed the grid limit");
  PPO_ASSERT((reinterpret_cast<uintptr_t>(qkv) & 15) == 0 && (reinterpret_cast<uintptr_t>(out) & 3) == 0,
             "flash_mma_forward: qkv must be 16-byte and out 4-byte aligned");
  if (B == 0 || T == 0) return;
  const dim3 grid(unsigned((T + kRows - 1) / kRows), unsigned(NH), unsigned(B));
  PPO_LAUNCH(grid, kThreads, 0, stream, flash_mma_forward_kernel, out, lse, qkv, mask, T, NH, NKV);
}

}  // namespace ppo::kbench::attention
