#include "kernels/cuda/context.h"
#include <algorithm>

namespace ppo {

CudaContext::CudaContext() {
  int device = 0;
  PPO_CHECK_CUDA(cudaGetDevice(&device));
  PPO_CHECK_CUDA(cudaGetDeviceProperties(&props, device));
  PPO_CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  PPO_CHECK_CUBLAS(cublasCreate(&cublas));
  PPO_CHECK_CUBLAS(cublasSetStream(cublas, stream));
  PPO_CHECK_CUBLAS(cublasLtCreate(&cublaslt));
}

CudaContext::~CudaContext() {
  if (cublaslt) cublasLtDestroy(cublaslt);
  if (cublas) cublasDestroy(cublas);
  if (stream) cudaStreamDestroy(stream);
}

size_t cuda_scratch_bytes(int64_t max_rows, int64_t vocab) {
  const size_t cublaslt_workspace = size_t(32) << 20;
  // vocabulary pass (lm_head.cu): per chunk row (up to 256 rows) the logits in f32 and, in the
  // backward, dlogits in bf16 for the GEMMs; plus alignment padding of the two takes
  const size_t vocab_chunk = size_t(std::min<int64_t>(max_rows, 256)) * size_t(vocab) * (4 + 2) + 2 * kArenaAlignment;
  const size_t reductions = size_t(max_rows) * 64 + (1 << 20);
  return cublaslt_workspace + vocab_chunk + reductions;
}

}  // namespace ppo
