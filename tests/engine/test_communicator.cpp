// The communicator (engine/communicator.h) on the ranks this process runs with: one without a
// launcher (single; on the emulated device also a one-rank NCCL communicator, PPO_COMM=nccl), or
// N under `mpirun -np N` (CTest label mpi: MPI on the CPU, NCCL on CUDA; on the emulated device
// the NCCL shim over MPI). Every collective in f32, f64 and bf16 with rank-dependent values whose
// sums are exact in each dtype, so results compare exactly; the ZeRO-1 pattern (reduce-scatter
// then all-gather) gives the all-reduce; the host collectives; the argument errors.
#include <chrono>
#include <cstdlib>
#include <numeric>
#include <thread>

#include "engine/communicator.h"
#include "helpers.h"
#ifdef PPO_CUDA_EMU
#include <nccl.h>

#include "kernels/cuda/context.h"
#endif

using namespace ppo;
using namespace ppo::test;

namespace {

// Rank r's value of element i: exact in bf16, and so are the sums over up to 8 ranks.
float value(int r, int64_t i) { return float(r + 1) * float(i % 8 + 1) * 0.5f; }
float sum_over_ranks(int size, int64_t i) {
  float s = 0;
  for (int r = 0; r < size; ++r) s += value(r, i);
  return s;
}

std::vector<float> rank_values(int rank, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = value(rank, i);
  return v;
}

// Every collective over a tensor of each float dtype on `fx`'s device.
void check_collectives(BackendFixture& fx, Communicator& comm) {
  Backend& be = *fx.backend;
  const int R = comm.rank(), N = comm.size();
  const int64_t n = 24 * N;  // splits into N parts of 24
  for (DType dtype : {DType::F32, DType::F64, DType::BF16}) {
    INFO("dtype ", dtype_name(dtype), ", ", to_string(comm.kind()), " rank ", R, " of ", N);
    std::vector<float> want_sum(static_cast<size_t>(n)), want_gather(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) want_sum[size_t(i)] = sum_over_ranks(N, i);

    Tensor x = fx.upload(rank_values(R, n), dtype, {n}, "x");
    comm.all_reduce(x);
    CHECK(be.to_host(x) == want_sum);

    // ZeRO-1: the shard of the sum, then every shard everywhere: the all-reduce
    Tensor g = fx.upload(rank_values(R, n), dtype, {n / N, N}, "g");
    comm.reduce_scatter(g);
    const std::vector<float> mine = be.to_host(g);
    const int64_t part = n / N;
    CHECK(std::vector<float>(mine.begin() + R * part, mine.begin() + (R + 1) * part) ==
          std::vector<float>(want_sum.begin() + R * part, want_sum.begin() + (R + 1) * part));
    comm.all_gather(g);
    CHECK(be.to_host(g) == want_sum);

    // all-gather: rank r's part is rank r's values
    std::vector<float> poison(size_t(n), -7.0f);
    for (int64_t i = R * part; i < (R + 1) * part; ++i) poison[size_t(i)] = value(R, i);
    for (int r = 0; r < N; ++r)
      for (int64_t i = r * part; i < (r + 1) * part; ++i) want_gather[size_t(i)] = value(r, i);
    Tensor a = fx.upload(poison, dtype, {n}, "a");
    comm.all_gather(a);
    CHECK(be.to_host(a) == want_gather);

    // broadcast from the last rank
    Tensor b = fx.upload(rank_values(R, n), dtype, {n}, "b");
    comm.broadcast(b, N - 1);
    CHECK(be.to_host(b) == rank_values(N - 1, n));
  }
  // f64 sums keep what f32 would lose
  Tensor d = fx.pool->take(DType::F64, {2}, "d");
  std::vector<double> big = {1e17 + double(R), double(R) * 0.125};
  copy_bytes(d.data, d.device, big.data(), DeviceKind::CPU, sizeof(double) * 2);
  comm.all_reduce(d);
  const std::vector<double> got = be.to_host_f64(d);
  double want0 = 0, want1 = 0;
  for (int r = 0; r < N; ++r) want0 += 1e17 + double(r), want1 += double(r) * 0.125;
  CHECK(got[0] == want0);
  CHECK(got[1] == want1);

  // errors name the op and the tensor
  Tensor odd = fx.upload(rank_values(R, n + 1), DType::F32, {n + 1}, "odd");
  if (N > 1) CHECK_THROWS_WITH_AS(comm.reduce_scatter(odd), doctest::Contains("does not split into"), Error);
  Tensor ids = fx.upload_ids(std::vector<int32_t>(size_t(n), 1), {n}, "ids");
  if (comm.kind() != CommKind::Single)
    CHECK_THROWS_WITH_AS(comm.all_reduce(ids), doctest::Contains("sums are over f32, f64 and bf16"), Error);
  comm.all_gather(ids);  // i32 gathers
  comm.barrier();
}

}  // namespace

