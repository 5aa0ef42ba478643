// Fused language-model head: the chosen token's log-prob and the entropy of the tempered
// distribution, computed over blocks of kBlockRows rows times chunks of kChunkVocab vocabulary
// columns so that the (N,V) logits never exist whole. For one block of R rows and chunk [v0, v0+W):
//   z(R,W) = hidden(R,C) @ wte[v0:v0+W](W,C)^T * inv_temperature        (in scratch)
// Each row keeps, over the chunks seen so far, m = max z, s = sum exp(z - m), u = sum exp(z - m) z;
// a chunk with a larger max m' first rescales s and u by exp(m - m') (online logsumexp). Then
//   lse = m + log s;   logp = z[target] - lse;   entropy = lse - u / s
// Backward, recomputing z per chunk, p = exp(z - lse):
//   dz_v = g_logp (1[v==target] - p_v) - g_ent p_v (log p_v + entropy)
//   dhidden(R,C) += inv_temperature dz(R,W) @ wte[v0:v0+W]  (= on the first chunk)
//   dwte[v0:v0+W](W,C) += inv_temperature dz^T @ hidden(R,C)
// Matrix products go through BLAS (sgemm/dgemm): a block of rows makes each product large enough
// to run near peak, and wte is read once per block instead of once per few rows. exp runs in the
// float type (exp_of, vectorized); the row sums accumulate in double.
#include <algorithm>
#include <cmath>
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace ppo::cpu {

namespace {

constexpr int64_t kBlockRows = 256;   // rows sharing each pass over wte
constexpr int64_t kChunkVocab = 1024;  // vocabulary columns of z held in scratch at once

// z(R,W) = hidden rows [n0, n0+R) @ wte rows [v0, v0+W)^T * inv_temperature
template <class T>
void chunk_logits(T* z, const T* hidden, const T* wte, int64_t n0, int64_t R, int64_t v0, int64_t W, int64_t C,
                  float inv_temperature) {
  gemm(CblasNoTrans, CblasTrans, R, W, C, T(inv_temperature), hidden + n0 * C, C, wte + v0 * C, C, T(0), z, W);
}

// One row's softmax statistics over the chunks seen so far (see the top of the file).
struct RowStats {
  double max_z = -INFINITY, sum_e = 0, sum_ez = 0, z_target = 0;
};

}  // namespace

// sample_tokens (kernels/cpu/sampling.cpp) takes the same scratch and sorts one row of V in it.
int64_t lm_scratch_elems(int64_t V) { return std::max(V, kBlockRows * std::min(V, kChunkVocab)); }

template <class T> void lm_logprob_entropy_forward(T* logp, T* entropy, T* lse, const T* hidden, const T* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch) {
  RowStats stats[kBlockRows];
  for (int64_t n0 = 0; n0 < N; n0 += kBlockRows) {
    const int64_t R = std::min(kBlockRows, N - n0);
    std::fill(stats, stats + R, RowStats{});
    for (int64_t v0 = 0; v0 < V; v0 += kChunkVocab) {
      const int64_t W = std::min(kChunkVocab, V - v0);
      chunk_logits(scratch, hidden, wte, n0, R, v0, W, C, inv_temperature);
#pragma omp parallel for if(worth_threads(R * W))
      for (int64_t r = 0; r < R; ++r) {
        const T* z = scratch + r * W;
        RowStats& st = stats[r];
        T chunk_max = z[0];
#pragma omp simd reduction(max : chunk_max)
        for (int64_t v = 1; v < W; ++v) chunk_max = std::max(chunk_max, z[v]);
        if (chunk_max > st.max_z) {
          const double rescale = std::exp(st.max_z - chunk_max);
          st.sum_e *= rescale;
          st.sum_ez *= rescale;
          st.max_z = chunk_max;
        }
        const T m = T(st.max_z);  // a z value: exact in T
        double sum_e = 0, sum_ez = 0;
#pragma omp simd reduction(+ : sum_e, sum_ez)
        for (int64_t v = 0; v < W; ++v) {
          const T e = exp_of(z[v] - m);
          sum_e += e;
          sum_ez += double(e) * double(z[v]);
        }
        st.sum_e += sum_e;
        st.sum_ez += sum_ez;
        const int64_t t = targets[n0 + r] - v0;
        if (t >= 0 && t < W) st.z_target = z[t];
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      const RowStats& st = stats[r];
      const int64_t n = n0 + r;
      const double lse_n = st.max_z + std::log(st.sum_e);
      lse[n] = T(lse_n);
      logp[n] = T(st.z_target - lse_n);
      entropy[n] = T(lse_n - st.sum_ez / st.sum_e);
    }
  }
}

template <class T> void lm_logprob_entropy_backward(T* dhidden, T* dwte, const T* g_logp, const T* g_entropy, const T* hidden, const T* wte, const int32_t* targets, const T* lse, const T* entropy, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch) {
  for (int64_t n0 = 0; n0 < N; n0 += kBlockRows) {
    const int64_t R = std::min(kBlockRows, N - n0);
    for (int64_t v0 = 0; v0 < V; v0 += kChunkVocab) {
      const int64_t W = std::min(kChunkVocab, V - v0);
      chunk_logits(scratch, hidden, wte, n0, R, v0, W, C, inv_temperature);
      // z -> dz in place
#pragma omp parallel for if(worth_threads(R * W))
      for (int64_t r = 0; r < R; ++r) {
        T* z = scratch + r * W;
        const int64_t n = n0 + r, t = targets[n] - v0;
        const T gl = g_logp ? g_logp[n] : T(0), ge = g_entropy ? g_entropy[n] : T(0);
        const T lse_n = lse[n], ent_n = entropy[n];
#pragma omp simd
        for (int64_t v = 0; v < W; ++v) {
          const T log_p = z[v] - lse_n, p = exp_of(log_p);
          z[v] = gl * ((v == t ? T(1) : T(0)) - p) - ge * p * (log_p + ent_n);
        }
      }
      // dhidden(R,C) (=, then +=) inv_temperature dz(R,W) @ wte(W,C);  dwte(W,C) += inv_temperature dz^T @ hidden(R,C)
      gemm(CblasNoTrans, CblasNoTrans, R, C, W, T(inv_temperature), scratch, W, wte + v0 * C, C, T(v0 == 0 ? 0 : 1),
           dhidden + n0 * C, C);
      if (dwte)
        gemm(CblasTrans, CblasNoTrans, W, C, R, T(inv_temperature), scratch, W, hidden + n0 * C, C, T(1), dwte + v0 * C, C);
    }
  }
}

PPO_CPU_INSTANTIATE(lm_logprob_entropy_forward)
PPO_CPU_INSTANTIATE(lm_logprob_entropy_backward)

}  // namespace ppo::cpu
