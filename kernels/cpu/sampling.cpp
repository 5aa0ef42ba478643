// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void sample_tokens(int32_t* tokens, T* logp, const T* logits, int64_t B, int64_t V, float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream, T* scratch) {
  PPO_FAIL("cpu sample_tokens is not implemented yet");
}

PPO_CPU_INSTANTIATE(sample_tokens)

}  // namespace ppo::cpu
