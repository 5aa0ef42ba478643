// The CUDA runtime API of the emulated device: device memory is host memory registered per
// allocation (exact size, first filled with 0xff bytes, NaN as f32), every copy checks its kind and
// ranges, work on any stream runs at once in issue order, and the counters of engine/device_memory.h
// count what the host asked for. Declarations come from the toolkit's cuda_runtime_api.h.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>

#include "kernels/cuda/emu/internal.h"

struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when;
  bool recorded;
};

namespace ppo::emu {

namespace {

// The handles of each kind (cudaStream_t, cudaEvent_t, ...) that exist: one of another kind does not.
template <class Handle>
std::set<const void*>& live() {
  static std::set<const void*> handles;
  return handles;
}

const char* error_base(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    default:
      return "emulated device error";
  }
}

std::map<int, std::string>& error_messages() {
  static std::map<int, std::string> messages;
  return messages;
}

// Fails a runtime call: recorded for cudaGetLastError and returned.
cudaError_t fail_call(cudaError_t err, const std::string& detail) {
  set_error(err, detail);
  return err;
}

std::string hex_ptr(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

size_t host_available_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    meminfo.ignore(256, '\n');
  }
  return size_t(1) << 40;
}

void digest(const void* p, size_t bytes) {
  DeviceState& d = device();
  const auto* c = static_cast<const unsigned char*>(p);
  uint64_t h = d.digest;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ c[i]) * 1099511628211ull;
  d.digest = h;
  d.digest_bytes += int64_t(bytes);
}

// PPO_EMU_DIGEST=FILE: at exit, write the digest of every byte the device returned to the host (the
// order check compares it between runs in different thread orders).
void write_digest_at_exit() {
  const char* path = std::getenv("PPO_EMU_DIGEST");
  if (!path || !*path) return;
  std::ofstream out(path);
  const DeviceState& d = device();
  char line[96];
  std::snprintf(line, sizeof line, "%016llx %lld\n", static_cast<unsigned long long>(d.digest),
                static_cast<long long>(d.digest_bytes));
  out << line;
}

enum class Where : uint8_t { Host, Device };

// Checks one side of a copy; `what` names it in the error.
cudaError_t check_side(const void* p, size_t bytes, Where where, const char* call, const char* what) {
  const bool on_device = device_range(p, bytes);
  if (where == Where::Device && !on_device)
    return fail_call(cudaErrorInvalidValue, std::string(call) + ": " + what + " " + hex_ptr(p) + " + " +
                                                std::to_string(bytes) + " bytes is not inside one device allocation");
  if (where == Where::Host && device_range(p, 1))
    return fail_call(cudaErrorInvalidValue,
                     std::string(call) + ": " + what + " " + hex_ptr(p) + " is device memory, the copy kind says host");
  return cudaSuccess;
}

// Copies `rows` rows of `width` bytes between pitched buffers after checking the kind and ranges.
cudaError_t copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows,
                    cudaMemcpyKind kind, bool blocking, const char* call) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (width == 0 || rows == 0) return cudaSuccess;
  if (dpitch < width || spitch < width)
    return fail_call(cudaErrorInvalidValue, std::string(call) + ": pitch below the row width " + std::to_string(width));
  const size_t dst_bytes = dpitch * (rows - 1) + width, src_bytes = spitch * (rows - 1) + width;
  if (kind == cudaMemcpyDefault) {
    const bool dd = device_range(dst, dst_bytes), sd = device_range(src, src_bytes);
    kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
              : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  }
  const Where dw = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice ? Where::Device : Where::Host;
  const Where sw = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice ? Where::Device : Where::Host;
  if (kind != cudaMemcpyHostToHost && kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToHost &&
      kind != cudaMemcpyDeviceToDevice)
    return fail_call(cudaErrorInvalidValue, std::string(call) + ": unknown copy kind " + std::to_string(int(kind)));
  if (cudaError_t e = check_side(dst, dst_bytes, dw, call, "destination")) return e;
  if (cudaError_t e = check_side(src, src_bytes, sw, call, "source")) return e;
  for (size_t r = 0; r < rows; ++r)
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  // Host memory here is pageable: a copy from it first waits for the stream's work, a copy to it
  // also for the copy itself (CUDA's rules for pageable memory, async or not).
  const int64_t bytes = int64_t(width * rows);
  DeviceCounters& c = d.counters;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      host_waits();
      ++c.h2d_copies;
      c.h2d_bytes += bytes;
      break;
    case cudaMemcpyDeviceToHost:
      d.pending = true;
      host_waits();
      ++c.d2h_copies;
      c.d2h_bytes += bytes;
      for (size_t r = 0; r < rows; ++r) digest(static_cast<const char*>(dst) + r * dpitch, width);
      break;
    case cudaMemcpyDeviceToDevice:
      issue_work(0);
      ++c.d2d_copies;
      c.d2d_bytes += bytes;
      if (blocking) host_waits();
      break;
    default: break;
  }
  return cudaSuccess;
}

