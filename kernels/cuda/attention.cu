// Causal grouped-query attention over packed qkv, forward and backward, flash-style (the T x T score
// matrix is never stored). Math in kernels/backend.h:
//   qkv (B,T,(NH+2*NKV)*HS) bf16 packs per position [q heads | k heads | v heads]; query head h reads
//   kv head g = h / (NH/NKV). Query t sees key s iff s <= t and mask[b,s] == 1. scale = 1/sqrt(HS).
//   out[b,t,h] = sum_s P[t,s] v_s,  P = softmax_s(scale q_t.k_s);  lse[b,h,t] = log sum_s e^{scale q_t.k_s}
//   A query with no visible key: out = 0, lse = -inf, and zero gradient.
// Backward (dqkv overwritten, "="), with D_t = sum_d dout[t,d] out[t,d]:
//   dP[t,s] = dout_t.v_s;  dS = P (dP - D_t);  dq_t = scale sum_s dS[t,s] k_s;
//   dk_s = scale sum_{h in group} sum_t dS[t,s] q_t;  dv_s = sum_{h in group} sum_t P[t,s] dout_t
//
// Two implementations, by head size; both deterministic (fixed summation orders, no atomics):
// - HS 64 and 128: tensor cores (namespace tc), FlashAttention-2 on mma.sync.m16n8k16 (bf16
//   operands, f32 accumulation). A block of 4 warps owns 64 rows (16 per warp), tiles of 64 rows of
//   the other side stream through shared memory double-buffered with cp.async, operand fragments
//   come from ldmatrix, and P (or dS) is re-packed to bf16 straight from the accumulator layout to be
//   the A operand of the next product. Forward: online softmax in the log2 domain. Backward in two
//   passes: dQ (owning queries; it also writes D = rowsum(dout*out) to scratch), then dK/dV (owning
//   keys, every query head of the group in turn) -- dQ without atomics, at the price of computing
//   Q K^T and dO V^T in both passes (7 products per pair of tiles where FlashAttention-2 has 5).
// - any other HS <= 256 (tests and tiny models use 8..32): SIMT f32 kernels (namespace simt).
// Fragments of mma.m16n8k16 (kernels/cuda/tensor_core.cuh), g = lane/4, t = lane%4: A (16x16,
// row-major) a[i] = rows g + 8(i&1), columns 2t, 2t+1 (+8 for i >= 2); B (16x8, k x n) b0 = k 2t,
// 2t+1 and b1 = k 2t+8, 2t+9 of column n = g; C (16x8) c[e] = row g + 8(e>>1), column 2t + (e&1).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/tensor_core.cuh"

namespace ppo::cuda {
namespace {

// ==== SIMT path: any head size <= 256 ============================================================
// Every kernel has the same shape: a block owns 16 rows (4 warps x 4 rows) and streams tiles of 32
// rows of the other side through shared memory, one streamed row per lane:
//   forward:  owns queries, streams keys (K, V); online softmax in f32 per owned query.
//   dK/dV:    owns keys of one kv head, streams queries (Q, dout) of every query head of the group in
//             head order, so dk, dv are summed in a fixed order (deterministic, no atomics).
//   dQ:       owns queries, streams keys (K, V); recomputes P and dS from lse (a second pass instead
//             of atomics: deterministic).
// A lane computes the scores of its streamed row against the warp's 4 owned rows (dot products over
// HS, the streamed tile padded to HS+1 floats per row so lanes hit distinct banks; owned rows are
// broadcast reads), then the warp accumulates with lanes over head dimensions d = lane + 32 j.
// DPL = dims per lane (HS <= 32*DPL). D is recomputed where needed (HS work per row per block, no
// scratch).
namespace simt {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kOwnedRows = kWarps * kRowsPerWarp;  // rows a block owns
constexpr int kTileRows = 32;                      // streamed rows per tile, one per lane
constexpr int kThreads = kWarps * 32;

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// dst[r*dst_stride + d] = mul * src[(row0+r)*src_stride + d] for r < nrows, d < hs; rows >= T are 0.
// src points at row 0 of the head's column block. Whole block cooperates.
__device__ __forceinline__ void load_rows(float* dst, int dst_stride, const bf16* src, int64_t src_stride, int64_t row0,
                                          int64_t T, int nrows, int hs, float mul) {
  for (int idx = threadIdx.x; idx < nrows * hs; idx += blockDim.x) {
    const int r = idx / hs, d = idx - r * hs;
    const int64_t row = row0 + r;
    dst[r * dst_stride + d] = row < T ? mul * f32_from_bf16(src[row * src_stride + d]) : 0.0f;
  }
}

// The key tile k0..k0+31 of kv head g: K and V rows into Ks, Vs (stride hs+1) and key_ok[c] = key
// k0+c exists and is unmasked. Whole block cooperates; the caller syncs before and after.
__device__ __forceinline__ void load_key_tile(float* Ks, float* Vs, int* key_ok, const bf16* base, const int32_t* mask_b,
                                              int64_t W, int NH, int NKV, int g, int64_t k0, int64_t T, int hs) {
  load_rows(Ks, hs + 1, base + int64_t(NH + g) * hs, W, k0, T, kTileRows, hs, 1.0f);
  load_rows(Vs, hs + 1, base + int64_t(NH + NKV + g) * hs, W, k0, T, kTileRows, hs, 1.0f);
  if (threadIdx.x < kTileRows) {
    const int64_t s = k0 + threadIdx.x;
    key_ok[threadIdx.x] = s < T && mask_b[s] == 1;
  }
}

// acc[i][j] += sum_c w_c[i] tile[c][lane + 32 j] over the kTileRows tile rows, where lane c holds
// w_c[i] (the warp's weight of tile row c for owned row i); tile rows have stride `pad`.
template <int DPL>
__device__ __forceinline__ void accumulate_tile(float (&acc)[kRowsPerWarp][DPL], const float (&w)[kRowsPerWarp],
                                                const float* tile, int pad, int hs) {
  const int lane = threadIdx.x % 32;
  for (int c = 0; c < kTileRows; ++c) {
    float td[DPL];
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = lane + 32 * j;
      td[j] = d < hs ? tile[c * pad + d] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const float wc = __shfl_sync(0xffffffffu, w[i], c);
#pragma unroll
      for (int j = 0; j < DPL; ++j) acc[i][j] += wc * td[j];
    }
  }
}

// D[r] = sum_d dO[r][d] * out[row0+r, d] for r < nrows (0 for rows >= T); dO rows in shared memory.
// Warp w handles rows w, w + kWarps, ...
__device__ __forceinline__ void rows_dot_out(float* D, const float* dO, int dO_stride, const bf16* out,
                                             int64_t out_stride, int64_t row0, int64_t T, int nrows, int hs) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < nrows; r += kWarps) {
    const int64_t row = row0 + r;
    float partial = 0.0f;
    if (row < T)
      for (int d = lane; d < hs; d += 32) partial += dO[r * dO_stride + d] * f32_from_bf16(out[row * out_stride + d]);
    const float total = warp_sum(partial);
    if (lane == 0) D[r] = total;
  }
}

