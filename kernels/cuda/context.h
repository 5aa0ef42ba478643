// What the CUDA backend owns: the stream, cuBLAS and cuBLASLt handles (and cuBLASLt's plans), the
// device's properties, and a view of the arena's scratch region (set by Backend::set_scratch).
#pragma once
#include <functional>
#include <memory>

#include "engine/arena.h"
#include "engine/cuda_check.h"

namespace ppo {

namespace cuda {
struct LtPlanCache;  // cuBLASLt plans per product shape (kernels/cuda/matmul.cu)
void destroy_lt_plans(LtPlanCache* cache);
}  // namespace cuda

// A range error a kernel found (an id outside the vocabulary, a position outside the table), kept
// on the device until Backend::check_device_errors reads it. code 0: none; the first error wins.
struct DeviceStatus {
  int32_t code;
  int32_t value;  // the offending id or position
  int64_t index;  // its row
};

struct CudaContext {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  cudaDeviceProp props{};
  Carver* scratch = nullptr;  // LIFO: take with scratch->mark()/take()/rewind()
  std::unique_ptr<cuda::LtPlanCache, void (*)(cuda::LtPlanCache*)> lt_plans{nullptr, cuda::destroy_lt_plans};
  DeviceStatus* status = nullptr;  // device memory, set by attach_scratch

  // Uses `carver` (the arena's scratch region) for the ops' temporaries; its first bytes become
  // the device status word and cuBLAS's workspace for good, so cuBLAS never allocates device memory.
  void attach_scratch(Carver* carver);

  CudaContext();
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;
};

namespace cuda {
// CUDA graphs (kernels/cuda/graph.cu): `ops` captured on ctx.stream, not run; each launch runs
// them with one host call. Stream capture fails on any synchronization, host copy or allocation.
cudaGraphExec_t capture_graph(CudaContext& ctx, const std::function<void()>& ops);
void launch_graph(CudaContext& ctx, cudaGraphExec_t graph);
void destroy_graph(cudaGraphExec_t graph);

// Waits for ctx.stream and returns the device status (clearing it): one synchronization, 16 bytes.
DeviceStatus wait_and_take_status(CudaContext& ctx);
}  // namespace cuda

// Scratch bytes the CUDA ops need for `max_rows` rows and vocabulary `vocab`.
size_t cuda_scratch_bytes(int64_t max_rows, int64_t vocab);

}  // namespace ppo
