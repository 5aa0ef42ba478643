#include "engine/device_memory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <utility>

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
void cuda_set_device(int) { PPO_FAIL("this build has no CUDA backend"); }
DeviceCounters cuda_counters() { return {}; }
void reset_cuda_counters() {}
static void* cuda_alloc(size_t) { PPO_FAIL("this build has no CUDA backend (configure with nvcc found and PPO_CUDA=ON)"); }
static void cuda_free(void*) {}
static void cuda_copy(void*, const void*, size_t) { PPO_FAIL("this build has no CUDA backend"); }
#endif

namespace {

// The number that follows word `key` in the file at `path` (/proc/meminfo), or with no key its first
// word (a cgroup file, where "max" means no limit): nullopt when there is no such number.
std::optional<uint64_t> read_number(const std::string& path, const char* key = nullptr) {
  std::ifstream in(path);
  std::string word;
  if (key)
    while (in >> word && word != key) {}
  if (!(in >> word)) return std::nullopt;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(word.c_str(), &end, 10);
  return *end == '\0' ? std::optional<uint64_t>(v) : std::nullopt;
}

}  // namespace

size_t host_available_bytes() {
  std::optional<uint64_t> kib = read_number("/proc/meminfo", "MemAvailable:");
  size_t available = kib ? size_t(*kib) * 1024 : size_t(sysconf(_SC_AVPHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
  // cgroup v2, then v1: the limit less the usage (v1 reports no limit as a huge number)
  for (const auto& [limit_file, usage_file] : {std::pair{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
                                               std::pair{"/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                                         "/sys/fs/cgroup/memory/memory.usage_in_bytes"}}) {
    const std::optional<uint64_t> limit = read_number(limit_file), usage = read_number(usage_file);
    if (limit && usage) available = std::min<size_t>(available, *limit > *usage ? *limit - *usage : 0);
  }
  return available;
}

size_t device_capacity(DeviceKind device) {
  return device == DeviceKind::CUDA ? cuda_free_bytes() : host_available_bytes();
}

DeviceCounters& operator+=(DeviceCounters& a, const DeviceCounters& b) {
  a.launches += b.launches;
  a.syncs += b.syncs;
  a.h2d_copies += b.h2d_copies;
  a.h2d_bytes += b.h2d_bytes;
  a.d2h_copies += b.d2h_copies;
  a.d2h_bytes += b.d2h_bytes;
  a.d2d_copies += b.d2d_copies;
  a.d2d_bytes += b.d2d_bytes;
  a.allocations += b.allocations;
  return a;
}

DeviceCounters operator-(DeviceCounters a, const DeviceCounters& b) {
  DeviceCounters negated;
  negated.launches = -b.launches;
  negated.syncs = -b.syncs;
  negated.h2d_copies = -b.h2d_copies;
  negated.h2d_bytes = -b.h2d_bytes;
  negated.d2h_copies = -b.d2h_copies;
  negated.d2h_bytes = -b.d2h_bytes;
  negated.d2d_copies = -b.d2d_copies;
  negated.d2d_bytes = -b.d2d_bytes;
  negated.allocations = -b.allocations;
  return a += negated;
}

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