// ---- forward ------------------------------------------------------------------------------------
// grid (ceil(T/16), NH, B). Shared: K, V tiles [32][hs+1], owned Q (pre-scaled) [16][hs], key_ok[32].
template <int DPL>
__global__ void __launch_bounds__(kThreads)
forward_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv,
               const int32_t* __restrict__ mask, int64_t T, int NH, int NKV, int hs) {
  const int pad = hs + 1;
  PPO_DYNAMIC_SHARED(float, smem);
  float* Ks = smem;
  float* Vs = Ks + kTileRows * pad;
  float* Qs = Vs + kTileRows * pad;
  int* key_ok = reinterpret_cast<int*>(Qs + kOwnedRows * hs);

  const int64_t q0 = int64_t(blockIdx.x) * kOwnedRows;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int g = h / (NH / NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t W = int64_t(NH + 2 * NKV) * hs;
  const bf16* base = qkv + b * T * W;
  const float scale = rsqrtf(float(hs));

  load_rows(Qs, hs, base + int64_t(h) * hs, W, q0, T, kOwnedRows, hs, scale);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DPL];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < DPL; ++j) acc[i][j] = 0.0f;
  }

  const int64_t key_end = min(T, q0 + kOwnedRows);  // causal: no key past the block's last query
  for (int64_t k0 = 0; k0 < key_end; k0 += kTileRows) {
    __syncthreads();  // previous tile fully used (and Qs loaded on the first pass)
    load_key_tile(Ks, Vs, key_ok, base, mask + b * T, W, NH, NKV, g, k0, T, hs);
    __syncthreads();

    // Scores of key k0+lane against the warp's rows.
    float score[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) score[i] = 0.0f;
    const float* k_row = Ks + lane * pad;
#pragma unroll 8
    for (int d = 0; d < hs; ++d) {
      const float kd = k_row[d];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) score[i] += Qs[(warp * kRowsPerWarp + i) * hs + d] * kd;
    }
    const int64_t key = k0 + lane;
    float p[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int64_t t = q0 + warp * kRowsPerWarp + i;
      const bool visible = key_ok[lane] && key <= t;
      const float s = visible ? score[i] : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(s));  // warp-uniform
      if (m_new == -INFINITY) {                       // nothing visible yet for this row
        p[i] = 0.0f;
        continue;
      }
      const float alpha = expf(m[i] - m_new);  // 0 when m = -inf
      p[i] = expf(s - m_new);                  // 0 for invisible keys
      l[i] = l[i] * alpha + warp_sum(p[i]);
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < DPL; ++j) acc[i][j] *= alpha;
    }
    accumulate_tile(acc, p, Vs, pad, hs);  // acc[i][d] += sum_c p_c[i] V[c][d]
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t t = q0 + warp * kRowsPerWarp + i;
    if (t >= T) continue;
    const bool any = l[i] > 0.0f;
    const float inv_l = any ? 1.0f / l[i] : 0.0f;
    bf16* o = out + (b * T + t) * (int64_t(NH) * hs) + int64_t(h) * hs;
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = lane + 32 * j;
      if (d < hs) o[d] = bf16_from_f32(acc[i][j] * inv_l);
    }
    if (lane == 0) lse[(b * NH + h) * T + t] = any ? m[i] + logf(l[i]) : -INFINITY;
  }
}

// ---- backward: dK, dV ---------------------------------------------------------------------------
// grid (ceil(T/16), NKV, B): the block owns keys s0..s0+15 of kv head g and streams 32 queries at a
// time from each query head of the group. Shared: Q, dO tiles [32][hs+1], owned K (pre-scaled) and V
// [16][hs], lse and D of the query tile [32].
template <int DPL>
__global__ void __launch_bounds__(kThreads)
backward_dkv_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                    const bf16* __restrict__ out, const float* __restrict__ lse, const int32_t* __restrict__ mask,
                    int64_t T, int NH, int NKV, int hs) {
  const int pad = hs + 1;
  PPO_DYNAMIC_SHARED(float, smem);
  float* Qs = smem;
  float* dOs = Qs + kTileRows * pad;
  float* Ks = dOs + kTileRows * pad;
  float* Vs = Ks + kOwnedRows * hs;
  float* lse_s = Vs + kOwnedRows * hs;
  float* D_s = lse_s + kTileRows;

  const int64_t s0 = int64_t(blockIdx.x) * kOwnedRows;
  const int g = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int group = NH / NKV;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t W = int64_t(NH + 2 * NKV) * hs, WO = int64_t(NH) * hs;
  const bf16* base = qkv + b * T * W;
  const bf16* dout_b = dout + b * T * WO;
  const bf16* out_b = out + b * T * WO;
  const float scale = rsqrtf(float(hs));

  load_rows(Ks, hs, base + int64_t(NH + g) * hs, W, s0, T, kOwnedRows, hs, scale);
  load_rows(Vs, hs, base + int64_t(NH + NKV + g) * hs, W, s0, T, kOwnedRows, hs, 1.0f);
  bool key_ok[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t s = s0 + warp * kRowsPerWarp + i;
    key_ok[i] = s < T && mask[b * T + s] == 1;
  }

  float dk[kRowsPerWarp][DPL], dv[kRowsPerWarp][DPL];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
    for (int j = 0; j < DPL; ++j) dk[i][j] = dv[i][j] = 0.0f;

  const int64_t q_begin = s0 / kTileRows * kTileRows;  // causal: no query before the first owned key
  for (int hh = 0; hh < group; ++hh) {
    const int h = g * group + hh;
    for (int64_t q0 = q_begin; q0 < T; q0 += kTileRows) {
      __syncthreads();  // previous tile fully used (and owned K, V loaded on the first pass)
      load_rows(Qs, pad, base + int64_t(h) * hs, W, q0, T, kTileRows, hs, 1.0f);
      load_rows(dOs, pad, dout_b + int64_t(h) * hs, WO, q0, T, kTileRows, hs, 1.0f);
      if (threadIdx.x < kTileRows) {
        const int64_t t = q0 + threadIdx.x;
        lse_s[threadIdx.x] = t < T ? lse[(b * NH + h) * T + t] : -INFINITY;
      }
      __syncthreads();
      rows_dot_out(D_s, dOs, pad, out_b + int64_t(h) * hs, WO, q0, T, kTileRows, hs);
      __syncthreads();

      // Query q0+lane against the warp's keys: s = q.k*scale, dp = dO.v.
      float score[kRowsPerWarp], dp[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) score[i] = dp[i] = 0.0f;
      const float* q_row = Qs + lane * pad;
      const float* do_row = dOs + lane * pad;
#pragma unroll 8
      for (int d = 0; d < hs; ++d) {
        const float qd = q_row[d], od = do_row[d];
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) {
          score[i] += qd * Ks[(warp * kRowsPerWarp + i) * hs + d];
          dp[i] += od * Vs[(warp * kRowsPerWarp + i) * hs + d];
        }
      }
      const int64_t t = q0 + lane;
      const float lse_t = lse_s[lane], D_t = D_s[lane];
      float p[kRowsPerWarp], ds[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int64_t s = s0 + warp * kRowsPerWarp + i;
        const bool visible = key_ok[i] && s <= t && t < T && lse_t != -INFINITY;
        p[i] = visible ? expf(score[i] - lse_t) : 0.0f;
        ds[i] = p[i] * (dp[i] - D_t);
      }
      accumulate_tile(dv, p, dOs, pad, hs);  // dv[i][d] += sum_c p_c[i] dO[c][d]
      accumulate_tile(dk, ds, Qs, pad, hs);  // dk[i][d] += sum_c ds_c[i] Q[c][d]
    }
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t s = s0 + warp * kRowsPerWarp + i;
    if (s >= T) continue;
    bf16* row = dqkv + (b * T + s) * W;
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = lane + 32 * j;
      if (d >= hs) continue;
      row[int64_t(NH + g) * hs + d] = bf16_from_f32(dk[i][j] * scale);
      row[int64_t(NH + NKV + g) * hs + d] = bf16_from_f32(dv[i][j]);
    }
  }
}

