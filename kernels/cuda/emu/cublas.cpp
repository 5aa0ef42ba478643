// cuBLAS and cuBLASLt on the emulated device: the calls the engine makes, with the argument checks
// the real libraries make (operations, types, leading dimensions, shapes of the layouts, epilogue
// pointers, workspace) and reads of exactly the elements the real call reads: a wrong leading
// dimension or transpose reads past its allocation, which is reported (and ASan sees it too).
// The product is computed in f32 (bf16 inputs widened exactly, OpenBLAS sgemm), then alpha, beta,
// the epilogue and one rounding to the output type, as cuBLAS with CUBLAS_COMPUTE_32F does.
//
// Stream capture: the arguments are checked, and alpha, beta (host pointers) and the descriptors read,
// at the call; on a capturing stream (cuBLAS: the handle's; cuBLASLt: the call's) the product is a
// node of the graph (internal.h).
//
// Algorithms: cuBLASLt's heuristic offers one when every operand's pointer alignment (from the
// preference) and leading dimension in bytes are multiples of 16 and any bias pointer is 16-byte
// aligned, and refuses (CUBLAS_STATUS_NOT_SUPPORTED) otherwise, so the engine's fallbacks run too.
#include <cblas.h>
#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "kernels/cuda/emu/internal.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  bool user_workspace = false;
  bool library_workspace = false;  // allocated by the library on first use (a real cuBLAS does)
};
struct cublasLtContext {
  int unused = 0;
};

namespace ppo::emu {
namespace {

constexpr uint64_t kMagic = 0x70706f2d656d75ull;    // marks descriptors this shim filled
constexpr size_t kAlgoWorkspace = size_t(4) << 20;  // workspace an emulated algorithm asks for

cublasStatus_t refuse(cublasStatus_t status, const std::string& what) {
  std::fprintf(stderr, "emulated cuBLAS: %s\n", what.c_str());
  return status;
}

size_t type_size(cudaDataType t) {
  switch (t) {
    case CUDA_R_32F:
      return 4;
    case CUDA_R_16BF:
    case CUDA_R_16F:
      return 2;
    default:
      return 0;
  }
}

const char* type_name(cudaDataType t) {
  switch (t) {
    case CUDA_R_32F:
      return "CUDA_R_32F";
    case CUDA_R_16BF:
      return "CUDA_R_16BF";
    case CUDA_R_16F:
      return "CUDA_R_16F";
    default:
      return "an unsupported type";
  }
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
  if (exp == 0) return (sign ? -1.0f : 1.0f) * std::ldexp(float(man), -24);
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (man << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

float load(const void* p, cudaDataType t, int64_t i) {
  switch (t) {
    case CUDA_R_32F:
      return static_cast<const float*>(p)[i];
    case CUDA_R_16BF:
      return f32_from_bf16(static_cast<const bf16*>(p)[i]);
    default:
      return half_to_float(static_cast<const uint16_t*>(p)[i]);
  }
}

void store(void* p, cudaDataType t, int64_t i, float v) {
  if (t == CUDA_R_32F)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<bf16*>(p)[i] = bf16_from_f32(v);  // CUDA_R_16BF (f16 outputs are refused earlier)
}

// A column-major matrix as stored: rows x cols, leading dimension ld.
struct Stored {
  const void* p;
  cudaDataType type;
  int64_t rows, cols, ld;
};

// Checks that a stored matrix lies inside one device allocation.
bool inside(const Stored& s, const char* call, const char* name) {
  if (s.rows == 0 || s.cols == 0) return true;
  const size_t bytes = size_t((s.cols - 1) * s.ld + s.rows) * type_size(s.type);
  if (device_range(s.p, bytes)) return true;
  refuse(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": " + name + " (" + std::to_string(s.rows) + " x " +
                                          std::to_string(s.cols) + ", ld " + std::to_string(s.ld) + ", " +
                                          type_name(s.type) + ") reads " + std::to_string(bytes) +
                                          " bytes that are not inside one device allocation");
  return false;
}

// op(stored) as a dense column-major f32 matrix (r x c), reading exactly the stored elements.
std::vector<float> widen(const Stored& s, cublasOperation_t op) {
  const int64_t r = op == CUBLAS_OP_N ? s.rows : s.cols, c = op == CUBLAS_OP_N ? s.cols : s.rows;
  std::vector<float> out(size_t(r * c));
  for (int64_t j = 0; j < s.cols; ++j)
    for (int64_t i = 0; i < s.rows; ++i) {
      const float v = load(s.p, s.type, j * s.ld + i);
      if (op == CUBLAS_OP_N)
        out[size_t(j * r + i)] = v;
      else
        out[size_t(i * r + j)] = v;
    }
  return out;
}

enum class Epilogue : uint8_t { None, Bias, BgradB };

// D(m,n) = alpha op(A) op(B) + beta C [+ bias per row]; bgrad[j] = sum_k op(B)[k, j] (BGRADB).
// C is not read when beta == 0.
void product(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float alpha, const Stored& A,
             const Stored& B, float beta, const Stored& C, void* D, cudaDataType d_type, int64_t ldd, Epilogue epilogue,
             void* epilogue_vector, cudaDataType vector_type) {
  const std::vector<float> a = widen(A, ta), b = widen(B, tb);
  std::vector<float> acc(size_t(m * n), 0.0f);
  if (m > 0 && n > 0 && k > 0)
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, a.data(), int(m), b.data(),
                int(k), 0.0f, acc.data(), int(m));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      float v = alpha * acc[size_t(j * m + i)];
      if (beta != 0.0f) v += beta * load(C.p, C.type, j * C.ld + i);
      if (epilogue == Epilogue::Bias) v += load(epilogue_vector, vector_type, i);
      store(D, d_type, j * ldd + i, v);
    }
  if (epilogue == Epilogue::BgradB)
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t kk = 0; kk < k; ++kk) s += b[size_t(j * k + kk)];
      store(epilogue_vector, vector_type, j, s);
    }
}

