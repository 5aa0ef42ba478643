// Linear layer on OpenBLAS: out = inp @ weight^T + bias, and its backward.
// inp (N,C); weight (OC,C) (PyTorch's nn.Linear layout); bias (OC); out, dout (N,OC). Row-major.
#include <cblas.h>
#include <climits>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

namespace {

// Row-major Cm(M,Nc) = op(A) @ op(B) + beta*Cm with op = transpose or not; sgemm or dgemm by type.
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t Nc, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* Cm, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, blasint(M), blasint(Nc), blasint(K), 1.0f, A, blasint(lda), B, blasint(ldb), beta,
              Cm, blasint(ldc));
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t Nc, int64_t K, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* Cm, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, blasint(M), blasint(Nc), blasint(K), 1.0, A, blasint(lda), B, blasint(ldb), beta,
              Cm, blasint(ldc));
}

// BLAS takes positive int extents (a zero extent would also make the leading dimensions invalid).
void check_extents(const char* op, int64_t N, int64_t C, int64_t OC) {
  PPO_ASSERT(N > 0 && C > 0 && OC > 0 && N <= INT_MAX && C <= INT_MAX && OC <= INT_MAX, op, ": extents N=", N,
             " C=", C, " OC=", OC, " must lie in [1, INT_MAX] for BLAS");
}

}  // namespace

void set_blas_threads(int threads) { openblas_set_num_threads(threads); }

// out(N,OC) = inp(N,C) @ weight(OC,C)^T + bias(OC)   (bias may be null)
template <class T> void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, int64_t OC) {
  check_extents("matmul_forward", N, C, OC);
  // Start each output row from the bias (or zero) and let the GEMM add into it.
#pragma omp parallel for if(worth_threads(N * OC))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) out[n * OC + o] = bias ? bias[o] : T(0);
  gemm(CblasNoTrans, CblasTrans, N, OC, C, inp, C, weight, C, T(1), out, OC);
}

// dinp(N,C) = dout(N,OC) @ weight(OC,C)          (=, dinp may be null)
// dweight(OC,C) += dout(N,OC)^T @ inp(N,C)        (+=, may be null)
// dbias(OC) += sum_n dout[n,:]                   (+=, may be null)
template <class T> void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, int64_t N, int64_t C, int64_t OC) {
  check_extents("matmul_backward", N, C, OC);
  if (dinp) gemm(CblasNoTrans, CblasNoTrans, N, C, OC, dout, OC, weight, C, T(0), dinp, C);
  if (dweight) gemm(CblasTrans, CblasNoTrans, OC, C, N, dout, OC, inp, C, T(1), dweight, C);
  if (dbias) {
    // Threads split the output channels and sum the rows in order (deterministic), in double.
#pragma omp parallel for if(worth_threads(N * OC))
    for (int64_t o = 0; o < OC; ++o) {
      double sum = 0;
      for (int64_t n = 0; n < N; ++n) sum += dout[n * OC + o];
      dbias[o] += T(sum);
    }
  }
}

PPO_CPU_INSTANTIATE(matmul_forward)
PPO_CPU_INSTANTIATE(matmul_backward)

}  // namespace ppo::cpu