// ---- backward: dQ -------------------------------------------------------------------------------
// grid (ceil(T/16), NH, B): the block owns queries q0..q0+15 of head h and streams 32 keys at a time.
// Shared: K, V tiles [32][hs+1], owned Q (pre-scaled) and dO [16][hs], key_ok[32], lse and D [16].
template <int DPL>
__global__ void __launch_bounds__(kThreads)
backward_dq_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                   const bf16* __restrict__ out, const float* __restrict__ lse, const int32_t* __restrict__ mask,
                   int64_t T, int NH, int NKV, int hs) {
  const int pad = hs + 1;
  PPO_DYNAMIC_SHARED(float, smem);
  float* Ks = smem;
  float* Vs = Ks + kTileRows * pad;
  float* Qs = Vs + kTileRows * pad;
  float* dOs = Qs + kOwnedRows * hs;
  float* lse_s = dOs + kOwnedRows * hs;
  float* D_s = lse_s + kOwnedRows;
  int* key_ok = reinterpret_cast<int*>(D_s + kOwnedRows);

  const int64_t q0 = int64_t(blockIdx.x) * kOwnedRows;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int g = h / (NH / NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t W = int64_t(NH + 2 * NKV) * hs, WO = int64_t(NH) * hs;
  const bf16* base = qkv + b * T * W;
  const float scale = rsqrtf(float(hs));

  load_rows(Qs, hs, base + int64_t(h) * hs, W, q0, T, kOwnedRows, hs, scale);
  load_rows(dOs, hs, dout + b * T * WO + int64_t(h) * hs, WO, q0, T, kOwnedRows, hs, 1.0f);
  if (threadIdx.x < kOwnedRows) {
    const int64_t t = q0 + threadIdx.x;
    lse_s[threadIdx.x] = t < T ? lse[(b * NH + h) * T + t] : -INFINITY;
  }
  __syncthreads();
  rows_dot_out(D_s, dOs, hs, out + b * T * WO + int64_t(h) * hs, WO, q0, T, kOwnedRows, hs);
  __syncthreads();

  float lse_i[kRowsPerWarp], D_i[kRowsPerWarp], dq[kRowsPerWarp][DPL];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    lse_i[i] = lse_s[warp * kRowsPerWarp + i];
    D_i[i] = D_s[warp * kRowsPerWarp + i];
#pragma unroll
    for (int j = 0; j < DPL; ++j) dq[i][j] = 0.0f;
  }
  const int64_t key_end = min(T, q0 + kOwnedRows);
  for (int64_t k0 = 0; k0 < key_end; k0 += kTileRows) {
    __syncthreads();  // previous tile fully used
    load_key_tile(Ks, Vs, key_ok, base, mask + b * T, W, NH, NKV, g, k0, T, hs);
    __syncthreads();

    // Key k0+lane against the warp's queries: s = q.k*scale, dp = dO.v.
    float score[kRowsPerWarp], dp[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) score[i] = dp[i] = 0.0f;
    const float* k_row = Ks + lane * pad;
    const float* v_row = Vs + lane * pad;
#pragma unroll 8
    for (int d = 0; d < hs; ++d) {
      const float kd = k_row[d], vd = v_row[d];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        score[i] += Qs[(warp * kRowsPerWarp + i) * hs + d] * kd;
        dp[i] += dOs[(warp * kRowsPerWarp + i) * hs + d] * vd;
      }
    }
    const int64_t s = k0 + lane;
    float ds[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int64_t t = q0 + warp * kRowsPerWarp + i;
      const bool visible = key_ok[lane] && s <= t && lse_i[i] != -INFINITY;
      const float p = visible ? expf(score[i] - lse_i[i]) : 0.0f;
      ds[i] = p * (dp[i] - D_i[i]);
    }
    accumulate_tile(dq, ds, Ks, pad, hs);  // dq[i][d] += sum_c ds_c[i] K[c][d]
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t t = q0 + warp * kRowsPerWarp + i;
    if (t >= T) continue;
    bf16* row = dqkv + (b * T + t) * W + int64_t(h) * hs;
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = lane + 32 * j;
      if (d < hs) row[d] = bf16_from_f32(dq[i][j] * scale);
    }
  }
}


size_t forward_smem(int hs) { return (size_t(2) * kTileRows * (hs + 1) + size_t(kOwnedRows) * hs + kTileRows) * 4; }
size_t dkv_smem(int hs) {
  return (size_t(2) * kTileRows * (hs + 1) + size_t(2) * kOwnedRows * hs + 2 * kTileRows) * 4;
}
size_t dq_smem(int hs) {
  return (size_t(2) * kTileRows * (hs + 1) + size_t(2) * kOwnedRows * hs + 2 * kOwnedRows + kTileRows) * 4;
}

}  // namespace simt

// ==== tensor-core path: HS 64 and 128 ============================================================
namespace tc {

// Tiles: a block of 4 warps owns 64 rows (16 per warp: one mma row block) and streams 64-row tiles
// of the other side through shared memory, two stages deep (cp.async), the next tile loading while
// the current one is used. Shared rows are HS + 8 bf16 (HS*2 + 16 bytes): the 8 rows an ldmatrix
// reads start 16 bytes apart modulo 128, so they hit distinct banks.
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16 * kWarps;  // owned rows per block = rows per streamed tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int HS>
struct Shape {
  static_assert(HS % 32 == 0, "ldmatrix.x4 reads 32 head dimensions of a B^T operand at a time");
  static constexpr int kStride = HS + 8;           // bf16 per shared row
  static constexpr int kTile = kRows * kStride;    // bf16 per 64-row tile
  static constexpr int kSteps = HS / 16;           // mma k-steps over the head dimensions
  static constexpr int kDimTiles = HS / 8;         // 8-wide accumulator tiles over the head dimensions
  static constexpr int kChunks = HS / 8;           // 16-byte chunks per row
  // Streamed rows per backward sub-step (S and dP accumulators of 16 x kCols per warp), chosen from
  // ptxas (sm_90): 64 columns spilled in both backward kernels at HS 128 (beside the 128 registers
  // of dK and dV, or 64 of dQ) and took 186 instead of 138 registers in dQ at HS 64; 32 columns
  // spilled in dK/dV at HS 64.
  static constexpr int kDqCols = 32;
  static constexpr int kDkvCols = HS <= 64 ? 64 : 32;
};

// Two floats as a bf16 pair (round to nearest even), `lo` in the low half (the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  return bits;
}

