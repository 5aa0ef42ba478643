// Fused vocabulary pass: log-prob of the target token and entropy, forward and backward, without
// storing probabilities beyond one chunk of rows.
//   z(N,V) = s * hidden(N,C) @ wte(V,C)^T,  s = inv_temperature
//   lse[n] = log sum_v e^{z[n,v]};  logp[n] = z[n,target] - lse[n];  entropy[n] = lse[n] - sum_v p_v z[n,v]
// Rows are processed in chunks of R (<= 256, bounded by the scratch left): one cuBLAS GEMM writes the
// chunk's logits (R,V) in f32 into scratch, then one block per row reduces them.
// Backward, per chunk: recompute the f32 logits, then a row kernel writes
//   dz'[n,v] = s * (g_logp (1[v==target] - p_v) - g_ent p_v (log p_v + entropy[n]))
// as bf16 into a second scratch buffer (R,V); then two bf16 GEMMs with f32 accumulation:
//   dhidden(R,C) = dz' @ wte (bf16 out, =)   and   dwte(V,C) += dz'^T @ hidden (f32, beta = 1).
// dz' is rounded to bf16 because cuBLAS has no f32 x bf16 GEMM and an f32 copy of wte would cost
// V*C*4 bytes; this is the precision PyTorch's bf16 autocast uses for the same product.
// Scratch per chunk row: V*4 (logits) + V*2 (bf16 dz'), see cuda_scratch_bytes.
#include <algorithm>

#include "kernels/cuda/context.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {
namespace {

constexpr int kRowThreads = 512;
constexpr int64_t kMaxChunkRows = 256;

// Online softmax state relative to its own max m: l = sum e^{z-m}, t = sum e^{z-m} (z-m).
// entropy = log l - t/l (= lse - E[z]), lse = m + log l.
struct SoftmaxStats {
  float m, l, t;
};

__device__ __forceinline__ SoftmaxStats merge(SoftmaxStats a, SoftmaxStats b) {
  const float M = fmaxf(a.m, b.m);
  if (M == -INFINITY) return {M, 0.0f, 0.0f};
  const float ea = a.m == -INFINITY ? 0.0f : expf(a.m - M);
  const float eb = b.m == -INFINITY ? 0.0f : expf(b.m - M);
  // sum e^{z-M}(z-M) over a = e^{m_a-M} (t_a + (m_a-M) l_a)
  const float ta = a.l > 0.0f ? ea * (a.t + (a.m - M) * a.l) : 0.0f;
  const float tb = b.l > 0.0f ? eb * (b.t + (b.m - M) * b.l) : 0.0f;
  return {M, a.l * ea + b.l * eb, ta + tb};
}

// Block-wide merge in a fixed tree order (deterministic). Result valid in every thread.
__device__ SoftmaxStats block_merge(SoftmaxStats x) {
  __shared__ SoftmaxStats warp_stats[kRowThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    SoftmaxStats y{__shfl_xor_sync(0xffffffffu, x.m, o), __shfl_xor_sync(0xffffffffu, x.l, o),
                   __shfl_xor_sync(0xffffffffu, x.t, o)};
    x = merge(x, y);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_stats[warp] = x;
  __syncthreads();
  SoftmaxStats r = warp_stats[0];
  for (int w = 1; w < int(blockDim.x / 32); ++w) r = merge(r, warp_stats[w]);
  __syncthreads();
  return r;
}

// One block per chunk row n: logits(R,V) f32 (already scaled by s) -> lse, logp, entropy.
__global__ void __launch_bounds__(kRowThreads)
lm_row_stats_kernel(float* __restrict__ logp, float* __restrict__ entropy, float* __restrict__ lse,
                    const float* __restrict__ logits, const int32_t* __restrict__ targets, int64_t V) {
  const int64_t n = blockIdx.x;
  const float* z = logits + n * V;
  SoftmaxStats st{-INFINITY, 0.0f, 0.0f};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float zv = z[v];
    if (isnan(zv)) {
      st.l = NAN;  // propagates to lse, logp and entropy (the PPO step reports and skips NaN)
    } else if (zv > st.m) {  // rescale to the new max
      const float e = st.m == -INFINITY ? 0.0f : expf(st.m - zv);
      st.t = st.l > 0.0f ? e * (st.t + (st.m - zv) * st.l) : 0.0f;
      st.l = st.l * e + 1.0f;
      st.m = zv;
    } else if (zv > -INFINITY) {
      const float e = expf(zv - st.m);
      st.l += e;
      st.t += e * (zv - st.m);
    }
  }
  st = block_merge(st);
  if (threadIdx.x == 0) {
    const float log_l = logf(st.l);
    const float row_lse = st.m + log_l;
    lse[n] = row_lse;
    logp[n] = z[targets[n]] - row_lse;
    entropy[n] = log_l - st.t / st.l;
  }
}

// One block per chunk row n: dz'[n,v] = s (g_logp (1[v==target] - p) - g_ent p (log p + H)) in bf16,
// p = e^{z - lse}, z the f32 logits (already scaled by s). g_logp / g_ent null mean zero.
__global__ void __launch_bounds__(kRowThreads)
lm_dlogits_kernel(bf16* __restrict__ dz, const float* __restrict__ logits, const float* __restrict__ g_logp,
                  const float* __restrict__ g_entropy, const int32_t* __restrict__ targets, const float* __restrict__ lse,
                  const float* __restrict__ entropy, int64_t V, float s) {
  const int64_t n = blockIdx.x;
  const float* z = logits + n * V;
  bf16* out = dz + n * V;
  const float gl = g_logp ? g_logp[n] : 0.0f;
  const float ge = g_entropy ? g_entropy[n] : 0.0f;
  const float row_lse = lse[n], H = entropy[n];
  const int32_t target = targets[n];
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float log_p = z[v] - row_lse;
    const float p = expf(log_p);
    const float d = gl * ((v == target ? 1.0f : 0.0f) - p) - ge * p * (log_p + H);
    out[v] = bf16_from_f32(s * d);
  }
}

