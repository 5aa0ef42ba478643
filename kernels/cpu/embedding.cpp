// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void embedding_forward(T* out, const int32_t* tokens, const int32_t* pos, const T* wte, const T* wpe, int64_t N, int64_t C) {
  PPO_FAIL("cpu embedding_forward is not implemented yet");
}

template <class T> void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, const int32_t* pos, int64_t N, int64_t C) {
  PPO_FAIL("cpu embedding_backward is not implemented yet");
}

PPO_CPU_INSTANTIATE(embedding_forward)
PPO_CPU_INSTANTIATE(embedding_backward)

}  // namespace ppo::cpu
