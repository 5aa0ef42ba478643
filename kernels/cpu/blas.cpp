// Matrix products on OpenMP's threads with single-threaded BLAS calls (see blas.h).
#include "kernels/cpu/blas.h"

#include <omp.h>
#include <algorithm>
#include <climits>
#include "engine/error.h"

namespace ppo::cpu {

namespace {

// One BLAS call on the calling thread.
void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta,
              C, blasint(ldc));
}
void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
               int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta,
              C, blasint(ldc));
}

// Threads split C(M,N) along its larger extent into equal blocks, whole multiples of 16 rows or
// columns (the width of the BLAS kernels' tiles), one per thread. Row block [lo,hi) of C reads rows
// [lo,hi) of op(A); column block [lo,hi) reads columns [lo,hi) of op(B).
template <class T>
void split_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  PPO_ASSERT(M >= 0 && N >= 0 && K >= 0 && std::max({M, N, K, lda, ldb, ldc}) <= INT_MAX, "gemm: extents M=", M,
             " N=", N, " K=", K, " exceed BLAS's int");
  if (M == 0 || N == 0) return;
  const int threads = omp_get_level() > 0 ? 1 : omp_get_max_threads();  // inside a parallel loop: one call
  if (threads == 1 || M * N * K < kGemmThreadWork) return blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  const bool by_columns = N >= M;
  const int64_t extent = by_columns ? N : M;
  const int64_t block = ((extent + threads - 1) / threads + 15) / 16 * 16;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int p = 0; p < threads; ++p) {
    const int64_t lo = p * block, hi = std::min(extent, lo + block);
    if (lo >= hi) continue;
    if (by_columns)
      blas_gemm(ta, tb, M, hi - lo, K, alpha, A, lda, tb == CblasNoTrans ? B + lo : B + lo * ldb, ldb, beta, C + lo, ldc);
    else
      blas_gemm(ta, tb, hi - lo, N, K, alpha, ta == CblasNoTrans ? A + lo * lda : A + lo, lda, B, ldb, beta,
                C + lo * ldc, ldc);
  }
}

}  // namespace

void set_threads(int threads) {
  const int n = threads > 0 ? threads : omp_get_max_threads();
  openblas_set_num_threads(1);  // in an OpenMP build of OpenBLAS this also sets OpenMP's count: ours comes second
  omp_set_num_threads(n);
}

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  split_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  split_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemv(CBLAS_TRANSPOSE ta, int64_t M, int64_t N, float alpha, const float* A, int64_t lda, const float* x,
          float beta, float* y) {
  cblas_sgemv(CblasRowMajor, ta, blasint(M), blasint(N), alpha, A, blasint(lda), x, 1, beta, y, 1);
}
void gemv(CBLAS_TRANSPOSE ta, int64_t M, int64_t N, double alpha, const double* A, int64_t lda, const double* x,
          double beta, double* y) {
  cblas_dgemv(CblasRowMajor, ta, blasint(M), blasint(N), alpha, A, blasint(lda), x, 1, beta, y, 1);
}

}  // namespace ppo::cpu
