// PPO per-token math: KL penalty, GAE reverse scan, masked moments and affine (whitening), fused
// clipped policy and value losses. See kernels/backend.h. All tensors (B,T) = n entries, f32 with
// an i32 mask. Every sum returned to the host is deterministic: per-block partials in double from
// a grid that depends on n only (reduce_blocks), then one block sums them in block order.
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

namespace {

// r = ref_logp - logp;  k1 = -r,  k2 = r^2/2,  k3 = exp(r) - 1 - r;  0 where mask == 0.
__global__ void kl_penalty_kernel(float* kl, const float* logp, const float* ref_logp, const int32_t* mask, int64_t n,
                                  KLEstimator estimator) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float out = 0.0f;
    if (mask[i]) {
      const float r = ref_logp[i] - logp[i];
      switch (estimator) {
        case KLEstimator::K1: out = -r; break;
        case KLEstimator::K2: out = 0.5f * r * r; break;
        case KLEstimator::K3: out = expm1f(r) - r; break;
      }
    }
    kl[i] = out;
  }
}

// dlogp += weight * dKL/dlogp where mask == 1, r = ref_logp - logp:  k1: 1;  k2: -r;  k3: 1 - exp(r)
__global__ void kl_penalty_backward_kernel(float* dlogp, const float* logp, const float* ref_logp, const int32_t* mask,
                                           int64_t n, KLEstimator estimator, float weight) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (!mask[i]) continue;
    const float r = ref_logp[i] - logp[i];
    float g = 0.0f;
    switch (estimator) {
      case KLEstimator::K1: g = 1.0f; break;
      case KLEstimator::K2: g = -r; break;
      case KLEstimator::K3: g = -expm1f(r); break;
    }
    dlogp[i] += weight * g;
  }
}

// One thread per row b, scanning t = T-1 .. 0 (rows are short; the loads are not coalesced):
//   delta_t = r_t + gamma m_{t+1} V_{t+1} - V_t;   A_t = delta_t + gamma lambda m_{t+1} A_{t+1}
//   returns_t = A_t + V_t;   A_t = returns_t = 0 where m_t == 0;   m_T = 0.
// Values and rewards at masked tokens are never read (as in the reference): 0 * NaN padding would be NaN.
__global__ void gae_kernel(float* advantages, float* returns, const float* rewards, const float* values,
                           const int32_t* mask, int64_t B, int64_t T, float gamma, float lambda) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  const int64_t row = b * T;
  float next_value = 0.0f, next_adv = 0.0f;  // m_{t+1} V_{t+1} and m_{t+1} A_{t+1}
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t i = row + t;
    float adv = 0.0f, ret = 0.0f, value = 0.0f;
    if (mask[i]) {
      value = values[i];
      const float delta = rewards[i] + gamma * next_value - value;
      adv = delta + gamma * lambda * next_adv;
      ret = adv + value;
    }
    advantages[i] = adv;
    returns[i] = ret;
    next_value = value;
    next_adv = adv;
  }
}

// Masked moments, pass 1: partial[b] = (sum of x, count) over valid entries of block b's share.
__global__ void masked_sum_kernel(double* partial, const float* x, const int32_t* mask, int64_t n) {
  double acc[2] = {0.0, 0.0};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (mask[i]) {
      acc[0] += double(x[i]);
      acc[1] += 1.0;
    }
  }
  block_sum<2>(acc);
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = acc[0];
    partial[2 * blockIdx.x + 1] = acc[1];
  }
}

// Masked moments, pass 2 (after the totals of pass 1): partial[b] = sum of (x - mean)^2 over valid
// entries, mean = totals[0] / totals[1] read on the device.
__global__ void masked_centered_squares_kernel(double* partial, const float* x, const int32_t* mask, int64_t n,
                                               const double* totals) {
  const double mean = totals[1] > 0 ? totals[0] / totals[1] : 0.0;
  double acc[1] = {0.0};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (mask[i]) {
      const double d = double(x[i]) - mean;
      acc[0] += d * d;
    }
  }
  block_sum<1>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}

// x = (x - shift) scale where mask == 1, else 0.
__global__ void masked_affine_kernel(float* x, const int32_t* mask, int64_t n, float shift, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = mask[i] ? (x[i] - shift) * scale : 0.0f;
}

