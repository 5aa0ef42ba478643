// The process group (MPI when a launcher started the process), the host collectives, and the
// single and MPI communicators (engine/communicator.h). The NCCL one: engine/communicator_nccl.cu.
#include "engine/communicator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "engine/device_memory.h"
#include "engine/error.h"
#include "kernels/backend.h"

#ifdef PPO_HAS_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace ppo {

bool mpi_compiled() {
#ifdef PPO_HAS_MPI
  return true;
#else
  return false;
#endif
}

bool nccl_compiled() {
#ifdef PPO_HAS_NCCL
  return true;
#else
  return false;
#endif
}

const char* to_string(CommKind kind) {
  switch (kind) {
    case CommKind::Single:
      return "single";
    case CommKind::Mpi:
      return "mpi";
    case CommKind::Nccl:
      return "nccl";
  }
  return "?";
}

Share share_of(int64_t n, int rank, int size) {
  PPO_ASSERT(size >= 1 && rank >= 0 && rank < size && n >= 0, "share_of: rank ", rank, " of ", size, ", ", n, " items");
  return {n * rank / size, n * (rank + 1) / size};
}

namespace {

// Whether a launcher started this process as one rank of a job (or PPO_MPI=1 asks for MPI).
bool launched_as_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(var)) return true;
  const char* asked = std::getenv("PPO_MPI");
  return asked && std::string(asked) == "1";
}

#ifdef PPO_HAS_MPI

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  PPO_FAIL(call, ": ", std::string(text, size_t(len)));
}

// bf16 sums for MPI (it has no bf16 type): pairs of bytes added as f32 and rounded back.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = bf16_from_f32(f32_from_bf16(a[i]) + f32_from_bf16(b[i]));
}

// MPI for the process's life: initialized on first use, finalized at exit. A watchdog thread ends
// the process when one collective waits longer than the timeout (a rank that died or hangs).
class MpiWorld {
 public:
  static MpiWorld& get() {
    static MpiWorld world;
    return world;
  }
  const ProcessGroup& group() const { return group_; }
  MPI_Datatype bf16_type() const { return bf16_type_; }
  MPI_Op bf16_op() const { return bf16_op_; }

  // Marks the calling thread as waiting in collective `what` (nesting counts once).
  void enter(const char* what) {
    if (depth_++ > 0) return;
    what_.store(what);
    const auto now = std::chrono::steady_clock::now().time_since_epoch();
    deadline_ns_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() + timeout_ns_);
  }
  void leave() {
    if (--depth_ == 0) deadline_ns_.store(0);
  }

  ~MpiWorld() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    MPI_Type_free(&bf16_type_);
    MPI_Op_free(&bf16_op_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

 private:
  MpiWorld() {
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    MPI_Comm_rank(MPI_COMM_WORLD, &group_.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &group_.size);
    MPI_Comm node;  // the ranks sharing this node's memory: the local rank picks the GPU
    check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, group_.rank, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    MPI_Comm_rank(node, &group_.local_rank);
    MPI_Comm_free(&node);
    group_.mpi = true;
    MPI_Type_contiguous(2, MPI_BYTE, &bf16_type_);
    MPI_Type_commit(&bf16_type_);
    MPI_Op_create(&bf16_sum, 1, &bf16_op_);
    const char* t = std::getenv("PPO_COMM_TIMEOUT_S");
    const double seconds = t ? std::atof(t) : 900.0;
    timeout_ns_ = int64_t(seconds * 1e9);
    if (seconds > 0) watchdog_ = std::thread([this] { watch(); });
  }

  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      wake_.wait_for(lock, std::chrono::milliseconds(200));
      const int64_t deadline = deadline_ns_.load();
      const int64_t now =
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
              .count();
      if (deadline != 0 && now > deadline) {
        std::fprintf(stderr,
                     "error (rank %d of %d): %s waited more than %.0f s for the other ranks (PPO_COMM_TIMEOUT_S): "
                     "one died or hangs; ending this rank\n",
                     group_.rank, group_.size, what_.load(), double(timeout_ns_) / 1e9);
        std::fflush(stderr);
        std::_Exit(124);
      }
    }
  }

  ProcessGroup group_;
  MPI_Datatype bf16_type_ = MPI_DATATYPE_NULL;
  MPI_Op bf16_op_ = MPI_OP_NULL;
  int64_t timeout_ns_ = 0;
  int depth_ = 0;  // the calling (main) thread's nesting
  std::atomic<int64_t> deadline_ns_{0};
  std::atomic<const char*> what_{""};
  std::thread watchdog_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
};

// A collective in progress, for the watchdog.
class Waiting {
 public:
  explicit Waiting(const char* what) { MpiWorld::get().enter(what); }
  ~Waiting() { MpiWorld::get().leave(); }
  Waiting(const Waiting&) = delete;
  Waiting& operator=(const Waiting&) = delete;
};

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::I32:
      return MPI_INT;
    case DType::BF16:
      return MpiWorld::get().bf16_type();
  }
  return MPI_BYTE;
}

