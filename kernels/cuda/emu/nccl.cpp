// NCCL on the emulated device: the nccl* calls the engine makes (engine/communicator_nccl.cu),
// declared by the toolkit's nccl.h, carried out over MPI between the ranks mpirun started (one
// emulated device each). Each call first checks what NCCL requires and returns ncclInvalidArgument
// (ncclInvalidUsage for a communicator misuse), with the detail in ncclGetLastError, when it does not
// hold:
//   - every buffer lies inside one device allocation for its whole count (a host pointer, a count
//     past the end, a reduce-scatter's send buffer shorter than nranks * recvcount);
//   - overlapping send and receive buffers are NCCL's in-place layouts: all-reduce and broadcast
//     sendbuff == recvbuff, reduce-scatter recvbuff == sendbuff + rank * recvcount, all-gather
//     sendbuff == recvbuff + rank * sendcount;
//   - the dtype is one the engine sums (f32, f64, bf16, i32), the op ncclSum, the stream alive, the
//     communicator initialized by every rank with rank 0's ncclUniqueId (checked at init).
// Work on any stream runs at once in issue order (runtime.cpp), so a collective sees every kernel
// issued before it, as on a GPU. Reductions add the ranks' values in rank order on every rank: the
// same bits everywhere. A collective counts as one launch. Stream capture is not emulated for NCCL:
// a collective while a stream captures fails (ncclInvalidUsage) and invalidates the capture.
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/cuda/emu/internal.h"

struct ncclComm {
  int nranks = 1, rank = 0;
  int cuda_device = 0;
};

namespace ppo::emu {
namespace {

std::string& last_error() {
  static std::string text;
  return text;
}

ncclResult_t fail(ncclResult_t r, const std::string& detail) {
  last_error() = detail;
  return r;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclFloat32:
    case ncclInt32:
      return 4;
    case ncclFloat64:
      return 8;
    case ncclBfloat16:
      return 2;
    default:
      return 0;
  }
}

const char* type_name(ncclDataType_t t) {
  switch (t) {
    case ncclFloat32:
      return "ncclFloat32";
    case ncclFloat64:
      return "ncclFloat64";
    case ncclBfloat16:
      return "ncclBfloat16";
    case ncclInt32:
      return "ncclInt32";
    default:
      return "an unsupported ncclDataType_t";
  }
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

// The checks every collective shares: the communicator, the dtype (and op), the stream, and each
// buffer inside one device allocation.
ncclResult_t check_call(const char* call, ncclComm_t comm, ncclDataType_t type, const ncclRedOp_t* op,
                        cudaStream_t stream) {
  if (refuse_under_capture(std::string(call) + " (not emulated under capture)") != cudaSuccess)
    return fail(ncclInvalidUsage,
                std::string(call) + ": not emulated under stream capture (the capture is invalidated)");
  if (comm == nullptr) return fail(ncclInvalidArgument, std::string(call) + ": comm is NULL");
  if (type_size(type) == 0)
    return fail(ncclInvalidArgument, std::string(call) + ": datatype " + std::to_string(int(type)) +
                                         " is not one the emulator sums (f32, f64, bf16, i32)");
  if (op && *op != ncclSum)
    return fail(ncclInvalidArgument, std::string(call) + ": op " + std::to_string(int(*op)) + " (only ncclSum)");
  if (cudaStreamQuery(stream) != cudaSuccess) {
    cudaGetLastError();
    return fail(ncclInvalidArgument, std::string(call) + ": stream " + hex(stream) + " does not exist");
  }
  return ncclSuccess;
}

ncclResult_t check_buffer(const char* call, const char* what, const void* p, size_t count, ncclDataType_t type) {
  if (count == 0) return ncclSuccess;
  if (!device_range(p, count * type_size(type)))
    return fail(ncclInvalidArgument, std::string(call) + ": " + what + " " + hex(p) + " + " + std::to_string(count) +
                                         " x " + type_name(type) + " is not inside one device allocation");
  return ncclSuccess;
}

bool overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const char *x = static_cast<const char*>(a), *y = static_cast<const char*>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

int mpi_bytes(size_t bytes) {
  PPO_ASSERT(bytes <= size_t(INT32_MAX), "emulated NCCL: ", bytes, " bytes in one collective exceed 2^31 - 1");
  return int(bytes);
}

// out[i] = sum over ranks r (in rank order) of parts[r][i]: `parts` holds nranks arrays of `count`.
void sum_in_rank_order(void* out, const std::vector<uint8_t>& parts, int nranks, size_t count, ncclDataType_t type) {
  const size_t stride = count * type_size(type);
  for (size_t i = 0; i < count; ++i) {
    switch (type) {
      case ncclFloat32: {
        float s = 0;
        for (int r = 0; r < nranks; ++r) s += reinterpret_cast<const float*>(parts.data() + size_t(r) * stride)[i];
        static_cast<float*>(out)[i] = s;
        break;
      }
      case ncclFloat64: {
        double s = 0;
        for (int r = 0; r < nranks; ++r) s += reinterpret_cast<const double*>(parts.data() + size_t(r) * stride)[i];
        static_cast<double*>(out)[i] = s;
        break;
      }
      case ncclInt32: {
        int32_t s = 0;
        for (int r = 0; r < nranks; ++r) s += reinterpret_cast<const int32_t*>(parts.data() + size_t(r) * stride)[i];
        static_cast<int32_t*>(out)[i] = s;
        break;
      }
      default: {  // bf16: an f32 sum rounded once
        float s = 0;
        for (int r = 0; r < nranks; ++r)
          s += f32_from_bf16(reinterpret_cast<const bf16*>(parts.data() + size_t(r) * stride)[i]);
        static_cast<bf16*>(out)[i] = bf16_from_f32(s);
      }
    }
  }
}

}  // namespace
}  // namespace ppo::emu

