// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void gelu_forward(T* out, const T* inp, int64_t n) {
  PPO_FAIL("cpu gelu_forward is not implemented yet");
}

template <class T> void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  PPO_FAIL("cpu gelu_backward is not implemented yet");
}

template <class T> void swiglu_forward(T* out, const T* inp, int64_t N, int64_t F) {
  PPO_FAIL("cpu swiglu_forward is not implemented yet");
}

template <class T> void swiglu_backward(T* dinp, const T* dout, const T* inp, int64_t N, int64_t F) {
  PPO_FAIL("cpu swiglu_backward is not implemented yet");
}

PPO_CPU_INSTANTIATE(gelu_forward)
PPO_CPU_INSTANTIATE(gelu_backward)
PPO_CPU_INSTANTIATE(swiglu_forward)
PPO_CPU_INSTANTIATE(swiglu_backward)

}  // namespace ppo::cpu
