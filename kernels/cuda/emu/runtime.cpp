// The CUDA runtime API of the emulated device: device memory is host memory registered per
// allocation (exact size, first filled with 0xff bytes, NaN as f32), every copy checks its kind and
// ranges, work on any stream runs at once in issue order, and the counters of engine/device_memory.h
// count what the host asked for. Declarations come from the toolkit's cuda_runtime_api.h.
//
// Stream capture and graphs (see internal.h): a capture records the kernels, cudaMemsetAsync,
// device-to-device cudaMemcpyAsync/cudaMemcpy2DAsync, cudaEventRecord and the cuBLAS/cuBLASLt calls
// issued to its stream. While any stream captures, a call that cannot be captured fails with
// cudaErrorStreamCaptureUnsupported and invalidates the capture: a wait (stream, device or event
// synchronization, cudaStreamQuery of the capturing stream), a synchronous copy, an asynchronous copy
// with host memory (pageable here), cudaMalloc/cudaFree (permitted by a Relaxed capture or another
// thread's ThreadLocal one), radix_sort_pairs and the NCCL collectives (not emulated under capture),
// cudaGraphLaunch into the capturing stream (a child graph: not emulated), and a wait by another
// stream on an event recorded in the capture (a fork: not emulated). cudaStreamEndCapture of an
// invalidated capture returns cudaErrorStreamCaptureInvalidated, naming the call that invalidated it,
// and no graph. A graph launch counts one launch; its device-to-device copies count their copies and
// bytes at every launch, as issued copies do.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda/emu/internal.h"

struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when;
  bool recorded;
  unsigned long long capture;  // the capture its last record was issued to, 0 when none
};
struct CUgraph_st {
  std::vector<std::function<void()>> nodes;
  bool capturing;  // still filled by a capture: not yet the caller's to destroy
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> nodes;
};

namespace ppo::emu {

namespace {

// The handles of each kind (cudaStream_t, cudaEvent_t, cudaGraph_t, cudaGraphExec_t) that exist: one of
// another kind does not.
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
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorIllegalState:
      return "the operation cannot be performed in the present state";
    default:
      return "emulated device error";
  }
}

struct Capture {
  cudaGraph_t graph;
  cudaStreamCaptureMode mode;
  std::thread::id thread;      // that began it
  unsigned long long id;       // unique in the process
  std::string invalidated_by;  // the call that invalidated it; empty while valid
};

// The captures under way, by stream.
std::map<const void*, Capture>& captures() {
  static std::map<const void*, Capture> c;
  return c;
}

void invalidate(Capture& c, const std::string& call) {
  if (c.invalidated_by.empty()) c.invalidated_by = call;
}

bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy; }

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

// cudaSuccess for a live handle of its kind; else `call` fails naming it (never created, destroyed,
// or a handle of another kind).
template <class Handle>
cudaError_t check_live(Handle h, const char* call, const char* what) {
  if (live<Handle>().count(h)) return cudaSuccess;
  return fail_call(cudaErrorInvalidResourceHandle,
                   std::string(call) + ": " + what + " " + hex_ptr(h) + " does not exist");
}

// Deletes a live handle (else check_live's error).
template <class Handle>
cudaError_t destroy_live(Handle h, const char* call, const char* what) {
  std::lock_guard<std::recursive_mutex> lock(device().mutex);
  if (cudaError_t e = check_live(h, call, what)) return e;
  live<Handle>().erase(h);
  delete h;
  return cudaSuccess;
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
                    cudaMemcpyKind kind, cudaStream_t stream, bool blocking, const char* call) {
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
  auto copy = [=] {
    for (size_t r = 0; r < rows; ++r)
      std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  };
  const int64_t bytes = int64_t(width * rows);
  if (kind == cudaMemcpyDeviceToDevice && !blocking)
    return submit(stream, call, 0, [copy, bytes] {
      copy();
      ++device().counters.d2d_copies;
      device().counters.d2d_bytes += bytes;
    });
  if (cudaError_t e = refuse_under_capture(call)) return e;
  copy();
  DeviceCounters& c = d.counters;
  // Host memory here is pageable: a copy from it first waits for the stream's work, a copy to it
  // also for the copy itself (CUDA's rules for pageable memory, async or not).
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
    case cudaMemcpyDeviceToDevice:  // blocking
      issue_work(0);
      ++c.d2d_copies;
      c.d2d_bytes += bytes;
      host_waits();
      break;
    default: break;
  }
  return cudaSuccess;
}