using namespace ppo::emu;

extern "C" {

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error";
    case ncclSystemError:
      return "unhandled system error";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return last_error().c_str(); }

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "ppo-emu-nccl %d %p", int(getpid()), static_cast<void*>(id));
  return ncclSuccess;
}

// Every rank must pass rank 0's id (the engine broadcasts it over MPI): compared here.
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (comm == nullptr) return fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return fail(ncclInvalidArgument,
                "ncclCommInitRank: rank " + std::to_string(rank) + " of " + std::to_string(nranks));
  if (std::strncmp(id.internal, "ppo-emu-nccl ", 13) != 0)
    return fail(ncclInvalidArgument, "ncclCommInitRank: the ncclUniqueId does not come from ncclGetUniqueId");
  if (nranks > 1) {
    int initialized = 0, size = 0, me = 0;
    MPI_Initialized(&initialized);
    if (!initialized)
      return fail(ncclInvalidUsage, "ncclCommInitRank: " + std::to_string(nranks) +
                                        " ranks need MPI on the emulated device (launch with mpirun)");
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (size != nranks || me != rank)
      return fail(ncclInvalidUsage, "ncclCommInitRank: rank " + std::to_string(rank) + " of " + std::to_string(nranks) +
                                        ", MPI says rank " + std::to_string(me) + " of " + std::to_string(size));
    ncclUniqueId root = id;
    MPI_Bcast(root.internal, NCCL_UNIQUE_ID_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD);
    int same = std::memcmp(root.internal, id.internal, NCCL_UNIQUE_ID_BYTES) == 0;
    MPI_Allreduce(MPI_IN_PLACE, &same, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (!same)
      return fail(ncclInvalidUsage,
                  "ncclCommInitRank: the ranks passed different ncclUniqueIds (rank 0's must reach "
                  "every rank)");
  }
  *comm = new ncclComm{nranks, rank, 0};
  cudaGetDevice(&(*comm)->cuda_device);
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }
ncclResult_t ncclCommFinalize(ncclComm_t) { return ncclSuccess; }
ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* error) {
  *error = ncclSuccess;
  return ncclSuccess;
}
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  *count = comm->nranks;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  *rank = comm->rank;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  *device = comm->cuda_device;
  return ncclSuccess;
}
ncclResult_t ncclGroupStart() { return ncclSuccess; }
ncclResult_t ncclGroupEnd() { return ncclSuccess; }

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const char* call = "ncclAllReduce";
  ncclResult_t r = check_call(call, comm, type, &op, stream);
  if (r == ncclSuccess) r = check_buffer(call, "sendbuff", sendbuff, count, type);
  if (r == ncclSuccess) r = check_buffer(call, "recvbuff", recvbuff, count, type);
  const size_t bytes = count * type_size(type);
  if (r == ncclSuccess && sendbuff != recvbuff && overlap(sendbuff, bytes, recvbuff, bytes))
    r = fail(ncclInvalidArgument, std::string(call) + ": sendbuff and recvbuff overlap but differ (in place: equal)");
  if (r != ncclSuccess) return r;
  issue_work();
  if (count == 0) return ncclSuccess;
  std::vector<uint8_t> parts(bytes * size_t(comm->nranks));
  if (comm->nranks == 1)
    std::memcpy(parts.data(), sendbuff, bytes);
  else
    MPI_Allgather(sendbuff, mpi_bytes(bytes), MPI_BYTE, parts.data(), mpi_bytes(bytes), MPI_BYTE, MPI_COMM_WORLD);
  sum_in_rank_order(recvbuff, parts, comm->nranks, count, type);
  return ncclSuccess;
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const char* call = "ncclReduceScatter";
  ncclResult_t r = check_call(call, comm, type, &op, stream);
  if (r != ncclSuccess) return r;
  const size_t part = recvcount * type_size(type), n = size_t(comm->nranks);
  r = check_buffer(call, "sendbuff (nranks x recvcount)", sendbuff, recvcount * n, type);
  if (r == ncclSuccess) r = check_buffer(call, "recvbuff", recvbuff, recvcount, type);
  const void* in_place = static_cast<const char*>(sendbuff) + size_t(comm->rank) * part;
  if (r == ncclSuccess && recvbuff != in_place && overlap(sendbuff, part * n, recvbuff, part))
    r = fail(ncclInvalidArgument, std::string(call) +
                                      ": recvbuff overlaps sendbuff but is not sendbuff + rank * "
                                      "recvcount (rank " +
                                      std::to_string(comm->rank) + ")");
  if (r != ncclSuccess) return r;
  issue_work();
  if (recvcount == 0) return ncclSuccess;
  std::vector<uint8_t> parts(part * n);  // every rank's part `rank`
  if (n == 1)
    std::memcpy(parts.data(), sendbuff, part);
  else
    MPI_Alltoall(sendbuff, mpi_bytes(part), MPI_BYTE, parts.data(), mpi_bytes(part), MPI_BYTE, MPI_COMM_WORLD);
  sum_in_rank_order(recvbuff, parts, comm->nranks, recvcount, type);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const char* call = "ncclAllGather";
  ncclResult_t r = check_call(call, comm, type, nullptr, stream);
  if (r != ncclSuccess) return r;
  const size_t part = sendcount * type_size(type), n = size_t(comm->nranks);
  r = check_buffer(call, "sendbuff", sendbuff, sendcount, type);
  if (r == ncclSuccess) r = check_buffer(call, "recvbuff (nranks x sendcount)", recvbuff, sendcount * n, type);
  const void* in_place = static_cast<const char*>(recvbuff) + size_t(comm->rank) * part;
  const bool is_in_place = sendbuff == in_place;
  if (r == ncclSuccess && !is_in_place && overlap(sendbuff, part, recvbuff, part * n))
    r = fail(ncclInvalidArgument, std::string(call) +
                                      ": sendbuff overlaps recvbuff but is not recvbuff + rank * "
                                      "sendcount (rank " +
                                      std::to_string(comm->rank) + ")");
  if (r != ncclSuccess) return r;
  issue_work();
  if (sendcount == 0) return ncclSuccess;
  if (n == 1) {
    if (!is_in_place) std::memcpy(recvbuff, sendbuff, part);
  } else {
    MPI_Allgather(is_in_place ? MPI_IN_PLACE : sendbuff, mpi_bytes(part), MPI_BYTE, recvbuff, mpi_bytes(part), MPI_BYTE,
                  MPI_COMM_WORLD);
  }
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const char* call = "ncclBroadcast";
  ncclResult_t r = check_call(call, comm, type, nullptr, stream);
  if (r == ncclSuccess && (root < 0 || root >= comm->nranks))
    r = fail(ncclInvalidArgument,
             std::string(call) + ": root " + std::to_string(root) + " of " + std::to_string(comm->nranks) + " ranks");
  if (r == ncclSuccess && comm->rank == root) r = check_buffer(call, "sendbuff", sendbuff, count, type);
  if (r == ncclSuccess) r = check_buffer(call, "recvbuff", recvbuff, count, type);
  const size_t bytes = count * type_size(type);
  if (r == ncclSuccess && comm->rank == root && sendbuff != recvbuff && overlap(sendbuff, bytes, recvbuff, bytes))
    r = fail(ncclInvalidArgument, std::string(call) + ": sendbuff and recvbuff overlap but differ (in place: equal)");
  if (r != ncclSuccess) return r;
  issue_work();
  if (count == 0) return ncclSuccess;
  if (comm->rank == root && sendbuff != recvbuff) std::memcpy(recvbuff, sendbuff, bytes);
  if (comm->nranks > 1) MPI_Bcast(recvbuff, mpi_bytes(bytes), MPI_BYTE, root, MPI_COMM_WORLD);
  return ncclSuccess;
}

}  // extern "C"
