// Experimental variant of attention_forward (kernels/backend.h has the math): causal grouped-query
// flash attention on tensor cores (mma.sync m16n8k16, bf16 operands, f32 accumulation), HS = 64 only.
// Same arguments and outputs as ppo::cuda::attention_forward: out (B,T,NH*HS) bf16, lse (B,NH,T) f32.
// Benchmarked and validated by bench/kernels/kernel_bench; not used by the engine until promoted.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "engine/dtype.h"

namespace ppo::kbench::attention {

bool flash_mma_supports(int HS);
void flash_mma_forward(cudaStream_t stream, bf16* out, float* lse, const bf16* qkv, const int32_t* mask, int64_t B,
                       int64_t T, int NH, int NKV, int HS);

}  // namespace ppo::kbench::attention
