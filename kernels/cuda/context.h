// What the CUDA backend owns: the stream, cuBLAS and cuBLASLt handles, the device's properties,
// and a view of the arena's scratch region (set by Backend::set_scratch).
#pragma once
#include "engine/arena.h"
#include "engine/cuda_check.h"

namespace ppo {

struct CudaContext {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  cudaDeviceProp props{};
  Carver* scratch = nullptr;  // LIFO: take with scratch->mark()/take()/rewind()

  CudaContext();
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;
};

// Scratch bytes the CUDA ops need for `max_rows` rows and vocabulary `vocab`.
size_t cuda_scratch_bytes(int64_t max_rows, int64_t vocab);

}  // namespace ppo
