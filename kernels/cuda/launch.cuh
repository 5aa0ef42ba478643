// One way to launch a kernel on a GPU and on the emulated device (kernels/cuda/emu/device.h):
//
//   PPO_LAUNCH(grid, block, smem, stream, kernel<T>, arg0, arg1, ...);
//
// is `kernel<T><<<grid, block, smem, stream>>>(arg0, arg1, ...)` followed by the launch check, whose
// error names the kernel (as spelled here) and this file:line. Dynamic shared memory is declared
// with PPO_DYNAMIC_SHARED(float, smem) instead of `extern __shared__ float smem[]`.
#pragma once
#include <utility>

#include "engine/cuda_check.h"

namespace ppo::cuda {

template <class... Params, class... Args>
void launch(const char* spelled, const char* file, int line, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            void (*kernel)(Params...), Args&&... args) {
#if defined(PPO_CUDA_EMU_DEVICE_CODE)
  ::ppo::emu::launch(spelled, file, line, grid, block, smem, stream, kernel, std::forward<Args>(args)...);
#else
  // clang-format off
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  // clang-format on
#endif
  check_launch(spelled, file, line, stream);
}

}  // namespace ppo::cuda

#define PPO_LAUNCH(grid, block, smem, stream, ...) \
  ::ppo::cuda::launch(#__VA_ARGS__, __FILE__, __LINE__, dim3(grid), dim3(block), size_t(smem), (stream), __VA_ARGS__)

#if defined(PPO_CUDA_EMU_DEVICE_CODE)
#define PPO_DYNAMIC_SHARED(type, name) type* const name = static_cast<type*>(::ppo::emu::dynamic_shared_memory())
#else
#define PPO_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