// Rows [row0, row0 + 64) of one head (src = the head's first column in row 0, rows W elements
// apart) into tile[64][kStride] by 16-byte cp.async; rows >= T are zero-filled and not read.
template <int HS>
__device__ __forceinline__ void load_tile_async(bf16* tile, const bf16* src, int64_t W, int64_t row0, int64_t T) {
  constexpr int kChunks = Shape<HS>::kChunks;
  for (int c = threadIdx.x; c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, chunk = c % kChunks;
    const int64_t row = row0 + r;
    const bool valid = row < T;
    cp_async16(tile + r * Shape<HS>::kStride + chunk * 8, src + (valid ? row : 0) * W + chunk * 8, valid);
  }
}

// One warp, C(16 x 8NT) += A B^T with K = 16 KS:  acc[j][e] += sum_k a[r][k] b[8j + n][k], where
// (r, n) = (g + 8(e>>1), 2t + (e&1)) is accumulator element e of tile j (g = lane/4, t = lane%4).
// a: the warp's 16 rows, b: 8 NT rows, both row-major bf16 in shared memory.
// A fragments: one ldmatrix.x4 per k-step, matrix m = rows 8(m&1).., columns 8(m>>1).. of the
// 16x16 block (= a0..a3 of mma.m16n8k16). B fragments: one ldmatrix.x4 per (tile j, two k-steps),
// matrix m = rows 8j..8j+7, columns 8m.. of the 32 columns (= b0, b1 of the first k-step, then of
// the second): a row of b is a column of B, so the non-transposed load gives the col-major B.
template <int NT, int KS>
__device__ __forceinline__ void warp_mma_abt(float (&acc)[NT][4], const bf16* a, int a_stride, const bf16* b,
                                             int b_stride) {
  static_assert(NT % 2 == 0 && KS % 2 == 0, "tiles in pairs, k-steps in pairs");
  const int lane = threadIdx.x & 31;
  const bf16* a_lane = a + ((lane & 7) + 8 * ((lane >> 3) & 1)) * a_stride + 8 * (lane >> 4);
  const bf16* b_lane = b + (lane & 7) * b_stride + 8 * (lane >> 3);
#pragma unroll
  for (int k2 = 0; k2 < KS / 2; ++k2) {
    uint32_t a0[4], a1[4];
    ldmatrix_x4(a0, a_lane + 32 * k2);
    ldmatrix_x4(a1, a_lane + 32 * k2 + 16);
#pragma unroll
    for (int j = 0; j < NT; j += 2) {  // two tiles at a time: no mma waits on the one just issued
      uint32_t b0[4], b1[4];
      ldmatrix_x4(b0, b_lane + 8 * j * b_stride + 32 * k2);
      ldmatrix_x4(b1, b_lane + 8 * (j + 1) * b_stride + 32 * k2);
      mma_m16n8k16_bf16(acc[j], a0, b0[0], b0[1]);
      mma_m16n8k16_bf16(acc[j + 1], a0, b1[0], b1[1]);
      mma_m16n8k16_bf16(acc[j], a1, b0[2], b0[3]);
      mma_m16n8k16_bf16(acc[j + 1], a1, b1[2], b1[3]);
    }
  }
}

// One warp, C(16 x 8NT) += A B with K = 16 KS: A in registers (a[kk] = the A fragment of k-step kk),
// b row-major [k][n] bf16 in shared memory (rows 16kk.. for k-step kk, columns 8j.. for tile j).
// B fragments: ldmatrix.x4.trans, matrix m = rows 16kk + 8(m&1).., columns 16jp + 8(m>>1)..: the
// transposed 8x8 loads give lane (g, t) rows 2t, 2t+1 of column g = b0 (m even) and b1 (m odd) of
// tiles 2jp (m < 2) and 2jp + 1.
template <int NT, int KS>
__device__ __forceinline__ void warp_mma_ab(float (&acc)[NT][4], const uint32_t (&a)[KS][4], const bf16* b,
                                            int b_stride) {
  static_assert(NT % 2 == 0, "tiles in pairs");
  const int lane = threadIdx.x & 31;
  const bf16* b_lane = b + ((lane & 7) + 8 * ((lane >> 3) & 1)) * b_stride + 8 * (lane >> 4);
#pragma unroll
  for (int kk = 0; kk < KS; ++kk)
#pragma unroll
    for (int jp = 0; jp < NT / 2; ++jp) {
      uint32_t bb[4];
      ldmatrix_x4_trans(bb, b_lane + 16 * kk * b_stride + 16 * jp);
      mma_m16n8k16_bf16(acc[2 * jp], a[kk], bb[0], bb[1]);
      mma_m16n8k16_bf16(acc[2 * jp + 1], a[kk], bb[2], bb[3]);
    }
}

