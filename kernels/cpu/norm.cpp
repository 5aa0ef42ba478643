// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void norm_forward(NormKind kind, T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, float eps) {
  PPO_FAIL("cpu norm_forward is not implemented yet");
}

template <class T> void norm_backward(NormKind kind, T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, const T* mean, const T* rstd, int64_t N, int64_t C) {
  PPO_FAIL("cpu norm_backward is not implemented yet");
}

template <class T> void residual_forward(T* out, const T* a, const T* b, int64_t n) {
  PPO_FAIL("cpu residual_forward is not implemented yet");
}

PPO_CPU_INSTANTIATE(norm_forward)
PPO_CPU_INSTANTIATE(norm_backward)
PPO_CPU_INSTANTIATE(residual_forward)

}  // namespace ppo::cpu
