// STUB: replaced by the real implementation.
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

void rope(CudaContext& ctx, bf16* qkv, const int32_t* pos, int64_t B, int64_t T, int NH, int NKV, int HS, float theta, bool inverse) {
  PPO_FAIL("cuda rope is not implemented yet");
}

}  // namespace ppo::cuda
