// Causal self-attention with grouped-query heads and a key mask, forward and backward.
// qkv(B,T,W), W = (NH+2*NKV)*HS, packs per position [q heads | k heads | v heads]; query head h
// reads kv head h / (NH/NKV). Query t sees key s iff s <= t and mask[b,s] == 1; scale = 1/sqrt(HS).
//   score_s = q_t.k_s * scale;  lse_t = log sum_s exp score_s;  p_s = exp(score_s - lse_t)
//   out_t = sum_s p_s v_s
// A query with no visible key gets out = 0, lse = -inf and zero gradient.
//
// Tiled, in FlashAttention's order: queries and keys go in tiles of kTile positions, and the scores
// of one (query tile, key tile) pair, S (kTile,kTile), are the only scores that exist (never T x T).
// Forward, per (b, h) and query tile, over the key tiles up to the diagonal, keeping per query row a
// running max m and sum l (online softmax; m starts at -inf, l and O at 0):
//   S = scale Q K^T (invisible entries -inf);  m' = max(m, rowmax S);  P = exp(S - m');
//   l = l exp(m - m') + rowsum P;  O = O exp(m - m') + P V;  m = m'.   Finally O /= l, lse = m + log l.
// Backward (recomputing P = exp(S - lse) per tile pair; D_t = dout_t.out_t = sum_s p_s dp_s):
//   dP = dO V^T;  dS = P (dP - D);  dQ += scale dS K;  dK += scale dS^T Q;  dV += P^T dO
// The products are BLAS calls on the tiles (blas.h gemm, each on its task's thread).
// Tiles start at each row's first visible position f: keys before it are never visible and queries
// before it see nothing (out 0, lse -inf), so a left-padded sequence runs exactly the tiles of the
// unpadded one and gives the same bits.
#include <cmath>
#include <limits>
#include <vector>
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace ppo::cpu {

namespace {

constexpr int64_t kTile = 64;  // query and key positions per tile

bool visible(const int32_t* mask_b, int64_t s, int64_t t) { return s <= t && mask_b[s] == 1; }

// The first position of a row with mask 1 (T when there is none).
int64_t first_visible(const int32_t* mask_b, int64_t T_) {
  int64_t f = 0;
  while (f < T_ && mask_b[f] != 1) ++f;
  return f;
}

template <class T>
T dot(const T* a, const T* b, int n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

template <class T> void attention_forward(T* out, T* lse, const T* qkv, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS) {
  const int64_t W = int64_t(NH + 2 * NKV) * HS, OW = int64_t(NH) * HS;
  const int group = NH / NKV;
  const T scale = T(1.0 / std::sqrt(double(HS)));
  const T minus_inf = -std::numeric_limits<T>::infinity();
#pragma omp parallel if(worth_threads(B * NH * T_ * T_ * HS))
  {
    std::vector<T> S(kTile * kTile), m(kTile), l(kTile);  // this thread's tile
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h) {
        const int32_t* mask_b = mask + b * T_;
        const int64_t f = first_visible(mask_b, T_);
        const T* Q = qkv + b * T_ * W + int64_t(h) * HS;  // position t's head at row t (stride W)
        const T* K = qkv + b * T_ * W + int64_t(NH + h / group) * HS;
        const T* V = qkv + b * T_ * W + int64_t(NH + NKV + h / group) * HS;
        T* O = out + b * T_ * OW + int64_t(h) * HS;  // stride OW
        T* L = lse + (b * NH + h) * T_;
        for (int64_t t = 0; t < T_; ++t)
          for (int i = 0; i < HS; ++i) O[t * OW + i] = T(0);
        for (int64_t t = 0; t < f; ++t) L[t] = minus_inf;  // no visible key
        for (int64_t t0 = f; t0 < T_; t0 += kTile) {
          const int64_t nq = std::min(kTile, T_ - t0);
          std::fill(m.begin(), m.begin() + nq, minus_inf);
          std::fill(l.begin(), l.begin() + nq, T(0));
          for (int64_t s0 = f; s0 < t0 + nq; s0 += kTile) {  // key tiles up to the diagonal
            const int64_t nk = std::min(kTile, t0 + nq - s0);
            gemm(CblasNoTrans, CblasTrans, nq, nk, HS, scale, Q + t0 * W, W, K + s0 * W, W, T(0), S.data(), nk);
            for (int64_t i = 0; i < nq; ++i) {
              T* row = S.data() + i * nk;
              T row_max = m[size_t(i)];
              for (int64_t j = 0; j < nk; ++j) {
                if (!visible(mask_b, s0 + j, t0 + i)) row[j] = minus_inf;
                row_max = std::max(row_max, row[j]);
              }
              if (row_max == minus_inf) {  // nothing visible yet: P = 0
                std::fill(row, row + nk, T(0));
                continue;
              }
              const T rescale = exp_of(m[size_t(i)] - row_max);  // 0 on the first visible tile
              T sum = 0;
#pragma omp simd reduction(+ : sum)
              for (int64_t j = 0; j < nk; ++j) {
                row[j] = exp_of(row[j] - row_max);
                sum += row[j];
              }
              l[size_t(i)] = l[size_t(i)] * rescale + sum;
              m[size_t(i)] = row_max;
              if (rescale != T(1))
                for (int c = 0; c < HS; ++c) O[(t0 + i) * OW + c] *= rescale;
            }
            gemm(CblasNoTrans, CblasNoTrans, nq, HS, nk, T(1), S.data(), nk, V + s0 * W, W, T(1), O + t0 * OW, OW);
          }
          for (int64_t i = 0; i < nq; ++i) {
            const int64_t t = t0 + i;
            const T li = l[size_t(i)];
            if (li == T(0)) {  // no visible key (a hole in the mask reaching back to f)
              L[t] = minus_inf;
              continue;
            }
            for (int c = 0; c < HS; ++c) O[t * OW + c] /= li;
            L[t] = m[size_t(i)] + std::log(li);
          }
        }
      }
  }
}

template <class T> void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS) {
  const int64_t W = int64_t(NH + 2 * NKV) * HS, OW = int64_t(NH) * HS;
  const int group = NH / NKV;
  const T scale = T(1.0 / std::sqrt(double(HS)));
  // One task per (b, kv head): it owns dq of the heads in its group and dk, dv of its kv head, so
  // the sums over queries and over the heads sharing a kv head need no atomics.
#pragma omp parallel if(worth_threads(B * NH * T_ * T_ * HS))
  {
    std::vector<T> P(kTile * kTile), dS(kTile * kTile), D(T_);
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b)
      for (int kvh = 0; kvh < NKV; ++kvh) {
        const int32_t* mask_b = mask + b * T_;
        const int64_t f = first_visible(mask_b, T_);
        const int64_t k_off = int64_t(NH + kvh) * HS, v_off = int64_t(NH + NKV + kvh) * HS;
        T* rows = dqkv + b * T_ * W;
        for (int64_t t = 0; t < T_; ++t) {  // dqkv is "=": clear this task's slices first
          for (int64_t i = 0; i < int64_t(group) * HS; ++i) rows[t * W + int64_t(kvh) * group * HS + i] = T(0);
          for (int i = 0; i < HS; ++i) rows[t * W + k_off + i] = rows[t * W + v_off + i] = T(0);
        }
        const T* K = qkv + b * T_ * W + k_off;
        const T* V = qkv + b * T_ * W + v_off;
        T* dK = rows + k_off;
        T* dV = rows + v_off;
        for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
          const T* Q = qkv + b * T_ * W + int64_t(h) * HS;
          const T* dO = dout + b * T_ * OW + int64_t(h) * HS;
          const T* L = lse + (b * NH + h) * T_;
          T* dQ = rows + int64_t(h) * HS;
          for (int64_t t = f; t < T_; ++t) D[size_t(t)] = dot(dO + t * OW, out + b * T_ * OW + t * OW + int64_t(h) * HS, HS);
          for (int64_t t0 = f; t0 < T_; t0 += kTile) {
            const int64_t nq = std::min(kTile, T_ - t0);
            for (int64_t s0 = f; s0 < t0 + nq; s0 += kTile) {
              const int64_t nk = std::min(kTile, t0 + nq - s0);
              // P = exp(scale Q K^T - lse) on visible entries, 0 elsewhere
              gemm(CblasNoTrans, CblasTrans, nq, nk, HS, scale, Q + t0 * W, W, K + s0 * W, W, T(0), P.data(), nk);
              for (int64_t i = 0; i < nq; ++i) {
                T* row = P.data() + i * nk;
                const T lse_t = L[t0 + i];
                for (int64_t j = 0; j < nk; ++j) row[j] = visible(mask_b, s0 + j, t0 + i) ? row[j] - lse_t : T(-INFINITY);
#pragma omp simd
                for (int64_t j = 0; j < nk; ++j) row[j] = exp_of(row[j]);
              }
              // dS = P (dO V^T - D)
              gemm(CblasNoTrans, CblasTrans, nq, nk, HS, T(1), dO + t0 * OW, OW, V + s0 * W, W, T(0), dS.data(), nk);
              for (int64_t i = 0; i < nq; ++i)
                for (int64_t j = 0; j < nk; ++j) dS[size_t(i * nk + j)] = P[size_t(i * nk + j)] * (dS[size_t(i * nk + j)] - D[size_t(t0 + i)]);
              gemm(CblasTrans, CblasNoTrans, nk, HS, nq, T(1), P.data(), nk, dO + t0 * OW, OW, T(1), dV + s0 * W, W);
              gemm(CblasNoTrans, CblasNoTrans, nq, HS, nk, scale, dS.data(), nk, K + s0 * W, W, T(1), dQ + t0 * W, W);
              gemm(CblasTrans, CblasNoTrans, nk, HS, nq, scale, dS.data(), nk, Q + t0 * W, W, T(1), dK + s0 * W, W);
            }
          }
        }
      }
  }
}

PPO_CPU_INSTANTIATE(attention_forward)
PPO_CPU_INSTANTIATE(attention_backward)

}  // namespace ppo::cpu