// Clipped surrogate per valid token, ratio = exp(logp - old_logp), A = advantage:
//   l1 = -A ratio;  l2 = -A clip(ratio, 1-eps, 1+eps);  l = max(l1, l2)
//   dual clip (dual_clip > 1 and A < 0): l = min(l, -dual_clip A)
// dl/dlogp = l1's derivative -A ratio when l1 is the active branch (l1 >= l2, dual clip not
// binding), else 0 (the clipped branch and the dual-clip constant do not depend on logp).
// clipped counts tokens with l2 > l1 (the surrogate clip binds). dlogp = token_weight dl/dlogp.
// partial[b] = (loss, clipped, approx_kl = (logp-old)^2/2, ratio, count) summed over block b's share.
__global__ void ppo_policy_loss_kernel(double* partial, float* dlogp, const float* logp, const float* old_logp,
                                       const float* advantages, const int32_t* mask, int64_t n, float clip_eps,
                                       float dual_clip, float token_weight) {
  double acc[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float grad = 0.0f;
    if (mask[i]) {
      const float log_ratio = logp[i] - old_logp[i];
      const float ratio = expf(log_ratio);
      const float A = advantages[i];
      const float l1 = -A * ratio;
      const float l2 = -A * fminf(fmaxf(ratio, 1.0f - clip_eps), 1.0f + clip_eps);
      float loss = fmaxf(l1, l2);
      bool active = l1 >= l2;
      if (dual_clip > 1.0f && A < 0.0f) {
        const float l3 = -dual_clip * A;
        if (l3 < loss) {
          loss = l3;
          active = false;
        }
      }
      grad = active ? -A * ratio : 0.0f;
      acc[0] += loss;
      acc[1] += l2 > l1 ? 1.0 : 0.0;
      acc[2] += 0.5 * double(log_ratio) * double(log_ratio);
      acc[3] += ratio;
      acc[4] += 1.0;
    }
    dlogp[i] = token_weight * grad;
  }
  block_sum<5>(acc);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < 5; ++k) partial[5 * blockIdx.x + k] = acc[k];
  }
}

// Clipped value loss per valid token: vc = old + clip(v - old, -clip_value, clip_value)
//   l = 0.5 max((v-R)^2, (vc-R)^2);  dl/dv = (v - R) when the unclipped term is active (>=), else 0
//   (then vc is clipped: constant in v). Inside the range vc is v itself, not the f32 old + (v - old),
//   which can miss v by an ulp and count a spurious clip.
// clipped counts tokens with (vc-R)^2 > (v-R)^2. dvalues = token_weight dl/dv.
// partial[b] = (loss, clipped, count).
__global__ void ppo_value_loss_kernel(double* partial, float* dvalues, const float* values, const float* old_values,
                                      const float* returns, const int32_t* mask, int64_t n, float clip_value,
                                      float token_weight) {
  double acc[3] = {0.0, 0.0, 0.0};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float grad = 0.0f;
    if (mask[i]) {
      const float v = values[i], old = old_values[i], R = returns[i];
      const float step = v - old;
      const float vc = fabsf(step) <= clip_value ? v : old + copysignf(clip_value, step);
      const float e1 = v - R, e2 = vc - R;
      const float s1 = e1 * e1, s2 = e2 * e2;
      grad = s1 >= s2 ? e1 : 0.0f;
      acc[0] += 0.5 * double(fmaxf(s1, s2));
      acc[1] += s2 > s1 ? 1.0 : 0.0;
      acc[2] += 1.0;
    }
    dvalues[i] = token_weight * grad;
  }
  block_sum<3>(acc);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < 3; ++k) partial[3 * blockIdx.x + k] = acc[k];
  }
}

constexpr int kThreads = 256;

}  // namespace

void kl_penalty(CudaContext& ctx, float* kl, const float* logp, const float* ref_logp, const int32_t* mask, int64_t n,
                KLEstimator estimator) {
  if (n == 0) return;
  PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, kl_penalty_kernel, kl, logp, ref_logp, mask, n,
             estimator);
}

void kl_penalty_backward(CudaContext& ctx, float* dlogp, const float* logp, const float* ref_logp, const int32_t* mask,
                         int64_t n, KLEstimator estimator, float weight) {
  if (n == 0) return;
  PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, kl_penalty_backward_kernel, dlogp, logp, ref_logp,
             mask, n, estimator, weight);
}

