// STUB: replaced by the real implementation.
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

void kl_penalty(CudaContext& ctx, float* kl, const float* logp, const float* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator) {
  PPO_FAIL("cuda kl_penalty is not implemented yet");
}

void gae_reverse_scan(CudaContext& ctx, float* advantages, float* returns, const float* rewards, const float* values, const int32_t* mask, int64_t B, int64_t T, float gamma, float lambda) {
  PPO_FAIL("cuda gae_reverse_scan is not implemented yet");
}

MaskedMoments masked_moments(CudaContext& ctx, const float* x, const int32_t* mask, int64_t n) {
  PPO_FAIL("cuda masked_moments is not implemented yet");
}

void masked_affine(CudaContext& ctx, float* x, const int32_t* mask, int64_t n, float shift, float scale) {
  PPO_FAIL("cuda masked_affine is not implemented yet");
}

PolicyLossSums ppo_policy_loss(CudaContext& ctx, float* dlogp, const float* logp, const float* old_logp, const float* advantages, const int32_t* mask, int64_t n, float clip_eps, float dual_clip, float token_weight) {
  PPO_FAIL("cuda ppo_policy_loss is not implemented yet");
}

ValueLossSums ppo_value_loss(CudaContext& ctx, float* dvalues, const float* values, const float* old_values, const float* returns, const int32_t* mask, int64_t n, float clip_value, float token_weight) {
  PPO_FAIL("cuda ppo_value_loss is not implemented yet");
}

}  // namespace ppo::cuda