// A 16 x 16KS operand held as f32 accumulators c[2KS] (16x8 tiles) re-packed as bf16 A fragments:
// k-step kk covers tiles 2kk, 2kk+1, and the accumulator layout (row g / g+8, columns 2t, 2t+1)
// is the A layout: a[kk] = {c[2kk][0,1], c[2kk][2,3], c[2kk+1][0,1], c[2kk+1][2,3]}.
template <int KS>
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[KS][4], const float (&c)[2 * KS][4]) {
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    a[kk][0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
    a[kk][1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
    a[kk][2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[kk][3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
}

template <int NT>
__device__ __forceinline__ void zero(float (&acc)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
}

// Stores a warp's 16 x HS accumulators, times `mul`, as bf16 rows: rows row_lo (elements 0, 1) and
// row_lo + 8 (elements 2, 3), each a pair of columns 8j + 2t as one 4-byte store; rows >= T skipped.
// dst = row row_lo's first column; rows `stride` elements apart.
template <int NT>
__device__ __forceinline__ void store_rows(bf16* dst, int64_t stride, const float (&acc)[NT][4], float mul_lo,
                                           float mul_hi, int64_t row_lo, int64_t T) {
  const int quad = threadIdx.x & 3;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    if (row_lo + 8 * half >= T) continue;
    const float mul = half == 0 ? mul_lo : mul_hi;
    bf16* row = dst + 8 * half * stride;
#pragma unroll
    for (int j = 0; j < NT; ++j)
      *reinterpret_cast<uint32_t*>(row + 8 * j + 2 * quad) =
          pack_bf16(acc[j][2 * half] * mul, acc[j][2 * half + 1] * mul);
  }
}

// Step i of n of the two-stage cp.async pipeline: tile i has landed for every thread, the stage
// of tile i-1 is free, and tile i+1 starts loading into it (prefetch(i + 1)) while tile i is used.
template <class Prefetch>
__device__ __forceinline__ void pipeline_step(int64_t i, int64_t n, const Prefetch& prefetch) {
  cp_async_wait<0>();
  __syncthreads();
  if (i + 1 < n) prefetch(i + 1);
  cp_async_commit();
}

// Key tile i (keys 64i..64i+63) of one kv head into stage i&1: K and V rows (k_src, v_src = the
// head's first column in row 0) and key_bias = 0 for a visible key, -inf for a masked one or one
// past T. Whole block.
template <int HS>
__device__ __forceinline__ void prefetch_key_tile(int64_t i, bf16* Ks, bf16* Vs, float* key_bias, const bf16* k_src,
                                                  const bf16* v_src, int64_t W, const int32_t* mask_b, int64_t T) {
  const int stage = int(i & 1);
  const int64_t k0 = i * kRows;
  load_tile_async<HS>(Ks + stage * Shape<HS>::kTile, k_src, W, k0, T);
  load_tile_async<HS>(Vs + stage * Shape<HS>::kTile, v_src, W, k0, T);
  if (threadIdx.x < kRows) {
    const int64_t s = k0 + threadIdx.x;
    key_bias[stage * kRows + threadIdx.x] = (s < T && mask_b[s] == 1) ? 0.0f : -INFINITY;
  }
}

// The backward's probabilities and their gradient on one warp's 16 x 8NT block, recomputed:
//   S = a_s b_s^T, dP = a_dp b_dp^T (K = HS);  P = 2^(S scale log2 e - lse2) where visible, else 0;
//   dS = P (dP - D)  -> s = P, dp = dS.
// visible(col, e), lse2(col, e), D(col, e): for accumulator element e in column col (0..8NT-1), the
// mask and the query's lse log2 e and D (per row in the dQ pass, per column in the dK/dV pass).
template <int HS, int NT, class Visible, class Lse2, class Dot>
__device__ __forceinline__ void recompute_p_ds(float (&s)[NT][4], float (&dp)[NT][4], const bf16* a_s, const bf16* b_s,
                                               const bf16* a_dp, const bf16* b_dp, float scale_log2,
                                               const Visible& visible, const Lse2& lse2, const Dot& D) {
  constexpr int kStride = Shape<HS>::kStride;
  zero(s);
  zero(dp);
  warp_mma_abt<NT, Shape<HS>::kSteps>(s, a_s, kStride, b_s, kStride);
  warp_mma_abt<NT, Shape<HS>::kSteps>(dp, a_dp, kStride, b_dp, kStride);
  const int quad = threadIdx.x & 3;
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = 8 * j + 2 * quad + (e & 1);
      const float p = visible(col, e) ? exp2f(s[j][e] * scale_log2 - lse2(col, e)) : 0.0f;
      s[j][e] = p;
      dp[j][e] = p * (dp[j][e] - D(col, e));
    }
}

// What the forward and dQ blocks own, grid (ceil(T/64), NH, B): queries q0..q0+63 of head h of
// batch row b (longest rows first: blockIdx.x counts from the end), reading kv head g; the key
// tiles they stream (causal: none past the last owned query); the block's rows of qkv and mask.
template <int HS>
struct QueryBlock {
  int64_t q0, b;
  int h, g, tiles;
  int64_t W;                    // qkv row width
  const bf16 *base, *k_src, *v_src;  // row 0 of batch row b: whole, kv head g's k and v columns
  const int32_t* mask_b;
  __device__ QueryBlock(const bf16* qkv, const int32_t* mask, int64_t T, int NH, int NKV)
      : q0(int64_t(gridDim.x - 1 - blockIdx.x) * kRows), b(blockIdx.z), h(blockIdx.y), g(h / (NH / NKV)),
        tiles(int((min(T, q0 + kRows) + kRows - 1) / kRows)), W(int64_t(NH + 2 * NKV) * HS), base(qkv + b * T * W),
        k_src(base + int64_t(NH + g) * HS), v_src(base + int64_t(NH + NKV + g) * HS), mask_b(mask + b * T) {}
};

// ---- forward ------------------------------------------------------------------------------------
// grid (ceil(T/64), NH, B), 128 threads: the block owns queries q0..q0+63 of head h (longest rows
// first), key tiles of kv head g stream through. Per warp (16 queries) and key tile, in the log2
// domain (s2 = q.k scale log2 e):
//   S = Q K^T (warp_mma_abt);  masked / future keys -> -inf;  m = running row max (quad shuffles);
//   P = 2^(s2 - m);  l = l 2^(m_old - m) + rowsum P;  O = O 2^(m_old - m) + P V (P re-packed to
//   bf16 A fragments, V by ldmatrix.trans)
// At the end out = O / l, lse = (m + log2 l) ln 2; a row with no visible key has l = 0: out 0, lse -inf.
// Shared: key_bias [2][64] f32 (0 visible, -inf masked or past T), Q [64][HS+8], K, V [2][64][HS+8].
template <int HS>
__global__ void __launch_bounds__(kThreads)
flash_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv,
                     const int32_t* __restrict__ mask, int64_t T, int NH, int NKV) {
  using Sh = Shape<HS>;
  PPO_DYNAMIC_SHARED(float, smem);
  float* key_bias = smem;
  bf16* Qs = reinterpret_cast<bf16*>(key_bias + 2 * kRows);
  bf16* Ks = Qs + Sh::kTile;
  bf16* Vs = Ks + 2 * Sh::kTile;

  const QueryBlock<HS> blk(qkv, mask, T, NH, NKV);
  const int64_t q0 = blk.q0, b = blk.b;
  const int h = blk.h, tiles = blk.tiles;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quad = lane & 3;
  auto prefetch = [&](int64_t i) {
    prefetch_key_tile<HS>(i, Ks, Vs, key_bias, blk.k_src, blk.v_src, blk.W, blk.mask_b, T);
  };
  load_tile_async<HS>(Qs, blk.base + int64_t(h) * HS, blk.W, q0, T);
  prefetch(0);
  cp_async_commit();

  const int64_t row_lo = q0 + warp * 16 + (lane >> 2), row_hi = row_lo + 8;
  const float scale_log2 = rsqrtf(float(HS)) * kLog2e;
  float o[Sh::kDimTiles][4];
  zero(o);
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

  for (int i = 0; i < tiles; ++i) {
    const int stage = i & 1;
    pipeline_step(i, tiles, prefetch);  // (Q landed with tile 0)

    float s[8][4];
    zero(s);
    warp_mma_abt<8, Sh::kSteps>(s, Qs + warp * 16 * Sh::kStride, Sh::kStride, Ks + stage * Sh::kTile, Sh::kStride);

    // Scale, mask (key mask; causal only on the tile that crosses the diagonal), row max over the
    // quad (the 4 lanes holding one row).
    const int64_t k0 = int64_t(i) * kRows;
    const bool diagonal = k0 + kRows - 1 > q0;
    const float* bias = key_bias + stage * kRows;
    float mx_lo = m_lo, mx_hi = m_hi;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * j + 2 * quad + e;
        s[j][e] = s[j][e] * scale_log2 + bias[col];
        s[j][2 + e] = s[j][2 + e] * scale_log2 + bias[col];
        if (diagonal) {
          if (k0 + col > row_lo) s[j][e] = -INFINITY;
          if (k0 + col > row_hi) s[j][2 + e] = -INFINITY;
        }
        mx_lo = fmaxf(mx_lo, s[j][e]);
        mx_hi = fmaxf(mx_hi, s[j][2 + e]);
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
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[j][e] = exp2f(s[j][e] - use_lo);
        s[j][2 + e] = exp2f(s[j][2 + e] - use_hi);
        sum_lo += s[j][e];
        sum_hi += s[j][2 + e];
      }
#pragma unroll
    for (int j = 0; j < Sh::kDimTiles; ++j) {
      o[j][0] *= alpha_lo;
      o[j][1] *= alpha_lo;
      o[j][2] *= alpha_hi;
      o[j][3] *= alpha_hi;
    }
    l_lo = l_lo * alpha_lo + sum_lo;  // this lane's columns; the quad's partial sums are added at the end
    l_hi = l_hi * alpha_hi + sum_hi;

    uint32_t p[4][4];
    accumulators_to_a(p, s);
    warp_mma_ab<Sh::kDimTiles, 4>(o, p, Vs + stage * Sh::kTile, Sh::kStride);
  }

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const int64_t OW = int64_t(NH) * HS;
  store_rows(out + (b * T + row_lo) * OW + int64_t(h) * HS, OW, o, l_lo > 0.0f ? 1.0f / l_lo : 0.0f,
             l_hi > 0.0f ? 1.0f / l_hi : 0.0f, row_lo, T);
  if (quad == 0) {
    float* lse_bh = lse + (b * NH + h) * T;
    if (row_lo < T) lse_bh[row_lo] = l_lo > 0.0f ? (m_lo + log2f(l_lo)) * kLn2 : -INFINITY;
    if (row_hi < T) lse_bh[row_hi] = l_hi > 0.0f ? (m_hi + log2f(l_hi)) * kLn2 : -INFINITY;
  }
}

