// Fused language-model head: the chosen token's log-prob and the entropy of the tempered
// distribution, computed over chunks of kChunkRows rows so that the (N,V) logits never exist whole.
//   z(R,V) = hidden(R,C) @ wte(V,C)^T * inv_temperature        (one chunk of R rows, in scratch)
//   lse = max + log sum_v exp(z_v - max);   logp = z[target] - lse;   entropy = lse - sum_v p_v z_v
// Backward, p = exp(z - lse):
//   dz_v = g_logp (1[v==target] - p_v) - g_ent p_v (log p_v + entropy)
//   dhidden(R,C) = inv_temperature dz @ wte (=);   dwte(V,C) += inv_temperature dz^T @ hidden
// Matrix products go through BLAS (sgemm/dgemm).
#include <cblas.h>
#include <algorithm>
#include <cmath>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

namespace {

constexpr int64_t kChunkRows = 8;  // rows of logits held in scratch at once

// Row-major C(M,N) = alpha op(A) op(B) + beta C.
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// z(R,V) = hidden rows [n0, n0+R) @ wte^T * inv_temperature
template <class T>
void chunk_logits(T* z, const T* hidden, const T* wte, int64_t n0, int64_t R, int64_t C, int64_t V, float inv_temperature) {
  gemm(CblasNoTrans, CblasTrans, R, V, C, T(inv_temperature), hidden + n0 * C, C, wte, C, T(0), z, V);
}

}  // namespace

int64_t lm_scratch_elems(int64_t V) { return kChunkRows * V; }

template <class T> void lm_logprob_entropy_forward(T* logp, T* entropy, T* lse, const T* hidden, const T* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch) {
  for (int64_t n0 = 0; n0 < N; n0 += kChunkRows) {
    const int64_t R = std::min(kChunkRows, N - n0);
    chunk_logits(scratch, hidden, wte, n0, R, C, V, inv_temperature);
#pragma omp parallel for
    for (int64_t r = 0; r < R; ++r) {
      const T* z = scratch + r * V;
      const int64_t n = n0 + r;
      double max_z = z[0];
      for (int64_t v = 1; v < V; ++v) max_z = std::max(max_z, double(z[v]));
      double sum_e = 0, sum_ez = 0;  // sum exp(z - max), sum exp(z - max) z
      for (int64_t v = 0; v < V; ++v) {
        const double e = std::exp(double(z[v]) - max_z);
        sum_e += e;
        sum_ez += e * double(z[v]);
      }
      const double lse_n = max_z + std::log(sum_e);
      lse[n] = T(lse_n);
      logp[n] = T(double(z[targets[n]]) - lse_n);
      entropy[n] = T(lse_n - sum_ez / sum_e);
    }
  }
}

template <class T> void lm_logprob_entropy_backward(T* dhidden, T* dwte, const T* g_logp, const T* g_entropy, const T* hidden, const T* wte, const int32_t* targets, const T* lse, const T* entropy, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch) {
  for (int64_t n0 = 0; n0 < N; n0 += kChunkRows) {
    const int64_t R = std::min(kChunkRows, N - n0);
    chunk_logits(scratch, hidden, wte, n0, R, C, V, inv_temperature);
    // z -> dz in place
#pragma omp parallel for
    for (int64_t r = 0; r < R; ++r) {
      T* z = scratch + r * V;
      const int64_t n = n0 + r;
      const double gl = g_logp ? double(g_logp[n]) : 0.0, ge = g_entropy ? double(g_entropy[n]) : 0.0;
      const double lse_n = lse[n], ent_n = entropy[n];
      for (int64_t v = 0; v < V; ++v) {
        const double log_p = double(z[v]) - lse_n, p = std::exp(log_p);
        z[v] = T(gl * ((v == targets[n] ? 1.0 : 0.0) - p) - ge * p * (log_p + ent_n));
      }
    }
    // dhidden(R,C) = inv_temperature dz(R,V) @ wte(V,C);  dwte(V,C) += inv_temperature dz^T @ hidden(R,C)
    gemm(CblasNoTrans, CblasNoTrans, R, C, V, T(inv_temperature), scratch, V, wte, C, T(0), dhidden + n0 * C, C);
    if (dwte) gemm(CblasTrans, CblasNoTrans, V, C, R, T(inv_temperature), scratch, V, hidden + n0 * C, C, T(1), dwte, C);
  }
}

PPO_CPU_INSTANTIATE(lm_logprob_entropy_forward)
PPO_CPU_INSTANTIATE(lm_logprob_entropy_backward)

}  // namespace ppo::cpu