// ---- cuBLASLt descriptors live in the opaque storage the header gives them -----------------------
struct MatmulDesc {
  uint64_t magic;
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t transa, transb;
  cublasLtEpilogue_t epilogue;
  void* bias;
  int32_t bias_type;  // -1: the type of D
};
struct Layout {
  uint64_t magic;
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};
struct Preference {
  uint64_t magic;
  uint64_t max_workspace;
  uint32_t align[4];  // A, B, C, D
};
struct Algo {
  uint64_t magic;
  uint64_t workspace;
};
static_assert(sizeof(MatmulDesc) <= sizeof(cublasLtMatmulDescOpaque_t), "descriptor storage");
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "layout storage");
static_assert(sizeof(Preference) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "preference storage");
static_assert(sizeof(Algo) <= sizeof(cublasLtMatmulAlgo_t), "algo storage");

template <class T, class Opaque>
T* as(Opaque* o) {
  return o ? reinterpret_cast<T*>(o->data) : nullptr;
}

uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

// The problem a descriptor and four layouts describe, checked as cuBLASLt checks it.
struct Problem {
  int64_t m, n, k;
  Stored A, B, C;
  cudaDataType d_type;
  int64_t ldd;
  Epilogue epilogue;
  cudaDataType vector_type;
};

cublasStatus_t describe(const char* call, const MatmulDesc* op, const Layout* a, const Layout* b, const Layout* c,
                        const Layout* d, Problem& p) {
  if (!op || op->magic != kMagic || !a || a->magic != kMagic || !b || b->magic != kMagic || !c || c->magic != kMagic ||
      !d || d->magic != kMagic)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": a descriptor was not created (or was destroyed)");
  if (op->compute != CUBLAS_COMPUTE_32F || op->scale != CUDA_R_32F)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                  std::string(call) + ": only CUBLAS_COMPUTE_32F with f32 scale is emulated");
  const bool ta = op->transa == CUBLAS_OP_T, tb = op->transb == CUBLAS_OP_T;
  p.m = int64_t(ta ? a->cols : a->rows);
  p.k = int64_t(ta ? a->rows : a->cols);
  const int64_t kb = int64_t(tb ? b->cols : b->rows);
  p.n = int64_t(tb ? b->rows : b->cols);
  if (kb != p.k || int64_t(d->rows) != p.m || int64_t(d->cols) != p.n || c->rows != d->rows || c->cols != d->cols)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": layouts disagree: op(A) " + std::to_string(p.m) +
                                                   " x " + std::to_string(p.k) + ", op(B) " + std::to_string(kb) +
                                                   " x " + std::to_string(p.n) + ", C " + std::to_string(c->rows) +
                                                   " x " + std::to_string(c->cols) + ", D " + std::to_string(d->rows) +
                                                   " x " + std::to_string(d->cols));
  if (a->type != b->type || (a->type != CUDA_R_16BF && a->type != CUDA_R_16F) || c->type != d->type ||
      (d->type != CUDA_R_16BF && d->type != CUDA_R_32F))
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, std::string(call) + ": types A " + type_name(a->type) + ", B " +
                                                   type_name(b->type) + ", C " + type_name(c->type) + ", D " +
                                                   type_name(d->type) + " are not an emulated combination");
  p.A = {nullptr, a->type, int64_t(a->rows), int64_t(a->cols), a->ld};
  p.B = {nullptr, b->type, int64_t(b->rows), int64_t(b->cols), b->ld};
  p.C = {nullptr, c->type, int64_t(c->rows), int64_t(c->cols), c->ld};
  p.d_type = d->type;
  p.ldd = d->ld;
  switch (op->epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT:
      p.epilogue = Epilogue::None;
      break;
    case CUBLASLT_EPILOGUE_BIAS:
      p.epilogue = Epilogue::Bias;
      break;
    case CUBLASLT_EPILOGUE_BGRADB:
      p.epilogue = Epilogue::BgradB;
      break;
    default:
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    std::string(call) + ": epilogue " + std::to_string(int(op->epilogue)) + " is not emulated");
  }
  p.vector_type = op->bias_type < 0 ? d->type : cudaDataType(op->bias_type);
  if (p.epilogue != Epilogue::None && !op->bias)
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  std::string(call) + ": the epilogue needs CUBLASLT_MATMUL_DESC_BIAS_POINTER");
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace
}  // namespace ppo::emu

