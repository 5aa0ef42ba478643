// STUB: replaced by the real implementation.
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

void fill(CudaContext& ctx, void* data, DType dtype, int64_t n, float value) {
  PPO_FAIL("cuda fill is not implemented yet");
}

void convert(CudaContext& ctx, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  PPO_FAIL("cuda convert is not implemented yet");
}

void slice_columns(CudaContext& ctx, void* dst, const void* src, size_t elem_bytes, int64_t B, int64_t T, int64_t W, int64_t start) {
  PPO_FAIL("cuda slice_columns is not implemented yet");
}

}  // namespace ppo::cuda