cudaError_t check_stream(cudaStream_t s, const char* call) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread || live<cudaStream_t>().count(s))
    return cudaSuccess;
  return fail_call(cudaErrorInvalidResourceHandle, std::string(call) + ": stream " + hex_ptr(s) + " does not exist");
}

cudaDeviceProp make_properties() {
  cudaDeviceProp p{};
  std::snprintf(p.name, sizeof p.name, "NVIDIA H200 (emulated)");
  p.totalGlobalMem = size_t(143771) << 20;
  p.sharedMemPerBlock = 48 << 10;
  p.sharedMemPerBlockOptin = 227 << 10;
  p.sharedMemPerMultiprocessor = 228 << 10;
  p.reservedSharedMemPerBlock = 1 << 10;
  p.regsPerBlock = 65536;
  p.regsPerMultiprocessor = 65536;
  p.warpSize = 32;
  p.memPitch = size_t(1) << 31;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsDim[0] = 1024;
  p.maxThreadsDim[1] = 1024;
  p.maxThreadsDim[2] = 64;
  p.maxGridSize[0] = 2147483647;
  p.maxGridSize[1] = 65535;
  p.maxGridSize[2] = 65535;
  p.totalConstMem = 64 << 10;
  p.major = 9;
  p.minor = 0;
  p.multiProcessorCount = 132;
  p.maxThreadsPerMultiProcessor = 2048;
  p.maxBlocksPerMultiProcessor = 32;
  p.l2CacheSize = 50 << 20;
  p.memoryBusWidth = 6144;
  p.concurrentKernels = 1;
  p.asyncEngineCount = 2;
  p.unifiedAddressing = 1;
  p.canMapHostMemory = 1;
  p.cooperativeLaunch = 1;
  p.clusterLaunch = 1;
  return p;
}

}  // namespace

DeviceState& device() {
  static DeviceState* state = [] {
    auto* s = new DeviceState();  // lives for the whole process: atexit writers read it
    if (const char* order = std::getenv("PPO_EMU_ORDER")) {
      const std::string o = order;
      if (o == "reverse")
        s->order = Order::Reverse;
      else if (o.rfind("shuffle", 0) == 0) {
        s->order = Order::Shuffle;
        if (o.size() > 8 && o[7] == ':') s->shuffle_seed = std::strtoull(o.c_str() + 8, nullptr, 10);
      } else if (o != "forward" && !o.empty()) {
        std::fprintf(stderr, "PPO_EMU_ORDER=%s: expected forward, reverse or shuffle[:seed]\n", order);
        std::exit(2);
      }
    }
    std::atexit(write_digest_at_exit);
    return s;
  }();
  return *state;
}

void issue_work(int64_t launches) {
  DeviceState& d = device();
  d.counters.launches += launches;
  d.pending = true;
}

void host_waits() {
  DeviceState& d = device();
  if (!d.pending) return;
  ++d.counters.syncs;
  d.pending = false;
}

void set_error(cudaError_t err, const std::string& detail) {
  DeviceState& d = device();
  if (d.last_error == cudaSuccess) d.last_error = err;
  error_messages()[int(err)] = std::string(error_base(err)) + " (emulated device: " + detail + ")";
}

bool device_range(const void* p, size_t bytes) {
  if (!p) return false;
  const DeviceState& d = device();
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = d.allocations.upper_bound(a);
  if (it == d.allocations.begin()) return false;
  --it;
  return a >= it->first && a - it->first + bytes <= it->second && a - it->first < it->second + (bytes == 0);
}

const cudaDeviceProp& properties() {
  static const cudaDeviceProp p = make_properties();
  return p;
}

}  // namespace ppo::emu

using ppo::emu::device;
using ppo::emu::fail_call;

// ---- device, errors --------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) {
  return dev == 0 ? cudaSuccess
                  : fail_call(cudaErrorInvalidDevice, "device " + std::to_string(dev) + " (there is one)");
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int dev) {
  if (dev != 0) return fail_call(cudaErrorInvalidDevice, "device " + std::to_string(dev) + " (there is one)");
  *prop = ppo::emu::properties();
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const cudaError_t e = d.last_error;
  d.last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return device().last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  const auto& messages = ppo::emu::error_messages();
  const auto it = messages.find(int(e));
  return it != messages.end() ? it->second.c_str() : ppo::emu::error_base(e);
}
const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaError"; }
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    const int limit = int(ppo::emu::properties().sharedMemPerBlockOptin);
    if (value < 0 || value > limit)
      return fail_call(cudaErrorInvalidValue, "cudaFuncAttributeMaxDynamicSharedMemorySize " + std::to_string(value) +
                                                  " exceeds the device's " + std::to_string(limit) + " bytes");
    d.max_dynamic_smem[func] = value;
  }
  return cudaSuccess;
}

