// CUDA graphs: the ops of a recorded step (Backend::record) captured from the backend's stream
// once and launched as a whole, one host call instead of one per kernel (a decode step of a
// 12-layer model is ~150 launches: ~600 us of launch overhead against ~80 us of weight reads).
// Captured launches keep the arguments they had at capture; what changes between launches is read
// from device memory by the kernels (DeviceIndex).
#include "kernels/cuda/context.h"

namespace ppo::cuda {

cudaGraphExec_t capture_graph(CudaContext& ctx, const std::function<void()>& ops) {
  // Global mode: an unsafe call from any thread of the process (a synchronization, an allocation)
  // fails the capture instead of running.
  PPO_CHECK_CUDA(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeGlobal));
  try {
    ops();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(ctx.stream, &partial);  // the stream leaves capture mode; the error is the op's
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t graph = nullptr;
  PPO_CHECK_CUDA(cudaStreamEndCapture(ctx.stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the executable graph is a copy
  PPO_CHECK_CUDA(instantiated);
  return exec;
}

void launch_graph(CudaContext& ctx, cudaGraphExec_t graph) { PPO_CHECK_CUDA(cudaGraphLaunch(graph, ctx.stream)); }

void destroy_graph(cudaGraphExec_t graph) { cudaGraphExecDestroy(graph); }

}  // namespace ppo::cuda
