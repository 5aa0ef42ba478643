// STUB: replaced by the real implementation.
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

void matmul_forward(CudaContext& ctx, bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N, int64_t C, int64_t OC) {
  PPO_FAIL("cuda matmul_forward is not implemented yet");
}

void matmul_backward(CudaContext& ctx, bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp, const bf16* weight, int64_t N, int64_t C, int64_t OC) {
  PPO_FAIL("cuda matmul_backward is not implemented yet");
}

}  // namespace ppo::cuda
