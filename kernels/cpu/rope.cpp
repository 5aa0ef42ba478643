// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void rope_forward(T* qkv, const int32_t* pos, int64_t B, int64_t T_, int NH, int NKV, int HS, float theta) {
  PPO_FAIL("cpu rope_forward is not implemented yet");
}

template <class T> void rope_backward(T* dqkv, const int32_t* pos, int64_t B, int64_t T_, int NH, int NKV, int HS, float theta) {
  PPO_FAIL("cpu rope_backward is not implemented yet");
}

PPO_CPU_INSTANTIATE(rope_forward)
PPO_CPU_INSTANTIATE(rope_backward)

}  // namespace ppo::cpu
