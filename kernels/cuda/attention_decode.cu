// Decode-time attention over a KV cache, and the cache write.
//   kcache, vcache (B,S,NKV*HS) bf16;  qkv (B,T,(NH+2*NKV)*HS) bf16;  mask (B,S) i32.
//   kv_cache_write: cache[b, start+t, :] = k (resp. v) heads of qkv[b, t].
//   attention_decode: for the single query q = qkv[b,0,h], kv head g = h / (NH/NKV), keys s < length
//   with mask[b,s] == 1:  out[b,h] = sum_s softmax_s(q.k_s / sqrt(HS)) v_s;  out = 0 when no key is
//   visible (as in attention_forward).
// Work split (flash-decoding): a block takes one sequence b, one kv head g with up to kMaxHeads of
// the query heads that read it (the cache rows are read once per group, not once per query head),
// and one split of the keys, [z chunk, (z+1) chunk). Splits (split-K) are used when the blocks of
// one split would leave most of the device idle (B * NKV * head blocks < SMs) and the cache is long:
// each block then writes its softmax state (m, l, acc) to scratch and a second kernel combines the
// splits in order. A length read on the device (a CUDA graph's decode step) gets the split count of
// the longest cache, S; each run then splits its own length evenly (trailing splits may be empty).
// In a block, L lanes read one key row (lane c: 16 bytes, elements 8c..8c+7, when
// HS % 8 == 0 and the tensors are 16-byte aligned; else single bf16 at c, c+L, ...), so a warp
// takes 32/L keys per step (warp w: keys w 32/L + slot, then every 4 32/L). Each group of L lanes
// keeps an online softmax per query head in the log2 domain (s2 = q.k log2(e)/sqrt(HS)):
//   m = max s2,  l = sum 2^(s2 - m),  acc = sum 2^(s2 - m) v;
// states merge as (m, l, acc) (+) (m', l', acc') = (M, l 2^(m-M) + l' 2^(m'-M), acc 2^(m-M) + acc'
// 2^(m'-M)) with M = max(m, m'): the lane groups of a warp by xor shuffles, then the warps in order
// through shared memory, then the splits in order. Fixed orders everywhere: deterministic.
#include <algorithm>
#include <optional>

#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {
namespace {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
// Query heads per block; a larger group takes several blocks (adjacent in the grid, so the second
// read of the same cache rows tends to hit L2). 4 heads: 127 registers (ptxas, sm_90), 4 blocks per
// SM; 8 took 255.
constexpr int kMaxHeads = 4;
constexpr int kElems = 8;              // head elements per lane: HS <= 32 * kElems
constexpr int kMaxHS = 32 * kElems;
constexpr int64_t kMinKeysPerSplit = 64;
constexpr float kLog2e = 1.4426950408889634f;

// One thread per element of the k and v parts of the new rows; start += *start_counter when given
// (outside [0, S-T]: recorded in status, nothing written).
__global__ void kv_cache_write_kernel(bf16* __restrict__ kcache, bf16* __restrict__ vcache,
                                      const bf16* __restrict__ qkv, int64_t B, int64_t T, int64_t S,
                                      const int32_t* start_counter, int64_t start, DeviceStatus* status, int NH,
                                      int NKV, int HS) {
  const int64_t kv_width = int64_t(NKV) * HS;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * T * kv_width) return;
  if (start_counter) {
    start += *start_counter;
    if (!in_range(status, RangeCheck::CacheStart, int32_t(start), S - T + 1, 0)) return;
  }
  const int64_t j = idx % kv_width;
  const int64_t t = (idx / kv_width) % T;
  const int64_t b = idx / (kv_width * T);
  const bf16* row = qkv + (b * T + t) * (int64_t(NH + 2 * NKV) * HS);
  const int64_t dst = (b * S + start + t) * kv_width + j;
  kcache[dst] = row[int64_t(NH) * HS + j];
  vcache[dst] = row[int64_t(NH + NKV) * HS + j];
}

// (m, l, acc) (+)= (m2, l2, acc2), see the file comment; an empty state has m = -inf, l = 0, acc = 0.
__device__ __forceinline__ void merge_state(float& m, float& l, float (&acc)[kElems], float m2, float l2,
                                            const float (&acc2)[kElems]) {
  const float M = fmaxf(m, m2);
  if (M == -INFINITY) return;  // both empty
  const float w = exp2f(m - M), w2 = exp2f(m2 - M);
  l = l * w + l2 * w2;
#pragma unroll
  for (int e = 0; e < kElems; ++e) acc[e] = acc[e] * w + acc2[e] * w2;
  m = M;
}

