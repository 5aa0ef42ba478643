// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void attention_forward(T* out, T* lse, const T* qkv, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS) {
  PPO_FAIL("cpu attention_forward is not implemented yet");
}

template <class T> void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS) {
  PPO_FAIL("cpu attention_backward is not implemented yet");
}

PPO_CPU_INSTANTIATE(attention_forward)
PPO_CPU_INSTANTIATE(attention_backward)

}  // namespace ppo::cpu
