#include "engine/device_memory.h"

#include <cstdlib>
#include <cstring>

namespace ppo {

#ifdef PPO_HAS_CUDA
// engine/device_memory_cuda.cu
void* cuda_alloc(size_t bytes);
void cuda_free(void* p);
void cuda_copy(void* dst, const void* src, size_t bytes);  // any direction, synchronous
#else
bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
size_t cuda_free_bytes() { return 0; }
std::string cuda_device_name() { return "none"; }
bool cuda_emulated() { return false; }
DeviceCounters cuda_counters() { return {}; }
void reset_cuda_counters() {}
static void* cuda_alloc(size_t) { PPO_FAIL("this build has no CUDA backend (configure with nvcc found and PPO_CUDA=ON)"); }
static void cuda_free(void*) {}
static void cuda_copy(void*, const void*, size_t) { PPO_FAIL("this build has no CUDA backend"); }
#endif

void* device_alloc(DeviceKind device, size_t bytes) {
  if (device == DeviceKind::CUDA) return cuda_alloc(bytes);
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!p) PPO_FAIL("host allocation of ", bytes, " bytes failed");
  return p;
}

void device_free(DeviceKind device, void* p) {
  if (device == DeviceKind::CUDA) cuda_free(p);
  else std::free(p);
}

void copy_bytes(void* dst, DeviceKind dst_device, const void* src, DeviceKind src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == DeviceKind::CPU && src_device == DeviceKind::CPU) std::memcpy(dst, src, bytes);
  else cuda_copy(dst, src, bytes);
}

void copy_tensor(const Tensor& dst, const Tensor& src) {
  PPO_ASSERT(dst.dtype == src.dtype && dst.numel() == src.numel(), "copy from tensor '", src.name,
             "' ", src.shape_str(), " into '", dst.name, "' ", dst.shape_str(), ": dtype or size differ");
  copy_bytes(dst.data, dst.device, src.data, src.device, src.bytes());
}

}  // namespace ppo
