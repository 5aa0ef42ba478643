// AdamW on f32 master weights and moments, bf16 parameters by stochastic rounding, over a model's
// whole parameter set in one launch; the sum of squares for global-norm clipping. See kernels/backend.h.
#include <cmath>

#include "engine/philox.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

namespace {

// Thread j updates elements 4j .. 4j+3 (one Philox draw gives the 4 x 32 random bits):
//   clip from grad_sumsq (read here: no host round trip); a non-finite sum skips the whole update
//   g = grad (grad_scale clip);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   master -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd_i master),  bc1 = 1-b1^step, bc2 = 1-b2^step,
//   wd_i = weight_decay for i < decayed;  param[i] = stochastic_round(master[i]) with bits
//   philox_draw(seed, 0, first / 4 + i / 4).v[i % 4]  (first: element 0's index in the whole set)
__global__ void adamw_kernel(bf16* param, float* master, const float* grad, float* m, float* v, int64_t n,
                             int64_t decayed, const double* grad_sumsq, float max_grad_norm, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float grad_scale, float bc1, float bc2,
                             uint64_t seed, int64_t first) {
  const double norm = sqrt(*grad_sumsq);
  if (!isfinite(norm)) return;
  const float clip = max_grad_norm > 0.0f ? float(fmin(1.0, double(max_grad_norm) / (norm + 1e-6))) : 1.0f;
  const float scale = grad_scale * clip;
  const int64_t groups = (n + 3) / 4;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < groups; j += int64_t(gridDim.x) * blockDim.x) {
    const Philox4x32 bits = philox_draw(seed, 0, uint64_t(first / 4 + j));
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * j + k;
      if (i >= n) break;
      const float g = grad[i] * scale;
      const float mi = beta1 * m[i] + (1.0f - beta1) * g;
      const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
      const float mhat = mi / bc1, vhat = vi / bc2;
      const float wd = i < decayed ? weight_decay : 0.0f;
      const float w = master[i] - lr * (mhat / (sqrtf(vhat) + eps) + wd * master[i]);
      m[i] = mi;
      v[i] = vi;
      master[i] = w;
      param[i] = bf16_from_f32_stochastic(w, bits.v[k]);
    }
  }
}

// First pass of sum_i x[i]^2: block b accumulates (in double) a grid-stride share, partial[b].
__global__ void sum_squares_partial_kernel(double* partial, const float* x, int64_t n) {
  double acc[1] = {0.0};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double xi = x[i];
    acc[0] += xi * xi;
  }
  block_sum<1>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}

}  // namespace

void adamw_update(CudaContext& ctx, bf16* param, float* master, const float* grad, float* m, float* v, int64_t n,
                  int64_t decayed, const double* grad_sumsq, float max_grad_norm, const AdamWParams& hp,
                  uint64_t seed) {
  if (n == 0) return;
  PPO_ASSERT(hp.first_element % 4 == 0, "adamw_update: first_element ", hp.first_element, " is not a multiple of 4");
  const float bc1 = float(1.0 - std::pow(double(hp.beta1), double(hp.step)));
  const float bc2 = float(1.0 - std::pow(double(hp.beta2), double(hp.step)));
  const int threads = 256;
  PPO_LAUNCH(grid_for(ctx, (n + 3) / 4, threads), threads, 0, ctx.stream, adamw_kernel, param, master, grad, m, v, n,
             decayed, grad_sumsq, max_grad_norm, hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.grad_scale, bc1,
             bc2, seed, hp.first_element);
}

// Deterministic: the first pass's grid depends on n only (reduce_blocks), the second pass sums the
// block partials in a fixed order, into `out` on the device.
void sum_squares(CudaContext& ctx, double* out, const float* x, int64_t n) {
  if (n == 0) {
    PPO_CHECK_CUDA(cudaMemsetAsync(out, 0, sizeof(double), ctx.stream));
    return;
  }
  const int blocks = reduce_blocks(n);
  ScratchFrame scratch(ctx, "sum_squares");
  double* partial = scratch.take<double>(blocks, "sum_squares partials");
  PPO_LAUNCH(blocks, kReduceThreads, 0, ctx.stream, sum_squares_partial_kernel, partial, x, n);
  sum_partials<1>(ctx, out, partial, blocks);
}

}  // namespace ppo::cuda