// The kElems elements of a head row that lane c of L covers: chunk j holds VEC consecutive elements
// from (c + L j) VEC; elements >= HS read as 0. VEC = 8: one 16-byte load.
template <int VEC>
__device__ __forceinline__ void load_lane(float (&x)[kElems], const bf16* row, int c, int L, int HS) {
#pragma unroll
  for (int j = 0; j < kElems / VEC; ++j) {
    const int d = (c + L * j) * VEC;
    float v[VEC];
    if (d < HS) {
      load_bf16<VEC>(v, row + d);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[k] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) x[j * VEC + k] = v[k];
  }
}

// grid (splits, NKV * head_blocks, B), kDecodeThreads threads; L = lanes per key, the smallest power
// of two with L kElems >= HS. Keys s < length (+ *length_counter when given, clamped to [0,S]) in
// splits of ceil(length / splits). Dynamic shared memory: per warp and head acc[HS], m, l. With one
// split the block writes out; otherwise partial[b][h][z] = (acc[HS], m, l).
template <int VEC>
__global__ void __launch_bounds__(kDecodeThreads)
    attention_decode_kernel(bf16* __restrict__ out, float* __restrict__ partial, const bf16* __restrict__ qkv,
                            const bf16* __restrict__ kcache, const bf16* __restrict__ vcache,
                            const int32_t* __restrict__ mask, int64_t S, const int32_t* __restrict__ length_counter,
                            int64_t length, int NH, int NKV, int HS, int L) {
  PPO_DYNAMIC_SHARED(float, smem);
  const int z = blockIdx.x, splits = gridDim.x;
  if (length_counter) length = min(max(length + *length_counter, int64_t(0)), S);
  const int64_t chunk = (length + splits - 1) / splits;
  const int group = NH / NKV, head_blocks = (group + kMaxHeads - 1) / kMaxHeads;
  const int g = blockIdx.y / head_blocks;
  const int h0 = g * group + int(blockIdx.y % head_blocks) * kMaxHeads;
  const int nh = min(kMaxHeads, (g + 1) * group - h0);  // query heads h0 .. h0 + nh - 1
  const int64_t b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int keys_per_warp = 32 / L, slot = lane / L, c = lane % L;

  float q[kMaxHeads][kElems];
  const bf16* q_row = qkv + b * (int64_t(NH + 2 * NKV) * HS);
  const float scale_log2 = rsqrtf(float(HS)) * kLog2e;
#pragma unroll
  for (int i = 0; i < kMaxHeads; ++i) {
    if (i < nh) load_lane<VEC>(q[i], q_row + int64_t(h0 + i) * HS, c, L, HS);
#pragma unroll
    for (int e = 0; e < kElems; ++e) q[i][e] = i < nh ? q[i][e] * scale_log2 : 0.0f;
  }

  float m[kMaxHeads], l[kMaxHeads], acc[kMaxHeads][kElems];
#pragma unroll
  for (int i = 0; i < kMaxHeads; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int e = 0; e < kElems; ++e) acc[i][e] = 0.0f;
  }
  const int64_t kv_width = int64_t(NKV) * HS;
  const int64_t begin = int64_t(z) * chunk, end = min(length, begin + chunk);
  for (int64_t s0 = begin + int64_t(warp) * keys_per_warp; s0 < end; s0 += int64_t(kDecodeWarps) * keys_per_warp) {
    const int64_t s = s0 + slot;
    const bool live = s < end && mask[b * S + s] == 1;
    float k[kElems], v[kElems];
    if (live) {
      const int64_t at = (b * S + s) * kv_width + int64_t(g) * HS;
      load_lane<VEC>(k, kcache + at, c, L, HS);
      load_lane<VEC>(v, vcache + at, c, L, HS);
    } else {
#pragma unroll
      for (int e = 0; e < kElems; ++e) k[e] = v[e] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kMaxHeads; ++i) {
      if (i >= nh) continue;  // block-uniform
      float s2 = 0.0f;
#pragma unroll
      for (int e = 0; e < kElems; ++e) s2 += q[i][e] * k[e];
      for (int off = L / 2; off > 0; off >>= 1) s2 += __shfl_xor_sync(0xffffffffu, s2, off);
      if (!live) continue;
      const float m_new = fmaxf(m[i], s2);
      const float alpha = exp2f(m[i] - m_new), p = exp2f(s2 - m_new);  // alpha = 0 on the first key
      l[i] = l[i] * alpha + p;
#pragma unroll
      for (int e = 0; e < kElems; ++e) acc[i][e] = acc[i][e] * alpha + p * v[e];
      m[i] = m_new;
    }
  }

  // The warp's key slots, merged by xor shuffles (slot 0 keeps the result); then slot 0 of each warp
  // stores its states.
  for (int off = L; off < 32; off <<= 1)
