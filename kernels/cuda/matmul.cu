// Matmuls through cuBLASLt: bf16 operands, f32 accumulation. See kernels/backend.h.
//
// Row-major to column-major. cuBLASLt is column-major; a row-major matrix X(r, c) with row stride
// c is, byte for byte, the column-major matrix X^T(c, r) with leading dimension c. So each
// row-major product is computed as its transpose:
//
//   forward   out(N,OC) = inp(N,C) @ W(OC,C)^T + bias
//             as column-major out^T(OC,N) = W(OC,C) inp^T(C,N): D(m=OC, n=N) = op(A) op(B), k = C, with
//               A = W    stored (C, OC) ld C, opA = T  -> (OC, C)
//               B = inp  stored (C, N)  ld C, opB = N  -> (C, N)
//               D = out  stored (OC, N) ld OC; bias (OC) per row of D: CUBLASLT_EPILOGUE_BIAS.
//   dinp      dinp(N,C) = dout(N,OC) @ W(OC,C)
//             D(m=C, n=N) = op(A) op(B), k = OC, with
//               A = W    stored (C, OC) ld C,  opA = N -> (C, OC)
//               B = dout stored (OC, N) ld OC, opB = N -> (OC, N)
//               D = dinp stored (C, N)  ld C, beta = 0 (bf16 out)
//   dweight   dweight(OC,C) += dout(N,OC)^T @ inp(N,C)
//             D(m=C, n=OC) = op(A) op(B) + D, k = N, with
//               A = inp  stored (C, N)  ld C,  opA = N -> (C, N)
//               B = dout stored (OC, N) ld OC, opB = T -> (N, OC)
//               D = dweight stored (C, OC) ld C, f32, beta = 1 (C == D, in place)
//             dbias(OC) = sum_n dout[n, oc] is the sum of op(B) over k for each column of D:
//             CUBLASLT_EPILOGUE_BGRADB writes it (=, f32) into scratch; a kernel adds it to dbias.
//             When cuBLASLt offers no algorithm with that epilogue, or dweight is not wanted, a
//             deterministic column-sum kernel computes dbias instead.
// A product cuBLASLt has no algorithm for at all runs through cublasGemmEx (lt_matmul_or_cublas).
#include <algorithm>

#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// out[n, oc] += bias[oc]: the bias when cuBLASLt offers no BIAS epilogue for a shape.
__global__ void add_bias_kernel(bf16* out, const bf16* bias, int64_t N, int64_t OC) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * OC; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = to_bf16(to_f32(out[i]) + to_f32(bias[i % OC]));
}

// First pass of dbias = sum_n dout[n, oc]: block (x, y) sums rows [y*rows_per_block, ...) of
// columns [x*blockDim, ...) into partial[y, oc]. Coalesced: a warp reads consecutive columns.
__global__ void column_sum_partial_kernel(float* partial, const bf16* dout, int64_t N, int64_t OC,
                                          int64_t rows_per_block) {
  const int64_t oc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (oc >= OC) return;
  const int64_t first = blockIdx.y * rows_per_block, last = min(N, first + rows_per_block);
  float acc = 0.0f;
  for (int64_t n = first; n < last; ++n) acc += to_f32(dout[n * OC + oc]);
  partial[blockIdx.y * OC + oc] = acc;
}

// dbias[oc] += sum_{g < groups} partial[g, oc], in g order.
__global__ void add_partials_kernel(float* dbias, const float* partial, int groups, int64_t OC) {
  for (int64_t oc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; oc < OC; oc += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int g = 0; g < groups; ++g) acc += partial[g * OC + oc];
    dbias[oc] += acc;
  }
}

// Largest power of two (at most 256) dividing the address: the alignment cuBLASLt may assume.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align >>= 1;
  return align;
}

