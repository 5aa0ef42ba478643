// Per-row weights of per-token quantities: x[b,t] *= row_scale[b]. See kernels/backend.h.
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

namespace {

// One grid-stride loop over the B*T entries; entry i is row i / T.
__global__ void scale_rows_kernel(float* x, const float* row_scale, int64_t n, int64_t T) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= row_scale[i / T];
}

constexpr int kThreads = 256;

}  // namespace

void scale_rows(CudaContext& ctx, float* x, const float* row_scale, int64_t B, int64_t T) {
  const int64_t n = B * T;
  if (n == 0) return;
  PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, scale_rows_kernel, x, row_scale, n, T);
}

}  // namespace ppo::cuda
