// Decode-time attention over a KV cache, and the cache write.
//   kcache, vcache (B,S,NKV*HS) bf16;  qkv (B,T,(NH+2*NKV)*HS) bf16;  mask (B,S) i32.
//   kv_cache_write: cache[b, start+t, :] = k (resp. v) heads of qkv[b, t].
//   attention_decode: for the single query q = qkv[b,0,h], kv head g = h / (NH/NKV), keys s < length
//   with mask[b,s] == 1:  out[b,h] = sum_s softmax_s(q.k_s / sqrt(HS)) v_s;  out = 0 when no key is
//   visible (as in attention_forward).
// Work split: one block per (b, h); its warps take interleaved keys (warp w: s = w, w+W, ...), each
// keeping an online softmax (max m, sum l, accumulator over HS) with lanes over head dimensions;
// the W partial states are combined in warp order through shared memory, so the result does not
// depend on timing (deterministic).
#include "kernels/cuda/context.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {
namespace {

constexpr int kDecodeWarps = 8;

// One thread per element of the k and v parts of the new rows.
__global__ void kv_cache_write_kernel(bf16* __restrict__ kcache, bf16* __restrict__ vcache, const bf16* __restrict__ qkv,
                                      int64_t B, int64_t T, int64_t S, int64_t start, int NH, int NKV, int HS) {
  const int64_t kv_width = int64_t(NKV) * HS;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * T * kv_width) return;
  const int64_t j = idx % kv_width;
  const int64_t t = (idx / kv_width) % T;
  const int64_t b = idx / (kv_width * T);
  const bf16* row = qkv + (b * T + t) * (int64_t(NH + 2 * NKV) * HS);
  const int64_t dst = (b * S + start + t) * kv_width + j;
  kcache[dst] = row[int64_t(NH) * HS + j];
  vcache[dst] = row[int64_t(NH + NKV) * HS + j];
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// DPL = head dimensions per lane (lane owns d = lane + 32*j, j < DPL); HS <= 32*DPL.
// grid (NH, B), block kDecodeWarps*32; dynamic shared memory: q (HS) + per warp (m, l, acc[HS]).
template <int DPL>
__global__ void __launch_bounds__(kDecodeWarps * 32)
attention_decode_kernel(bf16* __restrict__ out, const bf16* __restrict__ qkv, const bf16* __restrict__ kcache,
                        const bf16* __restrict__ vcache, const int32_t* __restrict__ mask, int64_t S, int64_t length,
                        int NH, int NKV, int HS) {
  PPO_DYNAMIC_SHARED(float, smem);
  float* partial_acc = smem;                                // [kDecodeWarps][HS]
  float* partial_m = partial_acc + kDecodeWarps * HS;       // [kDecodeWarps]
  float* partial_l = partial_m + kDecodeWarps;              // [kDecodeWarps]
  const int h = blockIdx.x;
  const int64_t b = blockIdx.y;
  const int g = h / (NH / NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float scale = rsqrtf(float(HS));

  const bf16* q = qkv + b * (int64_t(NH + 2 * NKV) * HS) + int64_t(h) * HS;
  float qd[DPL];
#pragma unroll
  for (int j = 0; j < DPL; ++j) {
    const int d = lane + 32 * j;
    qd[j] = d < HS ? f32_from_bf16(q[d]) * scale : 0.0f;
  }

  // Online softmax over this warp's keys; m = -inf until the first visible key.
  float m = -INFINITY, l = 0.0f;
  float acc[DPL];
#pragma unroll
  for (int j = 0; j < DPL; ++j) acc[j] = 0.0f;
  const int64_t kv_width = int64_t(NKV) * HS;
  for (int64_t s = warp; s < length; s += kDecodeWarps) {
    if (mask[b * S + s] != 1) continue;  // uniform across the warp
    const bf16* k = kcache + (b * S + s) * kv_width + int64_t(g) * HS;
    const bf16* v = vcache + (b * S + s) * kv_width + int64_t(g) * HS;
    float partial = 0.0f;
    float vd[DPL];
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = lane + 32 * j;
      partial += d < HS ? qd[j] * f32_from_bf16(k[d]) : 0.0f;
      vd[j] = d < HS ? f32_from_bf16(v[d]) : 0.0f;
    }
    const float score = warp_sum(partial);
    const float m_new = fmaxf(m, score);
    const float alpha = expf(m - m_new);  // 0 on the first visible key (m = -inf)
    const float p = expf(score - m_new);
    l = l * alpha + p;
#pragma unroll
    for (int j = 0; j < DPL; ++j) acc[j] = acc[j] * alpha + p * vd[j];
    m = m_new;
  }
#pragma unroll
  for (int j = 0; j < DPL; ++j) {
    const int d = lane + 32 * j;
    if (d < HS) partial_acc[warp * HS + d] = acc[j];
  }
  if (lane == 0) {
    partial_m[warp] = m;
    partial_l[warp] = l;
  }
  __syncthreads();

  // Combine the warps' states in warp order: M = max m_w, out = sum_w e^{m_w-M} acc_w / sum_w e^{m_w-M} l_w.
  float M = -INFINITY;
  for (int w = 0; w < kDecodeWarps; ++w) M = fmaxf(M, partial_m[w]);
  float L = 0.0f;
  float weight[kDecodeWarps];
#pragma unroll
  for (int w = 0; w < kDecodeWarps; ++w) {
    weight[w] = M == -INFINITY ? 0.0f : expf(partial_m[w] - M);  // a warp with no visible key has m = -inf
    L += weight[w] * partial_l[w];
  }
  bf16* o = out + (b * NH + h) * int64_t(HS);
  for (int d = threadIdx.x; d < HS; d += blockDim.x) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) sum += weight[w] * partial_acc[w * HS + d];
    o[d] = bf16_from_f32(L > 0.0f ? sum / L : 0.0f);
  }
}

