// The only place that allocates device memory or copies between devices. The CUDA half lives in
// engine/device_memory_cuda.cu and exists only in builds with the CUDA backend.
#pragma once
#include <cstddef>
#include "engine/tensor.h"

namespace ppo {

bool cuda_compiled();           // the CUDA backend was built
int cuda_device_count();        // 0 when not compiled or no GPU answers
size_t cuda_free_bytes();       // free memory of the current device
std::string cuda_device_name(); // e.g. "NVIDIA H100 80GB HBM3"
bool cuda_emulated();           // the CUDA backend runs on the emulated device (kernels/cuda/emu)
void cuda_set_device(int ordinal);  // the current device of this process (a rank's GPU)

// Work the host asked of the CUDA device, counted by the emulated device since the process started
// or the last reset (a GPU build counts nothing: all zero). A synchronization is any call that
// waits for the device: stream/device/event synchronize and blocking copies to or from the host.
struct DeviceCounters {
  int64_t launches = 0;       // kernels, and library calls (a GEMM, a sort) counted as one each
  int64_t syncs = 0;
  int64_t h2d_copies = 0, h2d_bytes = 0;
  int64_t d2h_copies = 0, d2h_bytes = 0;
  int64_t d2d_copies = 0, d2d_bytes = 0;
  int64_t allocations = 0;    // device allocations (cudaMalloc, and a library's own workspace)
};
DeviceCounters& operator+=(DeviceCounters& a, const DeviceCounters& b);
DeviceCounters operator-(DeviceCounters a, const DeviceCounters& b);
DeviceCounters cuda_counters();
void reset_cuda_counters();

// Host memory a run may still take: MemAvailable of /proc/meminfo, lowered to what the cgroup's
// memory limit leaves (containers); the free physical memory where /proc/meminfo is missing.
size_t host_available_bytes();
// What a run's arena may take on `device`: the GPU's free memory, or the host's available memory.
size_t device_capacity(DeviceKind device);

void* device_alloc(DeviceKind device, size_t bytes);  // 256-byte aligned; throws on failure
void device_free(DeviceKind device, void* p);
// Copies `bytes` between any two devices; synchronous.
void copy_bytes(void* dst, DeviceKind dst_device, const void* src, DeviceKind src_device, size_t bytes);
// Copies a tensor's bytes into another of the same dtype and element count (any devices).
void copy_tensor(const Tensor& dst, const Tensor& src);

}  // namespace ppo
