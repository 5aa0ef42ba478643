// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, int64_t OC) {
  PPO_FAIL("cpu matmul_forward is not implemented yet");
}

template <class T> void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, int64_t N, int64_t C, int64_t OC) {
  PPO_FAIL("cpu matmul_backward is not implemented yet");
}

PPO_CPU_INSTANTIATE(matmul_forward)
PPO_CPU_INSTANTIATE(matmul_backward)

}  // namespace ppo::cpu