cudaError_t check_stream(cudaStream_t s, const std::string& call) {
  if (is_legacy(s) || s == cudaStreamPerThread || live<cudaStream_t>().count(s)) return cudaSuccess;
  return fail_call(cudaErrorInvalidResourceHandle, call + ": stream " + hex_ptr(s) + " does not exist");
}

// A call CUDA refuses on a capturing stream: invalidates its capture.
cudaError_t refuse_on_capture(Capture& c, const void* s, const std::string& call, const std::string& why) {
  invalidate(c, call);
  return fail_call(cudaErrorStreamCaptureUnsupported,
                   call + " on capturing stream " + hex_ptr(s) + ": " + why + " (the capture is invalidated)");
}

// The capture that work issued to `stream` joins (nullptr: it runs now), or the error of submit.
cudaError_t capture_of(cudaStream_t stream, const std::string& call, Capture** capture) {
  *capture = nullptr;
  if (cudaError_t e = check_stream(stream, call)) return e;
  const auto it = captures().find(stream);
  if (it != captures().end()) {
    Capture& c = it->second;
    if (!c.invalidated_by.empty())
      return fail_call(cudaErrorStreamCaptureInvalidated,
                       call + ": the capture on stream " + hex_ptr(stream) + " was invalidated by " + c.invalidated_by);
    *capture = &c;
  } else if (is_legacy(stream) && !captures().empty()) {
    for (auto& entry : captures()) invalidate(entry.second, call + " on the legacy stream");
    return fail_call(cudaErrorStreamCaptureImplicit, call + " on the legacy stream while stream " +
                                                         hex_ptr(captures().begin()->first) +
                                                         " captures (the capture is invalidated)");
  }
  return cudaSuccess;
}

// The capture status of `s`. The legacy stream has none, and may not be asked while a stream captures.
cudaError_t capture_status(cudaStream_t s, const char* call, cudaStreamCaptureStatus* status, Capture** capture) {
  if (cudaError_t e = check_stream(s, call)) return e;
  if (!status) return fail_call(cudaErrorInvalidValue, std::string(call) + ": no status pointer");
  if (is_legacy(s) && !captures().empty())
    return fail_call(cudaErrorStreamCaptureImplicit, std::string(call) + ": the legacy stream, while stream " +
                                                         hex_ptr(captures().begin()->first) + " captures");
  const auto it = captures().find(s);
  *capture = it != captures().end() ? &it->second : nullptr;
  *status = !*capture                            ? cudaStreamCaptureStatusNone
            : (*capture)->invalidated_by.empty() ? cudaStreamCaptureStatusActive
                                                 : cudaStreamCaptureStatusInvalidated;
  return cudaSuccess;
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

cudaError_t submit(cudaStream_t stream, const std::string& call, int64_t launches, std::function<void()> work) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  Capture* capture;
  if (cudaError_t e = capture_of(stream, call, &capture)) return e;
  if (capture) {
    capture->graph->nodes.push_back(std::move(work));
    return cudaSuccess;
  }
  issue_work(launches);
  work();
  return cudaSuccess;
}