MPI_Op mpi_sum(DType t) { return t == DType::BF16 ? MpiWorld::get().bf16_op() : MPI_SUM; }

int mpi_count(int64_t n, const char* op) {
  PPO_ASSERT(n >= 0 && n <= INT_MAX, op, ": ", n, " elements exceed MPI's count (2^31 - 1)");
  return int(n);
}

#endif  // PPO_HAS_MPI

class SingleCommunicator : public Communicator {
 public:
  SingleCommunicator() : Communicator(ProcessGroup::self()) {}
  CommKind kind() const override { return CommKind::Single; }
  void all_reduce(Tensor) override {}
  void reduce_scatter(Tensor) override {}
  void all_gather(Tensor) override {}
  void broadcast(Tensor, int root) override { PPO_ASSERT(root == 0, "broadcast: root ", root, " of one rank"); }
};

#ifdef PPO_HAS_MPI
class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(const ProcessGroup& group) : Communicator(group) {
    PPO_ASSERT(group.mpi, "the MPI communicator needs the ranks of MPI_COMM_WORLD");
  }
  CommKind kind() const override { return CommKind::Mpi; }

  void all_reduce(Tensor x) override {
    check_collective(x, "all_reduce", DeviceKind::CPU, Reduce::Sum, 1);
    Waiting w("all_reduce");
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, x.data, mpi_count(x.numel(), "all_reduce"), mpi_type(x.dtype),
                            mpi_sum(x.dtype), MPI_COMM_WORLD),
              "MPI_Allreduce");
  }
  // MPI's in-place reduce-scatter leaves the result at the front: moved to the rank's own part.
  void reduce_scatter(Tensor x) override {
    check_collective(x, "reduce_scatter", DeviceKind::CPU, Reduce::Sum, size());
    const int64_t n = x.numel() / size();
    Waiting w("reduce_scatter");
    check_mpi(MPI_Reduce_scatter_block(MPI_IN_PLACE, x.data, mpi_count(n, "reduce_scatter"), mpi_type(x.dtype),
                                       mpi_sum(x.dtype), MPI_COMM_WORLD),
              "MPI_Reduce_scatter_block");
    const size_t part = size_t(n) * dtype_size(x.dtype);
    if (rank() > 0) std::memcpy(static_cast<char*>(x.data) + size_t(rank()) * part, x.data, part);
  }
  void all_gather(Tensor x) override {
    check_collective(x, "all_gather", DeviceKind::CPU, Reduce::None, size());
    Waiting w("all_gather");
    check_mpi(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x.data, mpi_count(x.numel() / size(), "all_gather"),
                            mpi_type(x.dtype), MPI_COMM_WORLD),
              "MPI_Allgather");
  }
  void broadcast(Tensor x, int root) override {
    check_collective(x, "broadcast", DeviceKind::CPU, Reduce::None, 1);
    PPO_ASSERT(root >= 0 && root < size(), "broadcast: root ", root, " of ", size(), " ranks");
    Waiting w("broadcast");
    check_mpi(MPI_Bcast(x.data, mpi_count(x.numel(), "broadcast"), mpi_type(x.dtype), root, MPI_COMM_WORLD),
              "MPI_Bcast");
  }
};
#endif

}  // namespace

void check_collective(const Tensor& x, const char* op, DeviceKind device, Reduce reduce, int parts) {
  PPO_ASSERT(!x.empty() && x.device == device, op, ": tensor '", x.name, "' is ", x.empty() ? "empty" : "on ",
             x.empty() ? "" : device_name(x.device), "; the communicator's tensors are on ", device_name(device));
  PPO_ASSERT(reduce == Reduce::None || x.dtype != DType::I32, op, ": tensor '", x.name,
             "' is i32; sums are over f32, f64 and bf16");
  PPO_ASSERT(x.numel() % parts == 0, op, ": tensor '", x.name, "' ", x.shape_str(), " does not split into ", parts,
             " equal parts (one per rank)");
}

ProcessGroup ProcessGroup::world() {
#ifdef PPO_HAS_MPI
  if (launched_as_rank()) return MpiWorld::get().group();
#else
  PPO_ASSERT(!launched_as_rank() || !std::getenv("OMPI_COMM_WORLD_SIZE") ||
                 std::string(std::getenv("OMPI_COMM_WORLD_SIZE")) == "1",
             "this process is one of ", std::getenv("OMPI_COMM_WORLD_SIZE"),
             " ranks, but the build has no MPI (install libopenmpi-dev and reconfigure)");
#endif
  return self();
}

void abort_ranks(int code) {
#ifdef PPO_HAS_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized && MpiWorld::get().group().size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)code;
#endif
}

void use_local_device(const ProcessGroup& group, DeviceKind device) {
  if (device != DeviceKind::CUDA) return;
  const int count = cuda_device_count();
  if (count > 0) cuda_set_device(group.local_rank % count);
}

// ---- Communicator -----------------------------------------------------------------------------------

Communicator::~Communicator() = default;

std::unique_ptr<Communicator> Communicator::single() { return std::make_unique<SingleCommunicator>(); }