void launch_kv_cache_write(cudaStream_t stream, bf16* kcache, bf16* vcache, const bf16* qkv, int64_t B, int64_t T,
                           int64_t S, int64_t start, int NH, int NKV, int HS) {
  const int64_t total = B * T * int64_t(NKV) * HS;
  if (total == 0) return;
  const int threads = 256;
  PPO_LAUNCH(unsigned((total + threads - 1) / threads), threads, 0, stream, kv_cache_write_kernel, kcache, vcache, qkv,
             B, T, S, start, NH, NKV, HS);
}

template <int DPL>
void launch_attention_decode_dpl(cudaStream_t stream, bf16* out, const bf16* qkv, const bf16* kcache, const bf16* vcache,
                                 const int32_t* mask, int64_t B, int64_t S, int64_t length, int NH, int NKV, int HS) {
  const size_t smem = (size_t(kDecodeWarps) * HS + 2 * kDecodeWarps) * sizeof(float);
  PPO_CHECK_CUDA(cudaFuncSetAttribute(attention_decode_kernel<DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  PPO_LAUNCH(dim3(unsigned(NH), unsigned(B)), kDecodeWarps * 32, smem, stream, attention_decode_kernel<DPL>, out, qkv,
             kcache, vcache, mask, S, length, NH, NKV, HS);
}

void launch_attention_decode(cudaStream_t stream, bf16* out, const bf16* qkv, const bf16* kcache, const bf16* vcache,
                             const int32_t* mask, int64_t B, int64_t S, int64_t length, int NH, int NKV, int HS) {
  PPO_ASSERT(B <= 65535, "cuda attention_decode: batch ", B, " exceeds the grid limit 65535");
  if (HS <= 32) return launch_attention_decode_dpl<1>(stream, out, qkv, kcache, vcache, mask, B, S, length, NH, NKV, HS);
  if (HS <= 64) return launch_attention_decode_dpl<2>(stream, out, qkv, kcache, vcache, mask, B, S, length, NH, NKV, HS);
  if (HS <= 128) return launch_attention_decode_dpl<4>(stream, out, qkv, kcache, vcache, mask, B, S, length, NH, NKV, HS);
  if (HS <= 256) return launch_attention_decode_dpl<8>(stream, out, qkv, kcache, vcache, mask, B, S, length, NH, NKV, HS);
  PPO_FAIL("cuda attention_decode: head size ", HS, " > 256 is not supported");
}

}  // namespace

void kv_cache_write(CudaContext& ctx, bf16* kcache, bf16* vcache, const bf16* qkv, int64_t B, int64_t T, int64_t S,
                    int64_t start, int NH, int NKV, int HS) {
  PPO_ASSERT(start >= 0 && start + T <= S, "cuda kv_cache_write: positions [", start, ",", start + T,
             ") outside the cache capacity ", S);
  launch_kv_cache_write(ctx.stream, kcache, vcache, qkv, B, T, S, start, NH, NKV, HS);
}

void attention_decode(CudaContext& ctx, bf16* out, const bf16* qkv, const bf16* kcache, const bf16* vcache,
                      const int32_t* mask, int64_t B, int64_t S, int64_t length, int NH, int NKV, int HS) {
  launch_attention_decode(ctx.stream, out, qkv, kcache, vcache, mask, B, S, length, NH, NKV, HS);
}

}  // namespace ppo::cuda