cudaError_t refuse_under_capture(const std::string& call, bool allocation) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const void* conflict = nullptr;
  for (auto& [s, c] : captures()) {
    if (allocation && (c.mode == cudaStreamCaptureModeRelaxed ||
                       (c.mode == cudaStreamCaptureModeThreadLocal && c.thread != std::this_thread::get_id())))
      continue;
    invalidate(c, call);
    conflict = s;
  }
  if (!conflict) return cudaSuccess;
  return fail_call(cudaErrorStreamCaptureUnsupported,
                   call + " while stream " + hex_ptr(conflict) + " captures (the capture is invalidated)");
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
  if (cudaError_t e = ppo::emu::refuse_under_capture("cudaMalloc", true)) return e;
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
  if (cudaError_t e = ppo::emu::refuse_under_capture("cudaFree", true)) return e;
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
  return ppo::emu::copy_2d(dst, bytes, src, bytes, bytes, 1, kind, nullptr, true, "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (cudaError_t e = ppo::emu::check_stream(stream, "cudaMemcpyAsync")) return e;
  return ppo::emu::copy_2d(dst, bytes, src, bytes, bytes, 1, kind, stream, false, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind) {
  return ppo::emu::copy_2d(dst, dpitch, src, spitch, width, height, kind, nullptr, true, "cudaMemcpy2D");
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t stream) {
  if (cudaError_t e = ppo::emu::check_stream(stream, "cudaMemcpy2DAsync")) return e;
  return ppo::emu::copy_2d(dst, dpitch, src, spitch, width, height, kind, stream, false, "cudaMemcpy2DAsync");
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_stream(stream, "cudaMemsetAsync")) return e;
  if (bytes == 0) return cudaSuccess;
  if (!ppo::emu::device_range(p, bytes))
    return fail_call(cudaErrorInvalidValue, "cudaMemset: " + ppo::emu::hex_ptr(p) + " + " + std::to_string(bytes) +
                                                " bytes is not inside one device allocation");
  // a memset runs as a kernel
  return ppo::emu::submit(stream, "cudaMemsetAsync", 1, [p, value, bytes] { std::memset(p, value, bytes); });
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
// Destroying a capturing stream discards its capture.
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_live(s, "cudaStreamDestroy", "stream")) return e;
  ppo::emu::live<cudaStream_t>().erase(s);
  const auto it = ppo::emu::captures().find(s);
  if (it != ppo::emu::captures().end()) {
    ppo::emu::live<cudaGraph_t>().erase(it->second.graph);
    delete it->second.graph;
    ppo::emu::captures().erase(it);
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (cudaError_t e = ppo::emu::check_stream(s, "cudaStreamSynchronize")) return e;
  if (cudaError_t e = ppo::emu::refuse_under_capture("cudaStreamSynchronize")) return e;
  ppo::emu::host_waits();
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_stream(s, "cudaStreamQuery")) return e;
  const auto it = ppo::emu::captures().find(s);
  return it == ppo::emu::captures().end()
             ? cudaSuccess
             : ppo::emu::refuse_on_capture(it->second, s, "cudaStreamQuery", "its work is not issued yet");
}
cudaError_t cudaDeviceSynchronize() {
  if (cudaError_t e = ppo::emu::refuse_under_capture("cudaDeviceSynchronize")) return e;
  ppo::emu::host_waits();
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  *e = new CUevent_st{{}, false, 0};
  ppo::emu::live<cudaEvent_t>().insert(*e);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { return ppo::emu::destroy_live(e, "cudaEventDestroy", "event"); }
// On a capturing stream the record is a node: the event is recorded at each launch of the graph.
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t err = ppo::emu::check_live(e, "cudaEventRecord", "event")) return err;
  ppo::emu::Capture* capture;
  if (cudaError_t err = ppo::emu::capture_of(s, "cudaEventRecord", &capture)) return err;
  auto record = [e] {
    if (!ppo::emu::live<cudaEvent_t>().count(e)) return;  // destroyed since the capture
    e->when = std::chrono::steady_clock::now();
    e->recorded = true;
  };
  e->capture = capture ? capture->id : 0;
  if (capture)
    capture->graph->nodes.push_back(record);
  else
    record();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (cudaError_t err = ppo::emu::check_live(e, "cudaEventSynchronize", "event")) return err;
  if (cudaError_t err = ppo::emu::refuse_under_capture("cudaEventSynchronize")) return err;
  ppo::emu::host_waits();
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return ppo::emu::check_live(e, "cudaEventQuery", "event"); }
// Host time between the records: the emulator's time, not a GPU's.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ppo::emu::live<cudaEvent_t>().count(start) || !ppo::emu::live<cudaEvent_t>().count(end) || !start->recorded ||
      !end->recorded)
    return fail_call(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event was not recorded");
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
// Another stream waiting for an event recorded in a capture would join the capture (a fork), which
// is not emulated: refused, and the capture invalidated.
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t err = ppo::emu::check_stream(s, "cudaStreamWaitEvent")) return err;
  if (cudaError_t err = ppo::emu::check_live(e, "cudaStreamWaitEvent", "event")) return err;
  for (auto& [stream, c] : ppo::emu::captures())
    if (c.id == e->capture && stream != s)
      return ppo::emu::refuse_on_capture(c, stream, "cudaStreamWaitEvent",
                                         "stream " + ppo::emu::hex_ptr(s) +
                                             " waits for an event recorded in the capture, a fork into it (not "
                                             "emulated)");
  return cudaSuccess;
}

