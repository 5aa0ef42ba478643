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
// Implementation: SIMT shared-memory tiles with f32 math (no tensor cores yet; a correct simple
// version first). Every kernel has the same shape: a block owns 16 rows (4 warps x 4 rows) and
// streams tiles of 32 rows of the other side through shared memory, one streamed row per lane:
//   forward:  owns queries, streams keys (K, V); online softmax in f32 per owned query.
//   dK/dV:    owns keys of one kv head, streams queries (Q, dout) of every query head of the group in
//             head order, so dk, dv are summed in a fixed order (deterministic, no atomics).
//   dQ:       owns queries, streams keys (K, V); recomputes P and dS from lse (a second pass instead
//             of atomics: deterministic).
// A lane computes the scores of its streamed row against the warp's 4 owned rows (dot products over
// HS, the streamed tile padded to HS+1 floats per row so lanes hit distinct banks; owned rows are
// broadcast reads), then the warp accumulates with lanes over head dimensions d = lane + 32 j.
// DPL = dims per lane (HS <= 32*DPL); FIXED_HS = HS known at compile time (64, 128), 0 = runtime HS
// (any HS <= 256, e.g. 8 or 24 in tiny test models). D is recomputed where needed (HS work per row
// per block, no scratch).
#include <algorithm>
#include <cmath>

#include "kernels/cuda/context.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kOwnedRows = kWarps * kRowsPerWarp;  // rows a block owns
constexpr int kTileRows = 32;                      // streamed rows per tile, one per lane
constexpr int kThreads = kWarps * 32;

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
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
template <int DPL, int FIXED_HS>
__global__ void __launch_bounds__(kThreads)
attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv,
                         const int32_t* __restrict__ mask, int64_t T, int NH, int NKV, int hs_runtime) {
  const int hs = FIXED_HS ? FIXED_HS : hs_runtime;
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
template <int DPL, int FIXED_HS>
__global__ void __launch_bounds__(kThreads)
attention_backward_dkv_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                              const bf16* __restrict__ out, const float* __restrict__ lse,
                              const int32_t* __restrict__ mask, int64_t T, int NH, int NKV, int hs_runtime) {
  const int hs = FIXED_HS ? FIXED_HS : hs_runtime;
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
template <int DPL, int FIXED_HS>
__global__ void __launch_bounds__(kThreads)
attention_backward_dq_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                             const bf16* __restrict__ out, const float* __restrict__ lse,
                             const int32_t* __restrict__ mask, int64_t T, int NH, int NKV, int hs_runtime) {
  const int hs = FIXED_HS ? FIXED_HS : hs_runtime;
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

// ---- launchers ----------------------------------------------------------------------------------

size_t forward_smem(int hs) { return (size_t(2) * kTileRows * (hs + 1) + size_t(kOwnedRows) * hs + kTileRows) * 4; }
size_t dkv_smem(int hs) {
  return (size_t(2) * kTileRows * (hs + 1) + size_t(2) * kOwnedRows * hs + 2 * kTileRows) * 4;
}
size_t dq_smem(int hs) {
  return (size_t(2) * kTileRows * (hs + 1) + size_t(2) * kOwnedRows * hs + 2 * kOwnedRows + kTileRows) * 4;
}

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

template <int DPL, int FIXED_HS>
void launch_attention(cudaStream_t stream, Pass pass, const AttentionArgs& a) {
  const unsigned row_blocks = unsigned((a.T + kOwnedRows - 1) / kOwnedRows);
  if (pass == Pass::Forward) {
    const size_t smem = forward_smem(a.HS);
    set_smem(attention_forward_kernel<DPL, FIXED_HS>, smem);
    PPO_LAUNCH(dim3(row_blocks, unsigned(a.NH), unsigned(a.B)), kThreads, smem, stream,
               attention_forward_kernel<DPL, FIXED_HS>, a.out, a.lse, a.qkv, a.mask, a.T, a.NH, a.NKV, a.HS);
    return;
  }
  const size_t smem_kv = dkv_smem(a.HS);
  set_smem(attention_backward_dkv_kernel<DPL, FIXED_HS>, smem_kv);
  PPO_LAUNCH(dim3(row_blocks, unsigned(a.NKV), unsigned(a.B)), kThreads, smem_kv, stream,
             attention_backward_dkv_kernel<DPL, FIXED_HS>, a.dqkv, a.dout, a.qkv, a.out_in, a.lse_in, a.mask, a.T, a.NH,
             a.NKV, a.HS);
  const size_t smem_q = dq_smem(a.HS);
  set_smem(attention_backward_dq_kernel<DPL, FIXED_HS>, smem_q);
  PPO_LAUNCH(dim3(row_blocks, unsigned(a.NH), unsigned(a.B)), kThreads, smem_q, stream,
             attention_backward_dq_kernel<DPL, FIXED_HS>, a.dqkv, a.dout, a.qkv, a.out_in, a.lse_in, a.mask, a.T, a.NH,
             a.NKV, a.HS);
}

// HS 64 and 128 get compile-time head sizes; any other HS <= 256 the runtime-HS variant.
void dispatch_attention(CudaContext& ctx, Pass pass, const AttentionArgs& a) {
  PPO_ASSERT(a.B <= 65535 && a.NH <= 65535, "cuda attention: B=", a.B, " NH=", a.NH, " exceed the grid limit 65535");
  PPO_ASSERT(a.NKV >= 1 && a.NH % a.NKV == 0, "cuda attention: NH=", a.NH, " is not a multiple of NKV=", a.NKV);
  const size_t smem = std::max({forward_smem(a.HS), dkv_smem(a.HS), dq_smem(a.HS)});
  PPO_ASSERT(smem <= ctx.props.sharedMemPerBlockOptin, "cuda attention: head size ", a.HS, " needs ", smem,
             " bytes of shared memory, the device allows ", ctx.props.sharedMemPerBlockOptin);
  if (a.T == 0 || a.B == 0) return;
  cudaStream_t s = ctx.stream;
  if (a.HS == 64) return launch_attention<2, 64>(s, pass, a);
  if (a.HS == 128) return launch_attention<4, 128>(s, pass, a);
  if (a.HS <= 32) return launch_attention<1, 0>(s, pass, a);
  if (a.HS <= 64) return launch_attention<2, 0>(s, pass, a);
  if (a.HS <= 128) return launch_attention<4, 0>(s, pass, a);
  if (a.HS <= 256) return launch_attention<8, 0>(s, pass, a);
  PPO_FAIL("cuda attention: head size ", a.HS, " > 256 is not supported");
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