// ---- memory ------------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (d.allocated_bytes + bytes > ppo::emu::properties().totalGlobalMem)
    return fail_call(cudaErrorMemoryAllocation, "cudaMalloc of " + std::to_string(bytes) + " bytes with " +
                                                    std::to_string(d.allocated_bytes) + " in use");
  void* mem = nullptr;
  if (posix_memalign(&mem, 256, bytes) != 0)
    return fail_call(cudaErrorMemoryAllocation, "the host could not provide " + std::to_string(bytes) + " bytes");
  std::memset(mem, 0xff, bytes);  // never zero: a read of memory nobody wrote shows up as NaN
  d.allocations[reinterpret_cast<uintptr_t>(mem)] = bytes;
  d.allocated_bytes += bytes;
  ++d.counters.allocations;
  *p = mem;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (!p) return cudaSuccess;
  const auto it = d.allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == d.allocations.end())
    return fail_call(cudaErrorInvalidValue,
                     "cudaFree(" + ppo::emu::hex_ptr(p) + "): not the start of a device allocation");
  d.allocated_bytes -= it->second;
  d.allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const size_t total = ppo::emu::properties().totalGlobalMem;
  const size_t host = ppo::emu::host_available_bytes();
  *total_bytes = total;
  *free_bytes = std::min(total - d.allocated_bytes, host);  // the emulated device's memory is the host's
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return ppo::emu::copy_2d(dst, bytes, src, bytes, bytes, 1, kind, true, "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (cudaError_t e = ppo::emu::check_stream(stream, "cudaMemcpyAsync")) return e;
  return ppo::emu::copy_2d(dst, bytes, src, bytes, bytes, 1, kind, false, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind) {
  return ppo::emu::copy_2d(dst, dpitch, src, spitch, width, height, kind, true, "cudaMemcpy2D");
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t stream) {
  if (cudaError_t e = ppo::emu::check_stream(stream, "cudaMemcpy2DAsync")) return e;
  return ppo::emu::copy_2d(dst, dpitch, src, spitch, width, height, kind, false, "cudaMemcpy2DAsync");
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_stream(stream, "cudaMemsetAsync")) return e;
  if (bytes == 0) return cudaSuccess;
  if (!ppo::emu::device_range(p, bytes))
    return fail_call(cudaErrorInvalidValue, "cudaMemset: " + ppo::emu::hex_ptr(p) + " + " + std::to_string(bytes) +
                                                " bytes is not inside one device allocation");
  std::memset(p, value, bytes);
  ppo::emu::issue_work();  // a memset runs as a kernel
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }

// ---- streams and events: work runs when it is issued, so waiting is only counted ------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  *s = new CUstream_st{flags};
  ppo::emu::live<cudaStream_t>().insert(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (!ppo::emu::live<cudaStream_t>().erase(s))
    return fail_call(cudaErrorInvalidResourceHandle,
                     "cudaStreamDestroy: stream " + ppo::emu::hex_ptr(s) + " does not exist");
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (cudaError_t e = ppo::emu::check_stream(s, "cudaStreamSynchronize")) return e;
  ppo::emu::host_waits();
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) { return ppo::emu::check_stream(s, "cudaStreamQuery"); }
cudaError_t cudaDeviceSynchronize() {
  ppo::emu::host_waits();
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  *e = new CUevent_st{{}, false};
  ppo::emu::live<cudaEvent_t>().insert(*e);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (!ppo::emu::live<cudaEvent_t>().erase(e))
    return fail_call(cudaErrorInvalidResourceHandle,
                     "cudaEventDestroy: event " + ppo::emu::hex_ptr(e) + " does not exist");
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (cudaError_t err = ppo::emu::check_stream(s, "cudaEventRecord")) return err;
  if (!ppo::emu::live<cudaEvent_t>().count(e))
    return fail_call(cudaErrorInvalidResourceHandle,
                     "cudaEventRecord: event " + ppo::emu::hex_ptr(e) + " does not exist");
  e->when = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!ppo::emu::live<cudaEvent_t>().count(e))
    return fail_call(cudaErrorInvalidResourceHandle,
                     "cudaEventSynchronize: event " + ppo::emu::hex_ptr(e) + " does not exist");
  ppo::emu::host_waits();
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  return ppo::emu::live<cudaEvent_t>().count(e)
             ? cudaSuccess
             : fail_call(cudaErrorInvalidResourceHandle, "cudaEventQuery: no such event");
}
// Host time between the records: the emulator's time, not a GPU's.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ppo::emu::live<cudaEvent_t>().count(start) || !ppo::emu::live<cudaEvent_t>().count(end) || !start->recorded ||
      !end->recorded)
    return fail_call(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event was not recorded");
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  if (cudaError_t err = ppo::emu::check_stream(s, "cudaStreamWaitEvent")) return err;
  return ppo::emu::live<cudaEvent_t>().count(e)
             ? cudaSuccess
             : fail_call(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: no such event");
}