#pragma unroll
    for (int i = 0; i < kMaxHeads; ++i) {
      if (i >= nh) continue;
      float acc2[kElems];
#pragma unroll
      for (int e = 0; e < kElems; ++e) acc2[e] = __shfl_xor_sync(0xffffffffu, acc[i][e], off);
      const float m2 = __shfl_xor_sync(0xffffffffu, m[i], off), l2 = __shfl_xor_sync(0xffffffffu, l[i], off);
      merge_state(m[i], l[i], acc[i], m2, l2, acc2);
    }
  const int row = HS + 2;  // shared state of (warp, head): acc[HS], m, l
  if (slot == 0)
#pragma unroll
    for (int i = 0; i < kMaxHeads; ++i) {
      if (i >= nh) continue;
      float* st = smem + (warp * kMaxHeads + i) * row;
#pragma unroll
      for (int j = 0; j < kElems / VEC; ++j)
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const int d = (c + L * j) * VEC + k;
          if (d < HS) st[d] = acc[i][j * VEC + k];
        }
      if (c == 0) {
        st[HS] = m[i];
        st[HS + 1] = l[i];
      }
    }
  __syncthreads();

  // The warps' states merged in warp order, one thread per (head, element).
  for (int idx = threadIdx.x; idx < nh * HS; idx += kDecodeThreads) {
    const int i = idx / HS, d = idx % HS;
    float M = -INFINITY;
    for (int w = 0; w < kDecodeWarps; ++w) M = fmaxf(M, smem[(w * kMaxHeads + i) * row + HS]);
    float sum = 0.0f, total = 0.0f;
    if (M != -INFINITY)
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float* st = smem + (w * kMaxHeads + i) * row;
        const float weight = exp2f(st[HS] - M);  // 0 for a warp that saw no key
        sum += weight * st[d];
        total += weight * st[HS + 1];
      }
    const int64_t bh = b * NH + h0 + i;
    if (splits == 1) {
      out[bh * HS + d] = bf16_from_f32(total > 0.0f ? sum / total : 0.0f);
    } else {
      float* p = partial + (bh * splits + z) * row;
      p[d] = sum;
      if (d == 0) {
        p[HS] = M;
        p[HS + 1] = total;
      }
    }
  }
}

// grid (NH, B): out[b,h] from the splits' states partial[b][h][z] = (acc[HS], m, l), merged in z order.
__global__ void __launch_bounds__(kDecodeThreads)
attention_decode_combine_kernel(bf16* __restrict__ out, const float* __restrict__ partial, int splits, int NH, int HS) {
  const int64_t bh = int64_t(blockIdx.y) * NH + blockIdx.x;
  const int row = HS + 2;
  const float* p = partial + bh * splits * row;
  float M = -INFINITY;
  for (int z = 0; z < splits; ++z) M = fmaxf(M, p[z * row + HS]);
  for (int d = threadIdx.x; d < HS; d += blockDim.x) {
    float sum = 0.0f, total = 0.0f;
    if (M != -INFINITY)
      for (int z = 0; z < splits; ++z) {
        const float weight = exp2f(p[z * row + HS] - M);
        sum += weight * p[z * row + d];
        total += weight * p[z * row + HS + 1];
      }
    out[bh * HS + d] = bf16_from_f32(total > 0.0f ? sum / total : 0.0f);
  }
}

