// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWParams& hp) {
  PPO_FAIL("cpu adamw_update is not implemented yet");
}

template <class T> double sum_squares(const T* x, int64_t n) {
  PPO_FAIL("cpu sum_squares is not implemented yet");
}

PPO_CPU_INSTANTIATE(adamw_update)
PPO_CPU_INSTANTIATE(sum_squares)

}  // namespace ppo::cpu