using namespace ppo::emu;

// ---- cuBLAS -------------------------------------------------------------------------------------
cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream: no handle");
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetWorkspace: no handle");
  if (bytes > 0 && !device_range(workspace, bytes))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetWorkspace: the workspace is not inside one device allocation");
  handle->user_workspace = bytes > 0;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE (emulated cuBLAS; details on stderr)";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED (emulated cuBLAS; details on stderr)";
    default:
      return "cuBLAS error";
  }
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t) {
  const char* call = "cublasGemmEx";
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  if (!handle) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGemmEx: no handle");
  auto valid_op = [](cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T; };
  if (!valid_op(transa) || !valid_op(transb) || m < 0 || n < 0 || k < 0)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasGemmEx: bad operation or negative m, n, k");
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m))
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  "cublasGemmEx: lda " + std::to_string(lda) + " (needs >= " + std::to_string(a_rows) + "), ldb " +
                      std::to_string(ldb) + " (needs >= " + std::to_string(b_rows) + "), ldc " + std::to_string(ldc) +
                      " (needs >= " + std::to_string(m) + ")");
  if (Atype != Btype || (Atype != CUDA_R_16BF && Atype != CUDA_R_16F) ||
      (Ctype != CUDA_R_16BF && Ctype != CUDA_R_32F) ||
      (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_PEDANTIC))
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, std::string("cublasGemmEx: A ") + type_name(Atype) + ", B " +
                                                   type_name(Btype) + ", C " + type_name(Ctype) +
                                                   " with this compute type is not an emulated combination");
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const Stored sa{A, Atype, a_rows, transa == CUBLAS_OP_N ? k : m, lda};
  const Stored sb{B, Btype, b_rows, transb == CUBLAS_OP_N ? n : k, ldb};
  const Stored sc{C, Ctype, m, n, ldc};
  if (!inside(sa, call, "A") || !inside(sb, call, "B") || !inside(sc, call, "C")) return CUBLAS_STATUS_INVALID_VALUE;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  if (cudaError_t e = submit(handle->stream, call, 1, [=] {
        product(transa, transb, m, n, k, a, sa, sb, b, sc, C, Ctype, ldc, Epilogue::None, nullptr, CUDA_R_32F);
      }))
    return refuse(CUBLAS_STATUS_EXECUTION_FAILED, std::string(call) + ": " + cudaGetErrorString(e));
  if (!handle->user_workspace && !handle->library_workspace) {
    handle->library_workspace = true;  // a real cuBLAS allocates its default workspace on first use
    ++d.counters.allocations;
  }
  return CUBLAS_STATUS_SUCCESS;
}