TEST_CASE("share_of: contiguous shares in rank order, sizes within one") {
  for (int size : {1, 2, 3, 4, 7})
    for (int64_t n : {0, 1, 5, 8, 64, 65}) {
      int64_t next = 0, lo = n, hi = 0;
      for (int r = 0; r < size; ++r) {
        const Share s = share_of(n, r, size);
        CHECK(s.begin == next);
        next = s.end;
        lo = std::min(lo, s.size()), hi = std::max(hi, s.size());
      }
      CHECK(next == n);
      CHECK(hi - lo <= 1);
    }
}

TEST_CASE("communicator: collectives on CPU tensors (single, or MPI under mpirun)") {
  const ProcessGroup group = ProcessGroup::world();
  BackendFixture fx(DeviceKind::CPU, Precision::F32);
  std::unique_ptr<Communicator> comm = Communicator::create(group, *fx.backend);
  CHECK(comm->size() == group.size);
  CHECK(comm->kind() == (group.size == 1 ? CommKind::Single : CommKind::Mpi));
  check_collectives(fx, *comm);
  Tensor gpu_like = fx.pool->take(DType::F32, {4}, "t");
  gpu_like.device = DeviceKind::CUDA;
  if (group.size > 1) CHECK_THROWS_WITH_AS(comm->all_reduce(gpu_like), doctest::Contains("is on cuda"), Error);
}

TEST_CASE("communicator: host values") {
  const ProcessGroup group = ProcessGroup::world();
  BackendFixture fx(DeviceKind::CPU, Precision::F32, size_t(1) << 20);
  std::unique_ptr<Communicator> comm = Communicator::create(group, *fx.backend);
  const int R = comm->rank(), N = comm->size();
  double x[2] = {1.0 + R, 0.5};
  comm->host_sum(x, 2);
  CHECK(x[0] == N * (N + 1) / 2.0);
  CHECK(x[1] == 0.5 * N);
  CHECK(comm->host_all(true));
  CHECK(!comm->host_all(R != N - 1));  // false on the last rank -> false everywhere
  // any sizes, rank order: rank r gives r + 1 copies of r
  const std::vector<int32_t> all = comm->host_gather(std::vector<int32_t>(size_t(R + 1), R));
  std::vector<int32_t> want;
  for (int r = 0; r < N; ++r) want.insert(want.end(), size_t(r + 1), r);
  CHECK(all == want);
  const std::vector<uint8_t> at_root = comm->host_gather_to_root(all.data(), size_t(R) * sizeof(int32_t));
  CHECK(at_root.size() == (R == 0 ? size_t(N * (N - 1) / 2) * sizeof(int32_t) : 0));
  int32_t word = R == N - 1 ? 42 : -1;
  comm->host_broadcast(&word, sizeof word, N - 1);
  CHECK(word == 42);
}

TEST_CASE("communicator: collectives on CUDA tensors (NCCL; one rank with PPO_COMM=nccl)") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  const ProcessGroup group = ProcessGroup::world();
  if (!nccl_ranks_or_skip(group.size)) return;
  // one rank: NCCL only when asked (a one-rank NCCL run on a GPU, or the emulator's shim)
  if (group.size == 1) setenv("PPO_COMM", "nccl", 1);
  std::unique_ptr<Communicator> comm = Communicator::create(group, *gpu->backend);
  if (group.size == 1) unsetenv("PPO_COMM");
  CHECK(comm->kind() == CommKind::Nccl);
  check_collectives(*gpu, *comm);
}

