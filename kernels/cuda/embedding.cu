// STUB: replaced by the real implementation.
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

void embedding_forward(CudaContext& ctx, bf16* out, const int32_t* tokens, const int32_t* pos, const bf16* wte, const bf16* wpe, int64_t N, int64_t C) {
  PPO_FAIL("cuda embedding_forward is not implemented yet");
}

void embedding_backward(CudaContext& ctx, float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens, const int32_t* pos, int64_t N, int64_t C, int64_t V, int64_t P) {
  PPO_FAIL("cuda embedding_backward is not implemented yet");
}

}  // namespace ppo::cuda
