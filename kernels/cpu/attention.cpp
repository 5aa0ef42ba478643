// Causal self-attention with grouped-query heads and a key mask, forward and backward.
// qkv(B,T,W), W = (NH+2*NKV)*HS, packs per position [q heads | k heads | v heads]; query head h
// reads kv head h / (NH/NKV). Query t sees key s iff s <= t and mask[b,s] == 1; scale = 1/sqrt(HS).
//   score_s = q_t.k_s * scale;  lse_t = log sum_s exp score_s;  p_s = exp(score_s - lse_t)
//   out_t = sum_s p_s v_s
// A query with no visible key gets out = 0, lse = -inf and zero gradient.
// Backward (recomputing p from lse, never storing the TxT matrix):
//   dp_s = dout_t.v_s;  D_t = dout_t.out_t (= sum_s p_s dp_s);  ds_s = p_s (dp_s - D_t)
//   dq_t = scale sum_s ds_s k_s;   dk_s += scale ds_s q_t;   dv_s += p_s dout_t
#include <cmath>
#include <limits>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

namespace {

template <class T>
double dot(const T* a, const T* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

bool visible(const int32_t* mask_b, int64_t s, int64_t t) { return s <= t && mask_b[s] == 1; }

}  // namespace

template <class T> void attention_forward(T* out, T* lse, const T* qkv, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS) {
  const int64_t W = int64_t(NH + 2 * NKV) * HS, OW = int64_t(NH) * HS;
  const int group = NH / NKV;
  const double scale = 1.0 / std::sqrt(double(HS));
#pragma omp parallel for collapse(3) if(worth_threads(B * NH * T_ * T_ * HS))
  for (int64_t b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int64_t t = 0; t < T_; ++t) {
        const int32_t* mask_b = mask + b * T_;
        const T* q = qkv + (b * T_ + t) * W + int64_t(h) * HS;
        const int64_t k_off = int64_t(NH + h / group) * HS, v_off = int64_t(NH + NKV + h / group) * HS;
        T* o = out + (b * T_ + t) * OW + int64_t(h) * HS;
        // pass 1: the largest visible score (for a stable exp)
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t s = 0; s <= t; ++s)
          if (visible(mask_b, s, t)) max_score = std::max(max_score, dot(q, qkv + (b * T_ + s) * W + k_off, HS) * scale);
        for (int i = 0; i < HS; ++i) o[i] = T(0);
        if (max_score == -std::numeric_limits<double>::infinity()) {  // no visible key
          lse[(b * NH + h) * T_ + t] = T(-std::numeric_limits<double>::infinity());
          continue;
        }
        // pass 2: sum of exp(score - max) and the unnormalized weighted sum of values
        double sum = 0;
        for (int64_t s = 0; s <= t; ++s) {
          if (!visible(mask_b, s, t)) continue;
          const T* row = qkv + (b * T_ + s) * W;
          const double e = std::exp(dot(q, row + k_off, HS) * scale - max_score);
          sum += e;
          for (int i = 0; i < HS; ++i) o[i] += T(e * double(row[v_off + i]));
        }
        for (int i = 0; i < HS; ++i) o[i] = T(double(o[i]) / sum);
        lse[(b * NH + h) * T_ + t] = T(max_score + std::log(sum));
      }
}

template <class T> void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS) {
  const int64_t W = int64_t(NH + 2 * NKV) * HS, OW = int64_t(NH) * HS;
  const int group = NH / NKV;
  const double scale = 1.0 / std::sqrt(double(HS));
  // One task per (b, kv head): it owns dq of the heads in its group and dk, dv of its kv head, so
  // the sums over queries and over the heads sharing a kv head need no atomics.
#pragma omp parallel for collapse(2) if(worth_threads(B * NH * T_ * T_ * HS))
  for (int64_t b = 0; b < B; ++b)
    for (int kvh = 0; kvh < NKV; ++kvh) {
      const int32_t* mask_b = mask + b * T_;
      const int64_t k_off = int64_t(NH + kvh) * HS, v_off = int64_t(NH + NKV + kvh) * HS;
      for (int64_t t = 0; t < T_; ++t) {  // dqkv is "=": clear this task's slices first
        T* row = dqkv + (b * T_ + t) * W;
        for (int64_t i = 0; i < int64_t(group) * HS; ++i) row[int64_t(kvh) * group * HS + i] = T(0);
        for (int i = 0; i < HS; ++i) row[k_off + i] = row[v_off + i] = T(0);
      }
      for (int h = kvh * group; h < (kvh + 1) * group; ++h)
        for (int64_t t = 0; t < T_; ++t) {
          const double lse_t = double(lse[(b * NH + h) * T_ + t]);
          if (lse_t == -std::numeric_limits<double>::infinity()) continue;  // no visible key
          const T* q = qkv + (b * T_ + t) * W + int64_t(h) * HS;
          const T* d_o = dout + (b * T_ + t) * OW + int64_t(h) * HS;
          T* dq = dqkv + (b * T_ + t) * W + int64_t(h) * HS;
          const double D = dot(d_o, out + (b * T_ + t) * OW + int64_t(h) * HS, HS);
          for (int64_t s = 0; s <= t; ++s) {
            if (!visible(mask_b, s, t)) continue;
            const T* k = qkv + (b * T_ + s) * W + k_off;
            const T* v = qkv + (b * T_ + s) * W + v_off;
            T* dk = dqkv + (b * T_ + s) * W + k_off;
            T* dv = dqkv + (b * T_ + s) * W + v_off;
            const double p = std::exp(dot(q, k, HS) * scale - lse_t);
            const double ds = p * (dot(d_o, v, HS) - D);
            for (int i = 0; i < HS; ++i) {
              dq[i] += T(scale * ds * double(k[i]));
              dk[i] += T(scale * ds * double(q[i]));
              dv[i] += T(p * double(d_o[i]));
            }
          }
        }
    }
}

PPO_CPU_INSTANTIATE(attention_forward)
PPO_CPU_INSTANTIATE(attention_backward)

}  // namespace ppo::cpu
