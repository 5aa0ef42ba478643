// The NCCL communicator (engine/communicator.h): CUDA tensors, collectives on the backend's stream
// (ordered with its kernels; nothing waits on the host), sums over f32, f64 and bf16. Rank 0's
// ncclUniqueId reaches the others over MPI (Communicator::host_broadcast); each rank uses the GPU
// of its local rank (use_local_device, before its Backend). On the emulated device the same calls go
// to kernels/cuda/emu/nccl.cpp, which checks their counts, offsets, dtypes and streams.
#ifdef PPO_HAS_NCCL
#include <nccl.h>

#include "engine/communicator.h"
#include "engine/cuda_check.h"
#include "kernels/backend.h"
#include "kernels/cuda/context.h"

namespace ppo {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::F64:
      return ncclFloat64;
    case DType::BF16:
      return ncclBfloat16;
    case DType::I32:
      return ncclInt32;
  }
  return ncclFloat32;
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(const ProcessGroup& group, Backend& backend) : Communicator(group) {
    PPO_ASSERT(backend.device() == DeviceKind::CUDA && backend.cuda() != nullptr,
               "the NCCL communicator needs a CUDA backend");
    PPO_ASSERT(group.size == 1 || group.mpi, "NCCL ranks need MPI to find each other (launch with mpirun)");
    stream_ = backend.cuda()->stream;
    ncclUniqueId id{};
    if (is_root()) PPO_CHECK_NCCL(ncclGetUniqueId(&id));
    host_broadcast(&id, sizeof id, 0);
    PPO_CHECK_NCCL(ncclCommInitRank(&comm_, size(), id, rank()));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  CommKind kind() const override { return CommKind::Nccl; }

  void all_reduce(Tensor x) override {
    check_collective(x, "all_reduce", DeviceKind::CUDA, Reduce::Sum, 1);
    PPO_CHECK_NCCL(ncclAllReduce(x.data, x.data, size_t(x.numel()), nccl_type(x.dtype), ncclSum, comm_, stream_));
  }
  // In place: this rank's part of x receives the sum of every rank's part there.
  void reduce_scatter(Tensor x) override {
    check_collective(x, "reduce_scatter", DeviceKind::CUDA, Reduce::Sum, size());
    const size_t n = size_t(x.numel() / size());
    PPO_CHECK_NCCL(ncclReduceScatter(x.data, part(x, n), n, nccl_type(x.dtype), ncclSum, comm_, stream_));
  }
  // In place: this rank's part of x is what it sends.
  void all_gather(Tensor x) override {
    check_collective(x, "all_gather", DeviceKind::CUDA, Reduce::None, size());
    const size_t n = size_t(x.numel() / size());
    PPO_CHECK_NCCL(ncclAllGather(part(x, n), x.data, n, nccl_type(x.dtype), comm_, stream_));
  }
  void broadcast(Tensor x, int root) override {
    check_collective(x, "broadcast", DeviceKind::CUDA, Reduce::None, 1);
    PPO_ASSERT(root >= 0 && root < size(), "broadcast: root ", root, " of ", size(), " ranks");
    PPO_CHECK_NCCL(ncclBroadcast(x.data, x.data, size_t(x.numel()), nccl_type(x.dtype), root, comm_, stream_));
  }

 private:
  // This rank's part of n elements.
  void* part(const Tensor& x, size_t n) const {
    return static_cast<char*>(x.data) + size_t(rank()) * n * dtype_size(x.dtype);
  }
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup& group, Backend& backend) {
  return std::make_unique<NcclCommunicator>(group, backend);
}

}  // namespace ppo
#endif  // PPO_HAS_NCCL