// ---- backward: dQ (and D) -----------------------------------------------------------------------
// grid (ceil(T/64), NH, B), 128 threads: the block owns queries q0..q0+63 of head h and streams key
// tiles. First D_t = sum_d dout[t,d] out[t,d] for the owned rows (written to D for the dK/dV pass),
// then per warp and key tile, with s2 = q.k scale log2 e and lse2 = lse log2 e:
//   S = Q K^T, dP = dO V^T (warp_mma_abt);  P = 2^(s2 - lse2) where visible, else 0;
//   dS = P (dP - D);  dQ += dS K (dS re-packed to bf16, K by ldmatrix.trans);  dq = scale dQ.
// Shared: key_bias [2][64], D [64] f32, Q, dO [64][HS+8], K, V [2][64][HS+8].
template <int HS>
__global__ void __launch_bounds__(kThreads)
flash_backward_dq_kernel(bf16* __restrict__ dqkv, float* __restrict__ D, const bf16* __restrict__ dout,
                         const bf16* __restrict__ qkv, const bf16* __restrict__ out, const float* __restrict__ lse,
                         const int32_t* __restrict__ mask, int64_t T, int NH, int NKV) {
  using Sh = Shape<HS>;
  constexpr int kCols = Sh::kDqCols;
  PPO_DYNAMIC_SHARED(float, smem);
  float* key_bias = smem;
  float* D_s = key_bias + 2 * kRows;
  bf16* Qs = reinterpret_cast<bf16*>(D_s + kRows);
  bf16* dOs = Qs + Sh::kTile;
  bf16* Ks = dOs + Sh::kTile;
  bf16* Vs = Ks + 2 * Sh::kTile;

  const QueryBlock<HS> blk(qkv, mask, T, NH, NKV);
  const int64_t q0 = blk.q0, b = blk.b, W = blk.W, OW = int64_t(NH) * HS;
  const int h = blk.h, tiles = blk.tiles;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  auto prefetch = [&](int64_t i) {
    prefetch_key_tile<HS>(i, Ks, Vs, key_bias, blk.k_src, blk.v_src, W, blk.mask_b, T);
  };
  load_tile_async<HS>(Qs, blk.base + int64_t(h) * HS, W, q0, T);
  load_tile_async<HS>(dOs, dout + b * T * OW + int64_t(h) * HS, OW, q0, T);
  cp_async_commit();
  prefetch(0);
  cp_async_commit();

  const int64_t row_lo = q0 + warp * 16 + (lane >> 2), row_hi = row_lo + 8;
  const float* lse_bh = lse + (b * NH + h) * T;
  const float lse2_lo = row_lo < T ? lse_bh[row_lo] * kLog2e : -INFINITY;
  const float lse2_hi = row_hi < T ? lse_bh[row_hi] * kLog2e : -INFINITY;

  // D for the warp's 16 rows: HS/8 lanes per row, one 16-byte chunk of dO (shared) and out (global)
  // each, summed over the row's lanes by xor shuffles.
  cp_async_wait<1>();
  __syncthreads();  // Q and dO landed
  {
    constexpr int kLanesPerRow = Sh::kChunks, kRowsPerPass = 32 / kLanesPerRow;
    const int chunk = lane % kLanesPerRow;
    for (int r0 = warp * 16; r0 < warp * 16 + 16; r0 += kRowsPerPass) {
      const int r = r0 + lane / kLanesPerRow;
      const int64_t t = q0 + r;
      float partial = 0.0f;
      if (t < T) {
        float o8[8], d8[8];
        load_bf16<8>(o8, out + (b * T + t) * OW + int64_t(h) * HS + chunk * 8);
        load_bf16<8>(d8, dOs + r * Sh::kStride + chunk * 8);
#pragma unroll
        for (int k = 0; k < 8; ++k) partial += o8[k] * d8[k];
      }
#pragma unroll
      for (int off = kLanesPerRow / 2; off > 0; off >>= 1) partial += __shfl_xor_sync(0xffffffffu, partial, off);
      if (chunk == 0) {
        D_s[r] = partial;
        if (t < T) D[(b * NH + h) * T + t] = partial;
      }
    }
    __syncwarp();
  }
  const float D_lo = D_s[warp * 16 + (lane >> 2)], D_hi = D_s[warp * 16 + (lane >> 2) + 8];

  const float scale = rsqrtf(float(HS));
  const float scale_log2 = scale * kLog2e;
  float dq[Sh::kDimTiles][4];
  zero(dq);
  for (int i = 0; i < tiles; ++i) {
    const int stage = i & 1;
    pipeline_step(i, tiles, prefetch);
    const int64_t k0 = int64_t(i) * kRows;
    const bool diagonal = k0 + kRows - 1 > q0;
#pragma unroll 1
    for (int c0 = 0; c0 < kRows; c0 += kCols) {  // keys k0 + c0 .. k0 + c0 + kCols - 1
      const bf16* Kt = Ks + stage * Sh::kTile + c0 * Sh::kStride;
      const bf16* Vt = Vs + stage * Sh::kTile + c0 * Sh::kStride;
      const float* bias = key_bias + stage * kRows + c0;
      float p[kCols / 8][4], ds[kCols / 8][4];
      recompute_p_ds<HS>(
          p, ds, Qs + warp * 16 * Sh::kStride, Kt, dOs + warp * 16 * Sh::kStride, Vt, scale_log2,
          [&](int col, int e) {
            const bool hi = e >= 2;
            return bias[col] == 0.0f && (hi ? lse2_hi : lse2_lo) != -INFINITY &&
                   !(diagonal && k0 + c0 + col > (hi ? row_hi : row_lo));
          },
          [&](int, int e) { return e >= 2 ? lse2_hi : lse2_lo; }, [&](int, int e) { return e >= 2 ? D_hi : D_lo; });
      uint32_t a[kCols / 16][4];
      accumulators_to_a(a, ds);
      warp_mma_ab<Sh::kDimTiles, kCols / 16>(dq, a, Kt, Sh::kStride);
    }
  }
  store_rows(dqkv + (b * T + row_lo) * W + int64_t(h) * HS, W, dq, scale, scale, row_lo, T);
}

