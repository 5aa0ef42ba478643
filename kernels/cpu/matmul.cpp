// Linear layer on BLAS: out = inp @ weight^T + bias, and its backward.
// inp (N,C); weight (OC,C) (PyTorch's nn.Linear layout); bias (OC); out, dout (N,OC). Row-major.
#include <climits>
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

namespace {

// BLAS takes positive int extents (a zero extent would also make the leading dimensions invalid).
void check_extents(const char* op, int64_t N, int64_t C, int64_t OC) {
  PPO_ASSERT(N > 0 && C > 0 && OC > 0 && N <= INT_MAX && C <= INT_MAX && OC <= INT_MAX, op, ": extents N=", N,
             " C=", C, " OC=", OC, " must lie in [1, INT_MAX] for BLAS");
}

}  // namespace

// out(N,OC) = inp(N,C) @ weight(OC,C)^T + bias(OC)   (bias may be null)
template <class T> void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, int64_t OC) {
  check_extents("matmul_forward", N, C, OC);
  // Start each output row from the bias (or zero) and let the GEMM add into it.
#pragma omp parallel for if(worth_threads(N * OC))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) out[n * OC + o] = bias ? bias[o] : T(0);
  gemm(CblasNoTrans, CblasTrans, N, OC, C, T(1), inp, C, weight, C, T(1), out, OC);
}

// dinp(N,C) = dout(N,OC) @ weight(OC,C)          (=, dinp may be null)
// dweight(OC,C) += dout(N,OC)^T @ inp(N,C)        (+=, may be null)
// dbias(OC) += sum_n dout[n,:]                   (+=, may be null)
template <class T> void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, int64_t N, int64_t C, int64_t OC) {
  check_extents("matmul_backward", N, C, OC);
  if (dinp) gemm(CblasNoTrans, CblasNoTrans, N, C, OC, T(1), dout, OC, weight, C, T(0), dinp, C);
  if (dweight) gemm(CblasTrans, CblasNoTrans, OC, C, N, T(1), dout, OC, inp, C, T(1), dweight, C);
  if (dbias) sum_rows(dbias, dout, N, OC);
}

template <class T> void sum_rows(T* acc, const T* x, int64_t N, int64_t C) {
  for_column_chunks(N, C, [&](int64_t c0, int64_t c1) {
    double sum[kColumnChunk] = {};
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) sum[c - c0] += x[n * C + c];
    for (int64_t c = c0; c < c1; ++c) acc[c] += T(sum[c - c0]);
  });
}

PPO_CPU_INSTANTIATE(sum_rows)
PPO_CPU_INSTANTIATE(matmul_forward)
PPO_CPU_INSTANTIATE(matmul_backward)

}  // namespace ppo::cpu
