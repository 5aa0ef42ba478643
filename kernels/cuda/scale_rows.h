// Launcher of kernels/cuda/scale_rows.cu (to join kernels/cuda/ops.h): x[b,t] *= row_scale[b],
// x (B,T) and row_scale (B) f32, on ctx.stream. See kernels/backend.h.
#pragma once
#include <cstdint>
#include "kernels/backend.h"

namespace ppo::cuda {

void scale_rows(CudaContext& ctx, float* x, const float* row_scale, int64_t B, int64_t T);

}  // namespace ppo::cuda