// ---- backward: dK, dV ---------------------------------------------------------------------------
// grid (ceil(T/64), NKV, B), 128 threads: the block owns keys s0..s0+63 of kv head g and streams
// query tiles (Q, dO, lse, D) of every query head of the group, heads in order, so dK and dV are
// summed in a fixed order (deterministic, no atomics). Per warp (16 keys) and query tile, the
// transposed products (rows = keys, columns = queries):
//   S^T = K Q^T, dP^T = V dO^T (warp_mma_abt);  P^T = 2^(s2 - lse2) where visible, else 0;
//   dS^T = P^T (dP^T - D);  dV += P^T dO, dK += dS^T Q (re-packed to bf16, dO and Q by
//   ldmatrix.trans);  dk = scale dK.
// Shared: lse2, D [2][64] f32, K, V [64][HS+8] (owned), Q, dO [2][64][HS+8].
template <int HS>
__global__ void __launch_bounds__(kThreads)
flash_backward_dkv_kernel(bf16* __restrict__ dqkv, const float* __restrict__ D, const bf16* __restrict__ dout,
                          const bf16* __restrict__ qkv, const float* __restrict__ lse,
                          const int32_t* __restrict__ mask, int64_t T, int NH, int NKV) {
  using Sh = Shape<HS>;
  constexpr int kCols = Sh::kDkvCols;
  PPO_DYNAMIC_SHARED(float, smem);
  float* lse2_s = smem;
  float* D_s = lse2_s + 2 * kRows;
  bf16* Ks = reinterpret_cast<bf16*>(D_s + 2 * kRows);
  bf16* Vs = Ks + Sh::kTile;
  bf16* Qs = Vs + Sh::kTile;
  bf16* dOs = Qs + 2 * Sh::kTile;

  const int64_t s0 = int64_t(blockIdx.x) * kRows;  // block 0 has the most query tiles: it starts first
  const int g = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int group = NH / NKV;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t W = int64_t(NH + 2 * NKV) * HS, OW = int64_t(NH) * HS;
  const bf16* base = qkv + b * T * W;

  // Query tiles from the one holding key s0 (causal) to the end, for each head of the group.
  const int64_t first_tile = s0 / kRows, per_head = (T + kRows - 1) / kRows - first_tile;
  const int64_t iters = group * per_head;
  auto prefetch = [&](int64_t it) {
    const int stage = int(it & 1);
    const int h = g * group + int(it / per_head);
    const int64_t q0 = (first_tile + it % per_head) * kRows;
    load_tile_async<HS>(Qs + stage * Sh::kTile, base + int64_t(h) * HS, W, q0, T);
    load_tile_async<HS>(dOs + stage * Sh::kTile, dout + b * T * OW + int64_t(h) * HS, OW, q0, T);
    if (threadIdx.x < kRows) {
      const int64_t t = q0 + threadIdx.x;
      const int64_t at = (b * NH + h) * T + t;
      lse2_s[stage * kRows + threadIdx.x] = t < T ? lse[at] * kLog2e : -INFINITY;
      D_s[stage * kRows + threadIdx.x] = t < T ? D[at] : 0.0f;
    }
  };
  load_tile_async<HS>(Ks, base + int64_t(NH + g) * HS, W, s0, T);
  load_tile_async<HS>(Vs, base + int64_t(NH + NKV + g) * HS, W, s0, T);
  prefetch(0);
  cp_async_commit();

  const int64_t key_lo = s0 + warp * 16 + (lane >> 2), key_hi = key_lo + 8;
  const bool ok_lo = key_lo < T && mask[b * T + key_lo] == 1;
  const bool ok_hi = key_hi < T && mask[b * T + key_hi] == 1;
  const float scale = rsqrtf(float(HS));
  const float scale_log2 = scale * kLog2e;
  float dk[Sh::kDimTiles][4], dv[Sh::kDimTiles][4];
  zero(dk);
  zero(dv);

  for (int64_t it = 0; it < iters; ++it) {
    const int stage = int(it & 1);
    pipeline_step(it, iters, prefetch);  // (K, V landed with tile 0)
    const int64_t q0 = (first_tile + it % per_head) * kRows;
    const bool diagonal = s0 + kRows - 1 > q0;  // some owned key lies past some query of the tile
#pragma unroll 1
    for (int c0 = 0; c0 < kRows; c0 += kCols) {  // queries q0 + c0 .. q0 + c0 + kCols - 1
      const bf16* Qt = Qs + stage * Sh::kTile + c0 * Sh::kStride;
      const bf16* dOt = dOs + stage * Sh::kTile + c0 * Sh::kStride;
      const float* lse2 = lse2_s + stage * kRows + c0;
      const float* Dq = D_s + stage * kRows + c0;
      float pt[kCols / 8][4], dst[kCols / 8][4];  // P^T, dS^T
      recompute_p_ds<HS>(
          pt, dst, Ks + warp * 16 * Sh::kStride, Qt, Vs + warp * 16 * Sh::kStride, dOt, scale_log2,
          [&](int col, int e) {
            const bool hi = e >= 2;
            return (hi ? ok_hi : ok_lo) && lse2[col] != -INFINITY &&
                   !(diagonal && (hi ? key_hi : key_lo) > q0 + c0 + col);
          },
          [&](int col, int) { return lse2[col]; }, [&](int col, int) { return Dq[col]; });
      uint32_t a[kCols / 16][4];
      accumulators_to_a(a, pt);
      warp_mma_ab<Sh::kDimTiles, kCols / 16>(dv, a, dOt, Sh::kStride);
      accumulators_to_a(a, dst);
      warp_mma_ab<Sh::kDimTiles, kCols / 16>(dk, a, Qt, Sh::kStride);
    }
  }
  bf16* row = dqkv + (b * T + key_lo) * W;
  store_rows(row + int64_t(NH + g) * HS, W, dk, scale, scale, key_lo, T);
  store_rows(row + int64_t(NH + NKV + g) * HS, W, dv, 1.0f, 1.0f, key_lo, T);
}

}  // namespace tc

// ==== launchers ==================================================================================

template <class Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  PPO_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

struct AttentionArgs {
  bf16* out;
  float* lse;
  bf16* dqkv;
  const bf16* dout;
  const bf16* qkv;
  const bf16* out_in;
  const float* lse_in;
  const int32_t* mask;
  int64_t B, T;
  int NH, NKV, HS;
};

enum class Pass : uint8_t { Forward, Backward };