// ---- cuBLASLt -----------------------------------------------------------------------------------
cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  *desc = new cublasLtMatmulDescOpaque_t();
  *as<MatmulDesc>(*desc) = {kMagic, compute, scale, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, nullptr, -1};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  if (desc) as<MatmulDesc>(desc)->magic = 0;
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  MatmulDesc* d = as<MatmulDesc>(desc);
  if (!d || d->magic != kMagic || !buf)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute: no descriptor or buffer");
  auto sized = [&](size_t want) {
    return size == want ? CUBLAS_STATUS_SUCCESS
                        : refuse(CUBLAS_STATUS_INVALID_VALUE,
                                 "cublasLtMatmulDescSetAttribute: attribute " + std::to_string(int(attr)) + " takes " +
                                     std::to_string(want) + " bytes, got " + std::to_string(size));
  };
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
      if (cublasStatus_t s = sized(sizeof(int32_t))) return s;
      int32_t op;
      std::memcpy(&op, buf, 4);
      if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLt: bad transpose");
      (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->transa : d->transb) = cublasOperation_t(op);
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
      if (cublasStatus_t s = sized(sizeof(uint32_t))) return s;
      uint32_t e;
      std::memcpy(&e, buf, 4);
      d->epilogue = cublasLtEpilogue_t(e);
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      if (cublasStatus_t s = sized(sizeof(void*))) return s;
      std::memcpy(&d->bias, buf, sizeof(void*));
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      if (cublasStatus_t s = sized(sizeof(int32_t))) return s;
      std::memcpy(&d->bias_type, buf, 4);
      return CUBLAS_STATUS_SUCCESS;
    default:
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    "cublasLtMatmulDescSetAttribute: attribute " + std::to_string(int(attr)) + " is not emulated");
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (type_size(type) == 0) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatrixLayoutCreate: type not emulated");
  if (ld < int64_t(rows) || ld < 1)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutCreate: ld " + std::to_string(ld) +
                                                   " is below the rows " + std::to_string(rows));
  *layout = new cublasLtMatrixLayoutOpaque_t();
  *as<Layout>(*layout) = {kMagic, type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  if (layout) as<Layout>(layout)->magic = 0;
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t();
  *as<Preference>(*pref) = {kMagic, 0, {256, 256, 256, 256}};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (pref) as<Preference>(pref)->magic = 0;
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  Preference* p = as<Preference>(pref);
  if (!p || p->magic != kMagic || !buf)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute: no preference");
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      if (size != 8) return refuse(CUBLAS_STATUS_INVALID_VALUE, "MAX_WORKSPACE_BYTES takes a uint64_t");
      std::memcpy(&p->max_workspace, buf, 8);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      if (size != 4) return refuse(CUBLAS_STATUS_INVALID_VALUE, "MIN_ALIGNMENT_*_BYTES takes a uint32_t");
      std::memcpy(&p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
      return CUBLAS_STATUS_SUCCESS;
    default:
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulPreferenceSetAttribute: attribute " +
                                                     std::to_string(int(attr)) + " is not emulated");
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  const char* call = "cublasLtMatmulAlgoGetHeuristic";
  *returned = 0;
  if (!handle || requested < 1)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": no handle or no result slot");
  const Preference* p = as<Preference>(pref);
  if (!p || p->magic != kMagic) return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": no preference");
  Problem prob;
  const MatmulDesc* op = as<MatmulDesc>(desc);
  if (cublasStatus_t s =
          describe(call, op, as<Layout>(Adesc), as<Layout>(Bdesc), as<Layout>(Cdesc), as<Layout>(Ddesc), prob))
    return s;
  const bool aligned = p->align[0] % 16 == 0 && p->align[1] % 16 == 0 && p->align[2] % 16 == 0 &&
                       p->align[3] % 16 == 0 && (prob.A.ld * int64_t(type_size(prob.A.type))) % 16 == 0 &&
                       (prob.B.ld * int64_t(type_size(prob.B.type))) % 16 == 0 &&
                       (prob.C.ld * int64_t(type_size(prob.C.type))) % 16 == 0 &&
                       (prob.ldd * int64_t(type_size(prob.d_type))) % 16 == 0 &&
                       (prob.epilogue == Epilogue::None || alignment(op->bias) >= 16);
  if (!aligned) return CUBLAS_STATUS_NOT_SUPPORTED;  // no algorithm (see the file comment)
  results[0] = cublasLtMatmulHeuristicResult_t{};
  *reinterpret_cast<Algo*>(results[0].algo.data) = {kMagic, std::min<uint64_t>(p->max_workspace, kAlgoWorkspace)};
  results[0].workspaceSize = size_t(std::min<uint64_t>(p->max_workspace, kAlgoWorkspace));
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  const char* call = "cublasLtMatmul";
  DeviceState& dev = device();
  std::lock_guard<std::recursive_mutex> lock(dev.mutex);
  if (!handle) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtMatmul: no handle");
  Problem p;
  const MatmulDesc* op = as<MatmulDesc>(desc);
  if (cublasStatus_t s =
          describe(call, op, as<Layout>(Adesc), as<Layout>(Bdesc), as<Layout>(Cdesc), as<Layout>(Ddesc), p))
    return s;
  const Algo* a = algo ? reinterpret_cast<const Algo*>(algo->data) : nullptr;
  if (!a || a->magic != kMagic)
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  "cublasLtMatmul: the algorithm does not come from cublasLtMatmulAlgoGetHeuristic");
  if (workspace_bytes < a->workspace || (a->workspace > 0 && !device_range(workspace, a->workspace)))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: the algorithm needs " + std::to_string(a->workspace) +
                                                   " bytes of device workspace, got " +
                                                   std::to_string(workspace_bytes));
  p.A.p = A;
  p.B.p = B;
  p.C.p = C;
  const Stored sd{D, p.d_type, p.m, p.n, p.ldd};
  if (!inside(p.A, call, "A") || !inside(p.B, call, "B") || !inside(sd, call, "D")) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  if (be != 0.0f && !inside(p.C, call, "C")) return CUBLAS_STATUS_INVALID_VALUE;
  const int64_t vector_length = p.epilogue == Epilogue::Bias ? p.m : p.n;
  if (p.epilogue != Epilogue::None && !device_range(op->bias, size_t(vector_length) * type_size(p.vector_type)))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: the bias vector (" + std::to_string(vector_length) +
                                                   " elements) is not inside one device allocation");
  // What the descriptors say is read now: the call runs (or replays) with it.
  const uint64_t scribbled = a->workspace;
  const cublasOperation_t ta = op->transa, tb = op->transb;
  void* const bias = op->bias;
  if (cudaError_t e = submit(stream, call, 1, [=] {
        if (scribbled > 0) std::memset(workspace, 0xff, scribbled);  // a real algorithm leaves it scribbled on
        product(ta, tb, p.m, p.n, p.k, al, p.A, p.B, be, p.C, D, p.d_type, p.ldd, p.epilogue, bias, p.vector_type);
      }))
    return refuse(CUBLAS_STATUS_EXECUTION_FAILED, std::string(call) + ": " + cudaGetErrorString(e));
  return CUBLAS_STATUS_SUCCESS;
}
