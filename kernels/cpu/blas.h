// Matrix products of the CPU backend, and its one thread pool.
//
// Thread policy: every parallel piece of the CPU backend runs on OpenMP's threads, BLAS included.
// BLAS itself is kept single-threaded (OpenBLAS's own pthread pool would spin beside OpenMP's and
// fight it for the cores); gemm() below cuts a product into one block per OpenMP thread and makes
// one single-threaded BLAS call per block. The thread count is OpenMP's: OMP_NUM_THREADS, else
// every core, or set_cpu_threads(n). Idle threads should sleep rather than spin, so that a busy
// machine's cores go to threads with work: see use_passive_cpu_threads (kernels/backend.h).
#pragma once
#include <cblas.h>
#include <cstdint>

namespace ppo::cpu {

// BLAS single-threaded, `threads` OpenMP threads (threads <= 0: keep OpenMP's current count).
void set_threads(int threads);

// Row-major C(M,N) = alpha op(A) op(B) + beta C, op(A) (M,K), op(B) (K,N); sgemm or dgemm by type.
// Outside a parallel region a product of at least kGemmThreadWork multiply-adds is split along the
// larger of M and N into one contiguous block per OpenMP thread; inside one (a task of a parallel
// loop, active or not) it is one BLAS call on the calling thread.
constexpr int64_t kGemmThreadWork = int64_t(1) << 21;
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// y(M) = alpha op(A) x + beta y, A (M,N) row-major (op(A) = A^T: y has N entries, x M); on the
// calling thread (decode attention calls it per head inside a parallel loop).
void gemv(CBLAS_TRANSPOSE ta, int64_t M, int64_t N, float alpha, const float* A, int64_t lda, const float* x,
          float beta, float* y);
void gemv(CBLAS_TRANSPOSE ta, int64_t M, int64_t N, double alpha, const double* A, int64_t lda, const double* x,
          double beta, double* y);

}  // namespace ppo::cpu
