// STUB: replaced by the real implementation.
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

void kv_cache_write(CudaContext& ctx, bf16* kcache, bf16* vcache, const bf16* qkv, int64_t B, int64_t T, int64_t S, int64_t start, int NH, int NKV, int HS) {
  PPO_FAIL("cuda kv_cache_write is not implemented yet");
}

void attention_decode(CudaContext& ctx, bf16* out, const bf16* qkv, const bf16* kcache, const bf16* vcache, const int32_t* mask, int64_t B, int64_t S, int64_t length, int NH, int NKV, int HS) {
  PPO_FAIL("cuda attention_decode is not implemented yet");
}

}  // namespace ppo::cuda