// Keys per split: one split while B * NKV * head blocks fill the device; otherwise enough splits for
// about two blocks per SM, each of at least kMinKeysPerSplit keys.
int64_t decode_chunk(const CudaContext& ctx, int64_t blocks, int64_t length) {
  const int64_t sms = ctx.props.multiProcessorCount;
  if (blocks >= sms) return length;
  const int64_t splits = std::max<int64_t>(1, std::min(ceil_div(2 * sms, blocks), ceil_div(length, kMinKeysPerSplit)));
  return ceil_div(length, splits);
}

void launch_attention_decode(CudaContext& ctx, bf16* out, const bf16* qkv, const bf16* kcache, const bf16* vcache,
                             const int32_t* mask, int64_t B, int64_t S, const int32_t* length_counter, int64_t length,
                             int NH, int NKV, int HS) {
  const char* op = "cuda attention_decode";
  PPO_ASSERT(HS >= 1 && HS <= kMaxHS, op, ": head size ", HS, " outside [1, ", kMaxHS, "]");
  PPO_ASSERT(NKV >= 1 && NH % NKV == 0, op, ": NH=", NH, " is not a multiple of NKV=", NKV);
  const int head_blocks = (NH / NKV + kMaxHeads - 1) / kMaxHeads;
  PPO_ASSERT(B <= 65535 && int64_t(NKV) * head_blocks <= 65535, op, ": B=", B, " or NKV*", head_blocks,
             " exceed the grid limit 65535");
  const int64_t longest = length_counter ? S : length;  // the splits are fixed at launch
  if (B == 0 || longest == 0) return;
  // 16-byte loads when every row (HS elements, 16-byte aligned starts) allows them.
  const bool vec8 = HS % 8 == 0 && aligned16(qkv) && aligned16(kcache) && aligned16(vcache);
  int L = 1;  // lanes per key: the smallest power of two with L * kElems >= HS
  while (L * kElems < HS) L *= 2;
  const int64_t splits = ceil_div(longest, decode_chunk(ctx, B * NKV * head_blocks, longest));
  const dim3 grid(unsigned(splits), unsigned(NKV * head_blocks), unsigned(B));
  const size_t smem = size_t(kDecodeWarps) * kMaxHeads * (HS + 2) * sizeof(float);
  std::optional<ScratchFrame> scratch;
  float* partial = nullptr;
  if (splits > 1) {
    scratch.emplace(ctx, op);
    partial = scratch->take<float>(B * NH * splits * (HS + 2), "attention_decode split states");
  }
  if (vec8)
    PPO_LAUNCH(grid, kDecodeThreads, smem, ctx.stream, attention_decode_kernel<8>, out, partial, qkv, kcache, vcache,
               mask, S, length_counter, length, NH, NKV, HS, L);
  else
    PPO_LAUNCH(grid, kDecodeThreads, smem, ctx.stream, attention_decode_kernel<1>, out, partial, qkv, kcache, vcache,
               mask, S, length_counter, length, NH, NKV, HS, L);
  if (splits > 1)
    PPO_LAUNCH(dim3(unsigned(NH), unsigned(B)), kDecodeThreads, 0, ctx.stream, attention_decode_combine_kernel, out,
               partial, int(splits), NH, HS);
}

}  // namespace

void kv_cache_write(CudaContext& ctx, bf16* kcache, bf16* vcache, const bf16* qkv, int64_t B, int64_t T, int64_t S,
                    const int32_t* start_counter, int64_t start, int NH, int NKV, int HS) {
  PPO_ASSERT(start_counter || (start >= 0 && start + T <= S), "cuda kv_cache_write: positions [", start, ",", start + T,
             ") outside the cache capacity ", S);
  const int64_t total = B * T * int64_t(NKV) * HS;
  if (total == 0) return;
  const int threads = 256;
  PPO_LAUNCH(unsigned((total + threads - 1) / threads), threads, 0, ctx.stream, kv_cache_write_kernel, kcache, vcache,
             qkv, B, T, S, start_counter, start, ctx.status, NH, NKV, HS);
}

void attention_decode(CudaContext& ctx, bf16* out, const bf16* qkv, const bf16* kcache, const bf16* vcache,
                      const int32_t* mask, int64_t B, int64_t S, const int32_t* length_counter, int64_t length, int NH,
                      int NKV, int HS) {
  launch_attention_decode(ctx, out, qkv, kcache, vcache, mask, B, S, length_counter, length, NH, NKV, HS);
}

}  // namespace ppo::cuda
