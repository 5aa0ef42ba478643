// CUDA half of engine/device_memory.h and the CUDA error checks.
#include <cstdlib>
#include <string>
#include "engine/cuda_check.h"
#include "engine/device_memory.h"
#if defined(PPO_CUDA_EMU_DEVICE_CODE)
#include "kernels/cuda/emu/internal.h"
#endif

namespace ppo {

void cuda_fail(const char* what, const char* stmt, const char* file, int line) {
  int dev = -1;
  cudaGetDevice(&dev);
  fail_at(file, line, std::string("CUDA error on device ") + std::to_string(dev) + ": " + what + " in " + stmt);
}

std::string kernel_name(const char* spelled) {
  int depth = 0;
  const char* p = spelled;
  for (; *p; ++p) {
    if (*p == '<') ++depth;
    if (*p == '>') --depth;
    if (*p == ',' && depth == 0) break;
  }
  return std::string(spelled, size_t(p - spelled));
}

void check_launch(const char* spelled, const char* file, int line, cudaStream_t stream) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) cuda_fail(cudaGetErrorString(err), kernel_name(spelled).c_str(), file, line);
  static const bool sync = [] {
    const char* s = std::getenv("PPO_SYNC_LAUNCHES");
    return s && std::string(s) == "1";
  }();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (sync && cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone) {
    err = cudaDeviceSynchronize();
    if (err != cudaSuccess) cuda_fail(cudaGetErrorString(err), kernel_name(spelled).c_str(), file, line);
  }
}

const char* cublas_status_name(cublasStatus_t s) { return cublasGetStatusString(s); }

bool cuda_compiled() { return true; }

#if defined(PPO_CUDA_EMU_DEVICE_CODE)
bool cuda_emulated() { return true; }
DeviceCounters cuda_counters() { return emu::device().counters; }
void reset_cuda_counters() { emu::device().counters = {}; }
#else
bool cuda_emulated() { return false; }
DeviceCounters cuda_counters() { return {}; }
void reset_cuda_counters() {}
#endif

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

void cuda_set_device(int ordinal) { PPO_CHECK_CUDA(cudaSetDevice(ordinal)); }

size_t cuda_free_bytes() {
  size_t free_b = 0, total_b = 0;
  PPO_CHECK_CUDA(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

std::string cuda_device_name() {
  if (cuda_device_count() == 0) return "none";
  cudaDeviceProp prop{};
  int dev = 0;
  PPO_CHECK_CUDA(cudaGetDevice(&dev));
  PPO_CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  return prop.name;
}

void* cuda_alloc(size_t bytes) {
  void* p = nullptr;
  PPO_CHECK_CUDA(cudaMalloc(&p, bytes));
  return p;
}

void cuda_free(void* p) { cudaFree(p); }

// Synchronous with respect to all device work: the ops run on non-blocking streams, which a plain
// cudaMemcpy (legacy stream) does not wait for, and a pageable host-to-device cudaMemcpy may return
// before the bytes land. So: finish pending work, copy, wait for the copy.
void cuda_copy(void* dst, const void* src, size_t bytes) {
  PPO_CHECK_CUDA(cudaDeviceSynchronize());
  PPO_CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  PPO_CHECK_CUDA(cudaDeviceSynchronize());
}

}  // namespace ppo
