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

namespace {
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper
}  // namespace

CudaContext::~CudaContext() {
  lt_plans.reset();
  if (cublaslt) cublasLtDestroy(cublaslt);
  if (cublas) cublasDestroy(cublas);
  if (stream) cudaStreamDestroy(stream);
}

void CudaContext::attach_scratch(Carver* carver) {
  scratch = carver;
  status = static_cast<DeviceStatus*>(carver->take(DType::I32, {int64_t(sizeof(DeviceStatus) / 4)}, "device status").data);
  PPO_CHECK_CUDA(cudaMemsetAsync(status, 0, sizeof(DeviceStatus), stream));
  void* workspace = carver->take(DType::I32, {int64_t(kCublasWorkspaceBytes / 4)}, "cublas workspace").data;
  PPO_CHECK_CUBLAS(cublasSetWorkspace(cublas, workspace, kCublasWorkspaceBytes));
}

DeviceStatus cuda::wait_and_take_status(CudaContext& ctx) {
  DeviceStatus host{};
  if (!ctx.status) {  // no scratch attached yet: nothing can have been recorded
    PPO_CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
    return host;
  }
  PPO_CHECK_CUDA(cudaMemcpyAsync(&host, ctx.status, sizeof host, cudaMemcpyDeviceToHost, ctx.stream));
  PPO_CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  if (host.code != 0) PPO_CHECK_CUDA(cudaMemsetAsync(ctx.status, 0, sizeof host, ctx.stream));
  return host;
}

size_t cuda_scratch_bytes(int64_t max_rows, int64_t vocab) {
  // cuBLASLt's and cuBLAS's workspaces, the device status word
  const size_t workspaces = (size_t(32) << 20) + kCublasWorkspaceBytes + 2 * kArenaAlignment;
  // vocabulary pass (lm_head.cu): per chunk row (up to 256 rows) the logits in f32 and, in the
  // backward, dlogits in bf16 for the GEMMs; plus alignment padding of the two takes
  const size_t vocab_chunk = size_t(std::min<int64_t>(max_rows, 256)) * size_t(vocab) * (4 + 2) + 2 * kArenaAlignment;
  const size_t reductions = size_t(max_rows) * 64 + (1 << 20);
  return workspaces + vocab_chunk + reductions;
}

}  // namespace ppo