std::unique_ptr<Communicator> Communicator::create(const ProcessGroup& group, Backend& backend) {
  const char* env = std::getenv("PPO_COMM");
  const std::string forced = env ? env : "";
  PPO_ASSERT(forced.empty() || forced == "single" || forced == "mpi" || forced == "nccl", "PPO_COMM = '", forced,
             "': expected single, mpi or nccl");
  const bool cuda = backend.device() == DeviceKind::CUDA;
  if (forced == "nccl" || (group.size > 1 && cuda && forced != "mpi")) {
    PPO_ASSERT(cuda, "PPO_COMM = nccl needs CUDA ranks (this one runs on the cpu)");
    return make_nccl_communicator(group, backend);
  }
  if (group.size == 1 && forced != "mpi") return single();
  PPO_ASSERT(!cuda, "PPO_COMM = mpi: the MPI communicator carries CPU tensors; CUDA ranks use NCCL");
#ifdef PPO_HAS_MPI
  return std::make_unique<MpiCommunicator>(group);
#else
  PPO_FAIL("several ranks need MPI: this build has none (install libopenmpi-dev and reconfigure)");
#endif
}

#ifndef PPO_HAS_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup&, Backend&) {
  PPO_FAIL("CUDA ranks need NCCL: this build has none (",
           cuda_compiled() ? "libnccl was not found in the CUDA toolkit" : "no CUDA backend", ")");
}
#endif

// ---- host values ---------------------------------------------------------------------------------------

void Communicator::barrier() const {
  if (size() == 1) return;
#ifdef PPO_HAS_MPI
  Waiting w("barrier");
  check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void Communicator::host_sum(double* x, size_t n) const {
  if (size() == 1 || n == 0) return;
#ifdef PPO_HAS_MPI
  Waiting w("host_sum");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, x, mpi_count(int64_t(n), "host_sum"), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
#endif
}

bool Communicator::host_all(bool ok) const {
  if (size() == 1) return ok;
  int v = ok ? 1 : 0;
#ifdef PPO_HAS_MPI
  Waiting w("host_all");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD), "MPI_Allreduce");
#endif
  return v != 0;
}

std::vector<uint8_t> Communicator::host_gather_bytes(const void* data, size_t bytes) const {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (size() == 1) return std::vector<uint8_t>(p, p + bytes);
#ifdef PPO_HAS_MPI
  Waiting w("host_gather");
  const int mine = mpi_count(int64_t(bytes), "host_gather");
  std::vector<int> counts(static_cast<size_t>(size())), offsets(static_cast<size_t>(size()));
  check_mpi(MPI_Allgather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
  int64_t total = 0;
  for (int r = 0; r < size(); ++r) {
    offsets[size_t(r)] = mpi_count(total, "host_gather");
    total += counts[size_t(r)];
  }
  std::vector<uint8_t> out(static_cast<size_t>(total));
  check_mpi(MPI_Allgatherv(data, mine, MPI_BYTE, out.data(), counts.data(), offsets.data(), MPI_BYTE, MPI_COMM_WORLD),
            "MPI_Allgatherv");
  return out;
#else
  return {};
#endif
}

std::vector<uint8_t> Communicator::host_gather_to_root(const void* data, size_t bytes) const {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (size() == 1) return std::vector<uint8_t>(p, p + bytes);
#ifdef PPO_HAS_MPI
  Waiting w("host_gather_to_root");
  constexpr size_t kChunk = size_t(1) << 30;  // MPI counts are int
  uint64_t mine = bytes;
  std::vector<uint64_t> sizes(static_cast<size_t>(size()));
  check_mpi(MPI_Gather(&mine, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "MPI_Gather");
  if (!is_root()) {
    for (size_t at = 0; at < bytes; at += kChunk)
      check_mpi(MPI_Send(p + at, int(std::min(kChunk, bytes - at)), MPI_BYTE, 0, 0, MPI_COMM_WORLD), "MPI_Send");
    return {};
  }
  size_t total = 0;
  for (uint64_t s : sizes) total += size_t(s);
  std::vector<uint8_t> out(total);
  size_t offset = 0;
  for (int r = 0; r < size(); ++r) {
    const size_t n = size_t(sizes[size_t(r)]);
    if (r == 0) std::memcpy(out.data(), p, n);
    for (size_t at = 0; r > 0 && at < n; at += kChunk)
      check_mpi(MPI_Recv(out.data() + offset + at, int(std::min(kChunk, n - at)), MPI_BYTE, r, 0, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE),
                "MPI_Recv");
    offset += n;
  }
  return out;
#else
  return {};
#endif
}

void Communicator::host_broadcast(void* data, size_t bytes, int root) const {
  if (size() == 1) return;
#ifdef PPO_HAS_MPI
  Waiting w("host_broadcast");
  check_mpi(MPI_Bcast(data, mpi_count(int64_t(bytes), "host_broadcast"), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
#else
  (void)data, (void)bytes, (void)root;
#endif
}

}  // namespace ppo