// One cuBLASLt product in column-major terms: D(m,n) = op(A) op(B) + beta D (C is D, in place),
// A, B bf16; D of type d_type; with an optional epilogue writing or reading `epilogue_vector`.
struct LtProduct {
  cublasOperation_t op_a, op_b;
  int64_t m, n, k;
  const bf16* a;
  int64_t lda;
  const bf16* b;
  int64_t ldb;
  void* d;
  int64_t ldd;
  cudaDataType_t d_type;
  float beta;
  cublasLtEpilogue_t epilogue;
  void* epilogue_vector;  // bias (BIAS) or bias gradient (BGRADB); null with EPILOGUE_DEFAULT
};

// Runs the product; returns false (nothing launched) when cuBLASLt has no algorithm for it.
bool lt_matmul(CudaContext& ctx, const LtProduct& p) {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  PPO_CHECK_CUBLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  PPO_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &p.op_a, sizeof(p.op_a)));
  PPO_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &p.op_b, sizeof(p.op_b)));
  PPO_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &p.epilogue, sizeof(p.epilogue)));
  if (p.epilogue_vector)
    PPO_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.epilogue_vector,
                                                    sizeof(p.epilogue_vector)));
  // Stored shapes: op == N stores (rows of op, cols of op), op == T stores the transpose.
  const bool ta = p.op_a == CUBLAS_OP_T, tb = p.op_b == CUBLAS_OP_T;
  PPO_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&layout_a, CUDA_R_16BF, ta ? p.k : p.m, ta ? p.m : p.k, p.lda));
  PPO_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&layout_b, CUDA_R_16BF, tb ? p.n : p.k, tb ? p.k : p.n, p.ldb));
  PPO_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&layout_d, p.d_type, p.m, p.n, p.ldd));

  ScratchFrame scratch(ctx, "matmul");
  void* workspace = scratch.take<char>(int64_t(kWorkspaceBytes), "cublaslt workspace");
  const uint64_t workspace_bytes = kWorkspaceBytes;
  PPO_CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  PPO_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                        &workspace_bytes, sizeof(workspace_bytes)));
  const uint32_t align_a = alignment_of(p.a), align_b = alignment_of(p.b), align_d = alignment_of(p.d);
  PPO_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, 4));
  PPO_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, 4));
  PPO_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, 4));
  PPO_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, 4));

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt, op, layout_a, layout_b, layout_d, layout_d,
                                                           pref, 1, &heuristic, &found);
  // Any refusal (NOT_SUPPORTED, or INVALID_VALUE for an epilogue this layout cannot take) means "no
  // algorithm": the callers fall back to a plain product and to cublasGemmEx, which report real errors.
  const bool ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (ok) {
    const float alpha = 1.0f;
    PPO_CHECK_CUBLAS(cublasLtMatmul(ctx.cublaslt, op, &alpha, p.a, layout_a, p.b, layout_b, &p.beta, p.d, layout_d,
                                    p.d, layout_d, &heuristic.algo, workspace, kWorkspaceBytes, ctx.stream));
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(layout_d);
  cublasLtMatrixLayoutDestroy(layout_b);
  cublasLtMatrixLayoutDestroy(layout_a);
  cublasLtMatmulDescDestroy(op);
  return ok;
}

