// Error checks for CUDA runtime, cuBLAS, NCCL and kernel launches (PPO_LAUNCH, kernels/cuda/launch.cuh).
// Each failure throws ppo::Error naming the statement, the library's error string and file:line.
// With PPO_SYNC_LAUNCHES=1 in the environment every launch is followed by a device synchronisation,
// so an asynchronous fault is reported at the launch that caused it (not while the stream is
// captured into a graph: there the launches run at each graph launch).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <string>
#include "engine/error.h"

namespace ppo {
[[noreturn]] void cuda_fail(const char* what, const char* stmt, const char* file, int line);
// `spelled`: PPO_LAUNCH's kernel and arguments as written ("kernel<T>, a, b"); errors name the kernel.
void check_launch(const char* spelled, const char* file, int line, cudaStream_t stream);
// The kernel's name in PPO_LAUNCH's spelled arguments: the text up to the first comma outside <>.
std::string kernel_name(const char* spelled);
const char* cublas_status_name(cublasStatus_t s);
}  // namespace ppo

#define PPO_CHECK_CUDA(stmt)                                                          \
  do {                                                                                \
    cudaError_t ppo_err_ = (stmt);                                                    \
    if (ppo_err_ != cudaSuccess) ::ppo::cuda_fail(cudaGetErrorString(ppo_err_), #stmt, __FILE__, __LINE__); \
  } while (0)

// NCCL (include <nccl.h> first): the result's string and ncclGetLastError's detail.
#define PPO_CHECK_NCCL(stmt)                                                                                        \
  do {                                                                                                              \
    ncclResult_t ppo_nr_ = (stmt);                                                                                  \
    if (ppo_nr_ != ncclSuccess)                                                                                     \
      ::ppo::cuda_fail((std::string(ncclGetErrorString(ppo_nr_)) + " (" + ncclGetLastError(nullptr) + ")").c_str(), \
                       #stmt, __FILE__, __LINE__);                                                                  \
  } while (0)

#define PPO_CHECK_CUBLAS(stmt)                                                        \
  do {                                                                                \
    cublasStatus_t ppo_st_ = (stmt);                                                  \
    if (ppo_st_ != CUBLAS_STATUS_SUCCESS) ::ppo::cuda_fail(::ppo::cublas_status_name(ppo_st_), #stmt, __FILE__, __LINE__); \
  } while (0)
