// STUB: replaced by the real implementation.
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

void sample_tokens(CudaContext& ctx, int32_t* tokens, float* logp, const bf16* logits, int64_t B, int64_t V, float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream) {
  PPO_FAIL("cuda sample_tokens is not implemented yet");
}

}  // namespace ppo::cuda