void gae_reverse_scan(CudaContext& ctx, float* advantages, float* returns, const float* rewards, const float* values,
                      const int32_t* mask, int64_t B, int64_t T, float gamma, float lambda) {
  if (B == 0 || T == 0) return;
  const int threads = 128;
  PPO_LAUNCH(unsigned(ceil_div(B, threads)), threads, 0, ctx.stream, gae_kernel, advantages, returns, rewards, values,
             mask, B, T, gamma, lambda);
}

// Two passes in double: the mean first, then the centred squares (population variance).
// No valid entry gives mean = var = count = 0.
MaskedMoments masked_moments(CudaContext& ctx, const float* x, const int32_t* mask, int64_t n) {
  if (n == 0) return {};
  const int blocks = reduce_blocks(n);
  ScratchFrame scratch(ctx, "masked_moments");
  double* partial = scratch.take<double>(int64_t(blocks) * 2, "moments partials");
  double* totals = scratch.take<double>(3, "moments totals");  // sum, count, sum of squares
  PPO_LAUNCH(blocks, kReduceThreads, 0, ctx.stream, masked_sum_kernel, partial, x, mask, n);
  sum_partials<2>(ctx, totals, partial, blocks);
  PPO_LAUNCH(blocks, kReduceThreads, 0, ctx.stream, masked_centered_squares_kernel, partial, x, mask, n, totals);
  sum_partials<1>(ctx, totals + 2, partial, blocks);
  double host[3];
  PPO_CHECK_CUDA(cudaMemcpyAsync(host, totals, sizeof host, cudaMemcpyDeviceToHost, ctx.stream));
  PPO_CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  MaskedMoments r;
  r.count = host[1];
  if (r.count > 0) {
    r.mean = host[0] / r.count;
    r.var = host[2] / r.count;
  }
  return r;
}

void masked_affine(CudaContext& ctx, float* x, const int32_t* mask, int64_t n, float shift, float scale) {
  if (n == 0) return;
  PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, masked_affine_kernel, x, mask, n, shift, scale);
}

void ppo_policy_loss(CudaContext& ctx, double* sums, float* dlogp, const float* logp, const float* old_logp,
                     const float* advantages, const int32_t* mask, int64_t n, float clip_eps, float dual_clip,
                     float token_weight) {
  if (n == 0) return;
  const int blocks = reduce_blocks(n);
  ScratchFrame scratch(ctx, "ppo_policy_loss");
  double* partial = scratch.take<double>(int64_t(blocks) * 5, "policy loss partials");
  PPO_LAUNCH(blocks, kReduceThreads, 0, ctx.stream, ppo_policy_loss_kernel, partial, dlogp, logp, old_logp, advantages,
             mask, n, clip_eps, dual_clip, token_weight);
  sum_partials<5>(ctx, sums, partial, blocks, Totals::Accumulate);
}

void ppo_value_loss(CudaContext& ctx, double* sums, float* dvalues, const float* values, const float* old_values,
                    const float* returns, const int32_t* mask, int64_t n, float clip_value, float token_weight) {
  if (n == 0) return;
  const int blocks = reduce_blocks(n);
  ScratchFrame scratch(ctx, "ppo_value_loss");
  double* partial = scratch.take<double>(int64_t(blocks) * 3, "value loss partials");
  PPO_LAUNCH(blocks, kReduceThreads, 0, ctx.stream, ppo_value_loss_kernel, partial, dvalues, values, old_values,
             returns, mask, n, clip_value, token_weight);
  sum_partials<3>(ctx, sums, partial, blocks, Totals::Accumulate);
}

void masked_sum(CudaContext& ctx, double* sums, const float* x, const int32_t* mask, int64_t n) {
  if (n == 0) return;
  const int blocks = reduce_blocks(n);
  ScratchFrame scratch(ctx, "masked_sum");
  double* partial = scratch.take<double>(int64_t(blocks) * 2, "masked sum partials");
  PPO_LAUNCH(blocks, kReduceThreads, 0, ctx.stream, masked_sum_kernel, partial, x, mask, n);
  sum_partials<2>(ctx, sums, partial, blocks, Totals::Accumulate);
}

}  // namespace ppo::cuda