// The same product without an epilogue; through cublasGemmEx (same column-major terms) when cuBLASLt
// has no algorithm for it (e.g. a leading dimension that is odd, as GPT-2's vocabulary 50257 makes
// the logits', or 1, as the scalar head makes the values').
void lt_matmul_or_cublas(CudaContext& ctx, const LtProduct& p, const char* what) {
  PPO_ASSERT(p.epilogue == CUBLASLT_EPILOGUE_DEFAULT, what, ": the cuBLAS path has no epilogue");
  if (lt_matmul(ctx, p)) return;
  PPO_ASSERT(p.m <= INT32_MAX && p.n <= INT32_MAX && p.k <= INT32_MAX, what, ": m=", p.m, " n=", p.n, " k=", p.k,
             " exceed cuBLAS's int range");
  const float alpha = 1.0f;
  PPO_CHECK_CUBLAS(cublasGemmEx(ctx.cublas, p.op_a, p.op_b, int(p.m), int(p.n), int(p.k), &alpha, p.a, CUDA_R_16BF,
                                int(p.lda), p.b, CUDA_R_16BF, int(p.ldb), &p.beta, p.d, p.d_type, int(p.ldd),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// dbias(OC) += sum_n dout(N, OC), deterministic: row groups a function of N and OC only (at most
// 128, with at most 16 MiB of partials).
void launch_column_sum(CudaContext& ctx, float* dbias, const bf16* dout, int64_t N, int64_t OC) {
  const int64_t budget_groups = std::max<int64_t>(1, (int64_t(16) << 20) / (OC * int64_t(sizeof(float))));
  const int groups = int(std::min<int64_t>({N, 128, budget_groups}));
  const int64_t rows_per_block = ceil_div(N, groups);
  ScratchFrame scratch(ctx, "matmul_backward dbias");
  float* partial = scratch.take<float>(int64_t(groups) * OC, "dbias partials");
  const dim3 grid(unsigned(ceil_div(OC, 256)), unsigned(groups));
  PPO_LAUNCH(grid, 256, 0, ctx.stream, column_sum_partial_kernel, partial, dout, N, OC, rows_per_block);
  PPO_LAUNCH(grid_for(ctx, OC, 256), 256, 0, ctx.stream, add_partials_kernel, dbias, partial, groups, OC);
}

}  // namespace

void matmul_forward(CudaContext& ctx, bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N,
                    int64_t C, int64_t OC) {
  if (N == 0 || OC == 0) return;
  PPO_ASSERT(C > 0, "matmul_forward: C = 0");
  LtProduct p{CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, weight, C, inp, C, out, OC, CUDA_R_16BF, 0.0f,
              bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, const_cast<bf16*>(bias)};
  if (bias && lt_matmul(ctx, p)) return;
  // No bias, or no fused-bias algorithm for this shape: plain product, then the bias.
  p.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  p.epilogue_vector = nullptr;
  lt_matmul_or_cublas(ctx, p, "matmul_forward");
  if (!bias) return;
  PPO_LAUNCH(grid_for(ctx, N * OC, 256), 256, 0, ctx.stream, add_bias_kernel, out, bias, N, OC);
}

void matmul_backward(CudaContext& ctx, bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* weight, int64_t N, int64_t C, int64_t OC) {
  if (N == 0 || OC == 0 || C == 0) return;
  if (dinp) {
    const LtProduct p{CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, weight, C, dout, OC, dinp, C, CUDA_R_16BF, 0.0f,
                      CUBLASLT_EPILOGUE_DEFAULT, nullptr};
    lt_matmul_or_cublas(ctx, p, "matmul_backward dinp");
  }
  bool dbias_done = false;
  if (dweight) {
    LtProduct p{CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, C, dout, OC, dweight, C, CUDA_R_32F, 1.0f,
                CUBLASLT_EPILOGUE_DEFAULT, nullptr};
    if (dbias) {
      ScratchFrame scratch(ctx, "matmul_backward bgrad");
      float* bgrad = scratch.take<float>(OC, "bias gradient");
      p.epilogue = CUBLASLT_EPILOGUE_BGRADB;
      p.epilogue_vector = bgrad;
      if (lt_matmul(ctx, p)) {
        // dbias += bgrad, reusing the partial-sum kernel with one group.
        PPO_LAUNCH(grid_for(ctx, OC, 256), 256, 0, ctx.stream, add_partials_kernel, dbias, bgrad, 1, OC);
        dbias_done = true;
      }
      p.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
      p.epilogue_vector = nullptr;
    }
    if (!dbias_done) lt_matmul_or_cublas(ctx, p, "matmul_backward dweight");
  }
  if (dbias && !dbias_done) launch_column_sum(ctx, dbias, dout, N, OC);
}

}  // namespace ppo::cuda