template <int DPL>
void launch_simt(cudaStream_t stream, Pass pass, const AttentionArgs& a) {
  using namespace simt;
  const unsigned row_blocks = unsigned((a.T + kOwnedRows - 1) / kOwnedRows);
  if (pass == Pass::Forward) {
    const size_t smem = forward_smem(a.HS);
    set_smem(forward_kernel<DPL>, smem);
    PPO_LAUNCH(dim3(row_blocks, unsigned(a.NH), unsigned(a.B)), kThreads, smem, stream, forward_kernel<DPL>, a.out,
               a.lse, a.qkv, a.mask, a.T, a.NH, a.NKV, a.HS);
    return;
  }
  const size_t smem_kv = dkv_smem(a.HS);
  set_smem(backward_dkv_kernel<DPL>, smem_kv);
  PPO_LAUNCH(dim3(row_blocks, unsigned(a.NKV), unsigned(a.B)), kThreads, smem_kv, stream, backward_dkv_kernel<DPL>,
             a.dqkv, a.dout, a.qkv, a.out_in, a.lse_in, a.mask, a.T, a.NH, a.NKV, a.HS);
  const size_t smem_q = dq_smem(a.HS);
  set_smem(backward_dq_kernel<DPL>, smem_q);
  PPO_LAUNCH(dim3(row_blocks, unsigned(a.NH), unsigned(a.B)), kThreads, smem_q, stream, backward_dq_kernel<DPL>,
             a.dqkv, a.dout, a.qkv, a.out_in, a.lse_in, a.mask, a.T, a.NH, a.NKV, a.HS);
}

// Dynamic shared memory of the tensor-core kernels: f32 side arrays, then 64-row bf16 tiles.
template <int HS>
constexpr size_t tc_smem(int floats, int tiles) {
  return size_t(floats) * 4 + size_t(tiles) * tc::Shape<HS>::kTile * 2;
}
template <int HS> constexpr size_t tc_forward_smem = tc_smem<HS>(2 * tc::kRows, 5);   // bias[2]; Q, K[2], V[2]
template <int HS> constexpr size_t tc_dq_smem = tc_smem<HS>(3 * tc::kRows, 6);        // bias[2], D; Q, dO, K[2], V[2]
template <int HS> constexpr size_t tc_dkv_smem = tc_smem<HS>(4 * tc::kRows, 6);       // lse[2], D[2]; K, V, Q[2], dO[2]

template <int HS>
void launch_tc(CudaContext& ctx, Pass pass, const AttentionArgs& a) {
  using namespace tc;
  const char* op = pass == Pass::Forward ? "cuda attention_forward" : "cuda attention_backward";
  const size_t smem = std::max({tc_forward_smem<HS>, tc_dq_smem<HS>, tc_dkv_smem<HS>});
  PPO_ASSERT(smem <= ctx.props.sharedMemPerBlockOptin, op, ": head size ", HS, " needs ", smem,
             " bytes of shared memory per block, the device allows ", ctx.props.sharedMemPerBlockOptin);
  // 16-byte cp.async and vector loads of rows; row strides ((NH+2NKV) HS, NH HS bf16) are 16-byte multiples.
  PPO_ASSERT(aligned16(a.qkv) && aligned16(pass == Pass::Forward ? a.out : a.out_in) &&
                 (pass == Pass::Forward || (aligned16(a.dout) && aligned16(a.dqkv))),
             op, ": the tensor-core path (HS ", HS, ") needs 16-byte aligned qkv, out, dout, dqkv");
  const dim3 grid_q(unsigned((a.T + kRows - 1) / kRows), unsigned(a.NH), unsigned(a.B));
  if (pass == Pass::Forward) {
    set_smem(flash_forward_kernel<HS>, tc_forward_smem<HS>);
    PPO_LAUNCH(grid_q, kThreads, tc_forward_smem<HS>, ctx.stream, flash_forward_kernel<HS>, a.out, a.lse, a.qkv,
               a.mask, a.T, a.NH, a.NKV);
    return;
  }
  ScratchFrame scratch(ctx, op);
  float* D = scratch.take<float>(a.B * a.NH * a.T, "attention D = rowsum(dout*out)");  // (B,NH,T)
  set_smem(flash_backward_dq_kernel<HS>, tc_dq_smem<HS>);
  PPO_LAUNCH(grid_q, kThreads, tc_dq_smem<HS>, ctx.stream, flash_backward_dq_kernel<HS>, a.dqkv, D, a.dout, a.qkv,
             a.out_in, a.lse_in, a.mask, a.T, a.NH, a.NKV);
  const dim3 grid_kv(grid_q.x, unsigned(a.NKV), unsigned(a.B));
  set_smem(flash_backward_dkv_kernel<HS>, tc_dkv_smem<HS>);
  PPO_LAUNCH(grid_kv, kThreads, tc_dkv_smem<HS>, ctx.stream, flash_backward_dkv_kernel<HS>, a.dqkv, D, a.dout, a.qkv,
             a.lse_in, a.mask, a.T, a.NH, a.NKV);
}

// HS 64 and 128 on tensor cores; any other HS <= 256 on the SIMT kernels.
void dispatch_attention(CudaContext& ctx, Pass pass, const AttentionArgs& a) {
  PPO_ASSERT(a.B <= 65535 && a.NH <= 65535, "cuda attention: B=", a.B, " NH=", a.NH, " exceed the grid limit 65535");
  PPO_ASSERT(a.NKV >= 1 && a.NH % a.NKV == 0, "cuda attention: NH=", a.NH, " is not a multiple of NKV=", a.NKV);
  PPO_ASSERT(a.HS >= 1 && a.HS <= 256, "cuda attention: head size ", a.HS, " outside [1, 256]");
  if (a.HS == 64) return a.T == 0 || a.B == 0 ? void() : launch_tc<64>(ctx, pass, a);
  if (a.HS == 128) return a.T == 0 || a.B == 0 ? void() : launch_tc<128>(ctx, pass, a);
  const size_t smem = std::max({simt::forward_smem(a.HS), simt::dkv_smem(a.HS), simt::dq_smem(a.HS)});
  PPO_ASSERT(smem <= ctx.props.sharedMemPerBlockOptin, "cuda attention: head size ", a.HS, " needs ", smem,
             " bytes of shared memory, the device allows ", ctx.props.sharedMemPerBlockOptin);
  if (a.T == 0 || a.B == 0) return;
  cudaStream_t s = ctx.stream;
  if (a.HS <= 32) return launch_simt<1>(s, pass, a);
  if (a.HS <= 64) return launch_simt<2>(s, pass, a);
  if (a.HS <= 128) return launch_simt<4>(s, pass, a);
  return launch_simt<8>(s, pass, a);
}

}  // namespace

void attention_forward(CudaContext& ctx, bf16* out, float* lse, const bf16* qkv, const int32_t* mask, int64_t B,
                       int64_t T, int NH, int NKV, int HS) {
  AttentionArgs a{out, lse, nullptr, nullptr, qkv, nullptr, nullptr, mask, B, T, NH, NKV, HS};
  dispatch_attention(ctx, Pass::Forward, a);
}

void attention_backward(CudaContext& ctx, bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, const int32_t* mask, int64_t B, int64_t T, int NH, int NKV, int HS) {
  AttentionArgs a{nullptr, nullptr, dqkv, dout, qkv, out, lse, mask, B, T, NH, NKV, HS};
  dispatch_attention(ctx, Pass::Backward, a);
}

}  // namespace ppo::cuda
