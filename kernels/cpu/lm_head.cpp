// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

int64_t lm_scratch_elems(int64_t V) {
  PPO_FAIL("cpu lm_scratch_elems is not implemented yet");
}

template <class T> void lm_logprob_entropy_forward(T* logp, T* entropy, T* lse, const T* hidden, const T* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch) {
  PPO_FAIL("cpu lm_logprob_entropy_forward is not implemented yet");
}

template <class T> void lm_logprob_entropy_backward(T* dhidden, T* dwte, const T* g_logp, const T* g_entropy, const T* hidden, const T* wte, const int32_t* targets, const T* lse, const T* entropy, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch) {
  PPO_FAIL("cpu lm_logprob_entropy_backward is not implemented yet");
}

PPO_CPU_INSTANTIATE(lm_logprob_entropy_forward)
PPO_CPU_INSTANTIATE(lm_logprob_entropy_backward)

}  // namespace ppo::cpu
