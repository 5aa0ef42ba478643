// State of the emulated device shared by its runtime (runtime.cpp), scheduler (device.cpp) and
// libraries (cublas.cpp, radix_sort.cpp). One device, one process: the device is global state, as
// a GPU driver's is.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "engine/device_memory.h"

namespace ppo::emu {

enum class Order : uint8_t { Forward, Reverse, Shuffle };

struct DeviceState {
  std::recursive_mutex mutex;  // one host thread on the device at a time
  DeviceCounters counters;
  bool pending = false;                          // device work issued since the host last waited
  std::map<uintptr_t, size_t> allocations;  // base -> bytes
  size_t allocated_bytes = 0;
  cudaError_t last_error = cudaSuccess;  // cudaGetLastError's, with its detail
  std::string last_error_detail;
  std::unordered_map<const void*, int> max_dynamic_smem;  // cudaFuncAttributeMaxDynamicSharedMemorySize
  Order order = Order::Forward;
  uint64_t shuffle_seed = 1;
  uint64_t digest = 1469598103934665603ull;  // FNV-1a of every byte copied to the host, in order
  int64_t digest_bytes = 0;
};
DeviceState& device();

// Device work issued: `launches` kernels (a library call counts as its kernels).
void issue_work(int64_t launches = 1);
// The host waits for the device: a synchronization when there is work to wait for (a wait with
// nothing issued since the last one costs nothing and is not counted).
void host_waits();

// ---- stream capture (runtime.cpp) -----------------------------------------------------------------
// While a stream captures (cudaStreamBeginCapture .. cudaStreamEndCapture), work issued to it does not
// run: it becomes the next node of the capture's graph, a chain in issue order, holding the
// arguments it was issued with (checked then). cudaGraphLaunch runs the nodes in order, now, as one
// launch of the counters.

// Issues device work on `stream`: `work` becomes a node on a capturing stream, else runs now, counted
// as `launches` (issue_work). Fails, with nothing run or captured and the error naming `call`, for a
// stream that does not exist, a capture already invalidated (cudaErrorStreamCaptureInvalidated), and
// the legacy stream while any stream captures (cudaErrorStreamCaptureImplicit; the capture is
// invalidated: CUDA's rule for a blocking capturing stream, applied to every capturing stream here).
cudaError_t submit(cudaStream_t stream, const std::string& call, int64_t launches, std::function<void()> work);
// For a call that cannot be captured (a wait, a copy with pageable host memory, an allocation, a
// library call the emulator does not capture): while a stream captures, invalidates the capture and
// returns cudaErrorStreamCaptureUnsupported naming `call`; cudaSuccess otherwise. `allocation`: a
// call that a Relaxed capture, or a ThreadLocal capture begun by another thread, permits.
cudaError_t refuse_under_capture(const std::string& call, bool allocation = false);

// Records an error for the next cudaGetLastError (the first one wins until it is read).
void set_error(cudaError_t err, const std::string& detail);
// The allocation holding [p, p + bytes), or false.
bool device_range(const void* p, size_t bytes);
// H200-class properties of the emulated device.
const cudaDeviceProp& properties();

}  // namespace ppo::emu
