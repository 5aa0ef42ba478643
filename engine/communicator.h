// Data-parallel ranks (DESIGN.md "Distributed"): one process per device, launched by mpirun.
//
// ProcessGroup  who this process is among the ranks: rank, size, local rank (on its node). MPI is
//               initialized only when a launcher started the process (OMPI_COMM_WORLD_SIZE, PMI_SIZE
//               or PMIX_RANK in the environment) or PPO_MPI=1 asks; otherwise there is one rank and no
//               MPI call at all.
// Communicator  the collectives of a group over one Backend's tensors, in place, sums where they
//               reduce (f32, f64, bf16; i32 too for gather and broadcast):
//   all_reduce      x = the sum over ranks of x
//   reduce_scatter  x (size * n elements): on rank r, x[r*n, (r+1)*n) = the sum over ranks of that
//                   part; the rest of x is undefined afterwards (ZeRO-1: each rank keeps its shard of
//                   the summed gradients)
//   all_gather      x (size * n elements): every rank gets rank r's x[r*n, (r+1)*n) in that place
//   broadcast       x = root's x
//   barrier
// Three kinds (Communicator::create picks):
//   single  one rank: every collective is nothing (no MPI, no launcher)
//   mpi     CPU tensors: MPI collectives
//   nccl    CUDA tensors: NCCL on the backend's stream, ordered with its kernels; the ncclUniqueId
//           goes from rank 0 to the others over MPI; each rank uses the GPU of its local rank. On the
//           emulated device the nccl* calls go to a shim over MPI (kernels/cuda/emu/nccl.cpp), so
//           this code path (counts, offsets, dtypes, stream order) runs without a GPU.
// Small host values (loss sums, flags, per-row scores and responses, checkpoint shards) travel over
// MPI in every multi-rank kind (the host_* members).
//
// Failure: a rank that dies makes mpirun end the others; an error in one rank ends the whole job
// (abort_ranks, the ppo command's error path); an MPI collective that waits longer than
// PPO_COMM_TIMEOUT_S seconds (default 900; 0 = forever) ends its process with exit code 124, and
// mpirun then the others (a rank that hangs).
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ppo {

class Backend;

// Which ranks a trainer runs on: every rank the launcher started (one without a launcher), or this
// process alone (e.g. a one-rank reference run inside a multi-rank test).
enum class Ranks : uint8_t { World, Self };

struct ProcessGroup {
  int rank = 0, size = 1;
  int local_rank = 0;  // among the ranks of this node (the GPU a CUDA rank uses)
  bool mpi = false;    // the ranks of MPI_COMM_WORLD (false: this process alone)

  // The ranks a launcher started (MPI_Init on the first call; finalized at exit), or this process
  // alone when no launcher did.
  static ProcessGroup world();
  // This process alone, also inside a multi-rank job (a reference run in a test).
  static ProcessGroup self() { return {}; }
  static ProcessGroup of(Ranks ranks) { return ranks == Ranks::World ? world() : self(); }
};

// Whether the build can run several ranks (MPI found), and NCCL ranks.
bool mpi_compiled();
bool nccl_compiled();

// Ends every rank of the job with `code` (MPI_Abort) when MPI runs; else does nothing. For an error
// that one rank cannot recover from: the others would wait for it forever.
void abort_ranks(int code);

// The CUDA device of a rank: the local rank's (modulo the GPUs the node has). Call before creating
// the rank's Backend.
void use_local_device(const ProcessGroup& group, DeviceKind device);

enum class CommKind : uint8_t { Single, Mpi, Nccl };
const char* to_string(CommKind kind);

// [begin, end) of n items that rank `rank` of `size` takes: contiguous, sizes differing by one at
// most, in rank order.
struct Share {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
Share share_of(int64_t n, int rank, int size);

class Communicator {
 public:
  // single for one rank (PPO_COMM=nccl forces nccl, e.g. a one-rank NCCL check on a GPU), mpi for a
  // CPU backend, nccl for a CUDA one. `backend` must outlive the communicator.
  static std::unique_ptr<Communicator> create(const ProcessGroup& group, Backend& backend);
  // The one-rank communicator (no backend needed: it does nothing).
  static std::unique_ptr<Communicator> single();
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return group_.rank; }
  int size() const { return group_.size; }
  bool is_root() const { return group_.rank == 0; }
  const ProcessGroup& group() const { return group_; }
  virtual CommKind kind() const = 0;
  // This rank's share of n items (share_of).
  Share share(int64_t n) const { return share_of(n, rank(), size()); }

  // ---- collectives on the backend's tensors (see the header) ------------------------------------
  virtual void all_reduce(Tensor x) = 0;
  virtual void reduce_scatter(Tensor x) = 0;  // x.numel() a multiple of size()
  virtual void all_gather(Tensor x) = 0;      // x.numel() a multiple of size()
  virtual void broadcast(Tensor x, int root) = 0;
  void barrier() const;

  // ---- host values (MPI; nothing to do on one rank) ---------------------------------------------
  void host_sum(double* x, size_t n) const;  // x = the sum over ranks of x
  bool host_all(bool ok) const;              // every rank's `ok`
  // Every rank's `mine` (any sizes), concatenated in rank order, on every rank.
  template <class T>
  std::vector<T> host_gather(const std::vector<T>& mine) const {
    const std::vector<uint8_t> bytes = host_gather_bytes(mine.data(), mine.size() * sizeof(T));
    std::vector<T> out(bytes.size() / sizeof(T));
    if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  std::vector<uint8_t> host_gather_bytes(const void* data, size_t bytes) const;
  // Every rank's bytes concatenated in rank order on rank 0 (empty elsewhere); any sizes, also
  // beyond 2^31 bytes (a checkpoint's optimizer shards).
  std::vector<uint8_t> host_gather_to_root(const void* data, size_t bytes) const;
  // root's bytes into `data` on every rank (the same size everywhere).
  void host_broadcast(void* data, size_t bytes, int root) const;

 protected:
  explicit Communicator(const ProcessGroup& group) : group_(group) {}
  ProcessGroup group_;
};

// ---- for the implementations -----------------------------------------------------------------------
// The NCCL communicator (engine/communicator_nccl.cu; builds with NCCL or the emulated device).
std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup& group, Backend& backend);
// A collective's tensor: not empty, on `device`, a dtype that sums (Reduce::Sum), `parts` equal parts.
enum class Reduce : uint8_t { None, Sum };
void check_collective(const Tensor& x, const char* op, DeviceKind device, Reduce reduce, int parts);

}  // namespace ppo