// ---- stream capture and graphs (see the file comment) -------------------------------------------
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_stream(s, "cudaStreamBeginCapture")) return e;
  if (ppo::emu::is_legacy(s))
    return fail_call(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture: the legacy stream cannot capture");
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail_call(cudaErrorInvalidValue, "cudaStreamBeginCapture: capture mode " + std::to_string(int(mode)));
  if (ppo::emu::captures().count(s))
    return fail_call(cudaErrorIllegalState,
                     "cudaStreamBeginCapture: stream " + ppo::emu::hex_ptr(s) + " already captures");
  static unsigned long long captures_begun = 0;
  auto* graph = new CUgraph_st{{}, true};
  ppo::emu::live<cudaGraph_t>().insert(graph);
  ppo::emu::captures()[s] = {graph, mode, std::this_thread::get_id(), ++captures_begun, {}};
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_stream(s, "cudaStreamEndCapture")) return e;
  if (!graph) return fail_call(cudaErrorInvalidValue, "cudaStreamEndCapture: no graph pointer");
  *graph = nullptr;
  const auto it = ppo::emu::captures().find(s);
  if (it == ppo::emu::captures().end())
    return fail_call(cudaErrorIllegalState,
                     "cudaStreamEndCapture: stream " + ppo::emu::hex_ptr(s) + " is not capturing");
  const ppo::emu::Capture c = it->second;
  if (c.mode != cudaStreamCaptureModeRelaxed && c.thread != std::this_thread::get_id())
    return fail_call(cudaErrorStreamCaptureWrongThread, "cudaStreamEndCapture: the capture on stream " +
                                                            ppo::emu::hex_ptr(s) + " was begun by another thread");
  ppo::emu::captures().erase(it);
  c.graph->capturing = false;
  if (c.invalidated_by.empty()) {
    *graph = c.graph;
    return cudaSuccess;
  }
  ppo::emu::live<cudaGraph_t>().erase(c.graph);
  delete c.graph;
  return fail_call(cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture: the capture on stream " +
                                                          ppo::emu::hex_ptr(s) + " was invalidated by " +
                                                          c.invalidated_by + "; no graph");
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  ppo::emu::Capture* capture;
  return ppo::emu::capture_status(s, "cudaStreamIsCapturing", status, &capture);
}
// The capture's graph is a chain: the next node depends on the last one. Its nodes have no handles:
// asking for them (dependencies_out, edgeData_out) fails.
cudaError_t cudaStreamGetCaptureInfo(cudaStream_t s, cudaStreamCaptureStatus* status, unsigned long long* id,
                                     cudaGraph_t* graph, const cudaGraphNode_t** dependencies,
                                     const cudaGraphEdgeData** edge_data, size_t* num_dependencies) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (dependencies || edge_data)
    return fail_call(cudaErrorInvalidValue, "cudaStreamGetCaptureInfo: graph nodes are not emulated");
  ppo::emu::Capture* capture;
  if (cudaError_t e = ppo::emu::capture_status(s, "cudaStreamGetCaptureInfo", status, &capture)) return e;
  if (*status != cudaStreamCaptureStatusActive) return cudaSuccess;
  if (id) *id = capture->id;
  if (graph) *graph = capture->graph;
  if (num_dependencies) *num_dependencies = capture->graph->nodes.empty() ? 0 : 1;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (!exec) return fail_call(cudaErrorInvalidValue, "cudaGraphInstantiate: no exec pointer");
  if (cudaError_t e = ppo::emu::check_live(graph, "cudaGraphInstantiate", "graph")) return e;
  if (flags != 0)
    return fail_call(cudaErrorInvalidValue,
                     "cudaGraphInstantiate: flags " + std::to_string(flags) + " (only 0 is emulated)");
  *exec = new CUgraphExec_st{graph->nodes};
  ppo::emu::live<cudaGraphExec_t>().insert(*exec);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_live(graph, "cudaGraphDestroy", "graph")) return e;
  if (graph->capturing)
    return fail_call(cudaErrorIllegalState,
                     "cudaGraphDestroy: graph " + ppo::emu::hex_ptr(graph) + " is still being captured");
  ppo::emu::live<cudaGraph_t>().erase(graph);
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  return ppo::emu::destroy_live(exec, "cudaGraphExecDestroy", "graph exec");
}
// Runs the nodes in order, now, as one launch; a failing kernel reports through cudaGetLastError.
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  auto& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (cudaError_t e = ppo::emu::check_live(exec, "cudaGraphLaunch", "graph exec")) return e;
  const auto it = ppo::emu::captures().find(s);
  if (it != ppo::emu::captures().end())
    return ppo::emu::refuse_on_capture(it->second, s, "cudaGraphLaunch", "a graph inside a capture is not emulated");
  return ppo::emu::submit(s, "cudaGraphLaunch", 1, [exec] {
    for (const auto& node : exec->nodes) node();
  });
}