// Row-major logits(R,V) f32 = s * hidden(R,C) @ wte(V,C)^T. Column-major view: logits^T(V,R) =
// wte^T^T(V,C) . hidden^T(C,R), i.e. A = wte (transposed, lda C), B = hidden (ldb C), ldc V.
void gemm_logits(CudaContext& ctx, float* logits, const bf16* hidden, const bf16* wte, int64_t R, int64_t C, int64_t V,
                 float s) {
  const float beta = 0.0f;
  PPO_CHECK_CUBLAS(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(V), int(R), int(C), &s, wte, CUDA_R_16BF,
                                int(C), hidden, CUDA_R_16BF, int(C), &beta, logits, CUDA_R_32F, int(V),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// dhidden(R,C) bf16 = dz(R,V) @ wte(V,C). Column-major: dhidden^T(C,R) = wte^T(C,V) . dz^T(V,R).
void gemm_dhidden(CudaContext& ctx, bf16* dhidden, const bf16* dz, const bf16* wte, int64_t R, int64_t C, int64_t V) {
  const float alpha = 1.0f, beta = 0.0f;
  PPO_CHECK_CUBLAS(cublasGemmEx(ctx.cublas, CUBLAS_OP_N, CUBLAS_OP_N, int(C), int(R), int(V), &alpha, wte, CUDA_R_16BF,
                                int(C), dz, CUDA_R_16BF, int(V), &beta, dhidden, CUDA_R_16BF, int(C),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// dwte(V,C) f32 += dz(R,V)^T @ hidden(R,C). Column-major: dwte^T(C,V) += hidden^T(C,R) . dz(R,V),
// A = hidden (lda C), B = dz^T of the column-major (V,R) view (transposed, ldb V).
void gemm_dwte(CudaContext& ctx, float* dwte, const bf16* dz, const bf16* hidden, int64_t R, int64_t C, int64_t V) {
  const float alpha = 1.0f, beta = 1.0f;
  PPO_CHECK_CUBLAS(cublasGemmEx(ctx.cublas, CUBLAS_OP_N, CUBLAS_OP_T, int(C), int(V), int(R), &alpha, hidden,
                                CUDA_R_16BF, int(C), dz, CUDA_R_16BF, int(V), &beta, dwte, CUDA_R_32F, int(C),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Rows per chunk that fit in what is left of the scratch region at `bytes_per_row` each.
int64_t chunk_rows(const Carver& scratch, int64_t N, int64_t bytes_per_row, const char* op) {
  const size_t slack = 2 * kArenaAlignment;  // each take() may be padded to the alignment
  const size_t left = scratch.capacity() - scratch.used();
  const int64_t fit = left > slack ? int64_t((left - slack) / size_t(bytes_per_row)) : 0;
  PPO_ASSERT(fit >= 1, op, ": scratch has ", left, " bytes left, one vocabulary row needs ", bytes_per_row);
  return std::min({N, kMaxChunkRows, fit});
}

void check_sizes(int64_t C, int64_t V, const char* op) {
  PPO_ASSERT(C <= INT32_MAX && V <= INT32_MAX && V * kMaxChunkRows <= INT64_MAX / 4, op, ": sizes C=", C, " V=", V,
             " exceed the GEMM's int range");
}

void launch_lm_forward(CudaContext& ctx, float* logp, float* entropy, float* lse, const bf16* hidden, const bf16* wte,
                       const int32_t* targets, int64_t N, int64_t C, int64_t V, float s) {
  const char* op = "cuda lm_logprob_entropy_forward";
  PPO_ASSERT(ctx.scratch != nullptr, op, " needs scratch memory: call Backend::set_scratch first");
  check_sizes(C, V, op);
  Carver& scratch = *ctx.scratch;
  const size_t mark = scratch.mark();
  const int64_t R = chunk_rows(scratch, N, V * 4, op);
  float* logits = scratch.take(DType::F32, {R, V}, "lm_logits_chunk").ptr<float>();
  for (int64_t r0 = 0; r0 < N; r0 += R) {
    const int64_t rows = std::min(R, N - r0);
    gemm_logits(ctx, logits, hidden + r0 * C, wte, rows, C, V, s);
    PPO_LAUNCH(unsigned(rows), kRowThreads, 0, ctx.stream, lm_row_stats_kernel, logp + r0, entropy + r0, lse + r0,
               logits, targets + r0, V);
  }
  scratch.rewind(mark);
}

void launch_lm_backward(CudaContext& ctx, bf16* dhidden, float* dwte, const float* g_logp, const float* g_entropy,
                        const bf16* hidden, const bf16* wte, const int32_t* targets, const float* lse,
                        const float* entropy, int64_t N, int64_t C, int64_t V, float s) {
  const char* op = "cuda lm_logprob_entropy_backward";
  PPO_ASSERT(ctx.scratch != nullptr, op, " needs scratch memory: call Backend::set_scratch first");
  check_sizes(C, V, op);
  Carver& scratch = *ctx.scratch;
  const size_t mark = scratch.mark();
  const int64_t R = chunk_rows(scratch, N, V * 6, op);
  float* logits = scratch.take(DType::F32, {R, V}, "lm_logits_chunk").ptr<float>();
  bf16* dz = scratch.take(DType::BF16, {R, V}, "lm_dlogits_chunk").ptr<bf16>();
  for (int64_t r0 = 0; r0 < N; r0 += R) {
    const int64_t rows = std::min(R, N - r0);
    gemm_logits(ctx, logits, hidden + r0 * C, wte, rows, C, V, s);
    PPO_LAUNCH(unsigned(rows), kRowThreads, 0, ctx.stream, lm_dlogits_kernel, dz, logits,
               g_logp ? g_logp + r0 : nullptr, g_entropy ? g_entropy + r0 : nullptr, targets + r0, lse + r0,
               entropy + r0, V, s);
    gemm_dhidden(ctx, dhidden + r0 * C, dz, wte, rows, C, V);
    if (dwte) gemm_dwte(ctx, dwte, dz, hidden + r0 * C, rows, C, V);
  }
  scratch.rewind(mark);
}

}  // namespace

void lm_logprob_entropy_forward(CudaContext& ctx, float* logp, float* entropy, float* lse, const bf16* hidden,
                                const bf16* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                                float inv_temperature) {
  launch_lm_forward(ctx, logp, entropy, lse, hidden, wte, targets, N, C, V, inv_temperature);
}

void lm_logprob_entropy_backward(CudaContext& ctx, bf16* dhidden, float* dwte, const float* g_logp,
                                 const float* g_entropy, const bf16* hidden, const bf16* wte, const int32_t* targets,
                                 const float* lse, const float* entropy, int64_t N, int64_t C, int64_t V,
                                 float inv_temperature) {
  launch_lm_backward(ctx, dhidden, dwte, g_logp, g_entropy, hidden, wte, targets, lse, entropy, N, C, V,
                     inv_temperature);
}

}  // namespace ppo::cuda