#ifdef PPO_CUDA_EMU
TEST_CASE("emulated NCCL: the shim refuses what NCCL refuses") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  const ProcessGroup group = ProcessGroup::world();
  ncclUniqueId id{};
  if (group.rank == 0) REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  if (group.size > 1) {  // the engine broadcasts rank 0's id; here a rank that kept its own fails
    setenv("PPO_COMM", "mpi", 1);
    BackendFixture cpu(DeviceKind::CPU, Precision::F32, size_t(1) << 20);
    std::unique_ptr<Communicator> host = Communicator::create(group, *cpu.backend);
    unsetenv("PPO_COMM");
    host->host_broadcast(&id, sizeof id, 0);
  }
  ncclComm_t comm = nullptr;
  REQUIRE(ncclCommInitRank(&comm, group.size, id, group.rank) == ncclSuccess);
  const cudaStream_t stream = gpu->backend->cuda()->stream;
  const int64_t n = 8 * group.size;
  Tensor x = gpu->upload(rank_values(group.rank, n), DType::F32, {n}, "x");
  float* p = x.ptr<float>();
  const size_t part = size_t(n / group.size);
  // a host buffer
  std::vector<float> host(static_cast<size_t>(n));
  CHECK(ncclAllReduce(host.data(), host.data(), size_t(n), ncclFloat32, ncclSum, comm, stream) == ncclInvalidArgument);
  CHECK(std::string(ncclGetLastError(comm)).find("not inside one device allocation") != std::string::npos);
  // past the end of an allocation of n floats (x lies inside the test pool's larger one)
  float* exact = static_cast<float*>(device_alloc(DeviceKind::CUDA, size_t(n) * sizeof(float)));
  CHECK(ncclAllReduce(exact, exact, size_t(n), ncclFloat32, ncclSum, comm, stream) == ncclSuccess);
  CHECK(ncclAllReduce(exact, exact, size_t(n) + 1, ncclFloat32, ncclSum, comm, stream) == ncclInvalidArgument);
  CHECK(std::string(ncclGetLastError(comm)).find("not inside one device allocation") != std::string::npos);
  device_free(DeviceKind::CUDA, exact);
  // an overlapping reduce-scatter that is not the in-place layout (recvbuff = sendbuff + rank * recvcount)
  if (group.size > 1) {
    float* wrong = p + (group.rank == 0 ? 1 : 0) * part + 1;
    CHECK(ncclReduceScatter(p, wrong, part - 1, ncclFloat32, ncclSum, comm, stream) == ncclInvalidArgument);
    CHECK(std::string(ncclGetLastError(comm)).find("sendbuff + rank * recvcount") != std::string::npos);
  }
  // a dtype and an op it does not sum
  CHECK(ncclAllReduce(p, p, size_t(n), ncclFloat16, ncclSum, comm, stream) == ncclInvalidArgument);
  CHECK(ncclAllReduce(p, p, size_t(n), ncclFloat32, ncclMax, comm, stream) == ncclInvalidArgument);
  // the in-place layouts work
  CHECK(ncclReduceScatter(p, p + size_t(group.rank) * part, part, ncclFloat32, ncclSum, comm, stream) == ncclSuccess);
  CHECK(ncclAllGather(p + size_t(group.rank) * part, p, part, ncclFloat32, comm, stream) == ncclSuccess);
  std::vector<float> want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = sum_over_ranks(group.size, i);
  CHECK(gpu->backend->to_host(x) == want);
  ncclCommDestroy(comm);
}
#endif

// Run by tests/tools/rank_failure.sh (hang) under mpirun with PPO_COMM_TIMEOUT_S=2: the last rank
// never enters the barrier, the others wait in it until their watchdog ends them (exit code 124).
TEST_CASE("a rank that never enters a collective: the watchdog ends the others" * doctest::skip()) {
  const ProcessGroup group = ProcessGroup::world();
  BackendFixture fx(DeviceKind::CPU, Precision::F32, size_t(1) << 16);
  std::unique_ptr<Communicator> comm = Communicator::create(group, *fx.backend);
  REQUIRE(comm->size() > 1);
  if (comm->rank() == comm->size() - 1) std::this_thread::sleep_for(std::chrono::seconds(120));  // hangs
  comm->barrier();
  FAIL("the barrier returned although rank ", comm->size() - 1, " never entered it");
}
