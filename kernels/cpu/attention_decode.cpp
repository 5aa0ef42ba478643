// STUB: replaced by the real implementation.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void kv_cache_write(T* kcache, T* vcache, const T* qkv, int64_t B, int64_t T_, int64_t S, int64_t start, int NH, int NKV, int HS) {
  PPO_FAIL("cpu kv_cache_write is not implemented yet");
}

template <class T> void attention_decode(T* out, const T* qkv, const T* kcache, const T* vcache, const int32_t* mask, int64_t B, int64_t S, int64_t length, int NH, int NKV, int HS) {
  PPO_FAIL("cpu attention_decode is not implemented yet");
}

PPO_CPU_INSTANTIATE(kv_cache_write)
PPO_CPU_INSTANTIATE(attention_decode)

}  // namespace ppo::cpu
