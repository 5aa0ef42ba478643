// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void kl_penalty(T* kl, const T* logp, const T* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator) {
  PPO_FAIL("cpu kl_penalty is not implemented yet");
}

template <class T> void gae_reverse_scan(T* advantages, T* returns, const T* rewards, const T* values, const int32_t* mask, int64_t B, int64_t T_, float gamma, float lambda) {
  PPO_FAIL("cpu gae_reverse_scan is not implemented yet");
}

template <class T> MaskedMoments masked_moments(const T* x, const int32_t* mask, int64_t n) {
  PPO_FAIL("cpu masked_moments is not implemented yet");
}

template <class T> void masked_affine(T* x, const int32_t* mask, int64_t n, float shift, float scale) {
  PPO_FAIL("cpu masked_affine is not implemented yet");
}

template <class T> PolicyLossSums ppo_policy_loss(T* dlogp, const T* logp, const T* old_logp, const T* advantages, const int32_t* mask, int64_t n, float clip_eps, float dual_clip, float token_weight) {
  PPO_FAIL("cpu ppo_policy_loss is not implemented yet");
}

template <class T> ValueLossSums ppo_value_loss(T* dvalues, const T* values, const T* old_values, const T* returns, const int32_t* mask, int64_t n, float clip_value, float token_weight) {
  PPO_FAIL("cpu ppo_value_loss is not implemented yet");
}

PPO_CPU_INSTANTIATE(kl_penalty)
PPO_CPU_INSTANTIATE(gae_reverse_scan)
PPO_CPU_INSTANTIATE(masked_moments)
PPO_CPU_INSTANTIATE(masked_affine)
PPO_CPU_INSTANTIATE(ppo_policy_loss)
PPO_CPU_INSTANTIATE(ppo_value_loss)

}  // namespace ppo::cpu
