// KV cache of one layer and single-query attention over it (token-by-token generation).
// kcache, vcache (B,S,NKV*HS); qkv (B,T,(NH+2*NKV)*HS) packs [q heads | k heads | v heads].
// Decode: one query per sequence; keys are cache positions s < length with mask[b,s] == 1 (the
// new token's own k, v must already be written at length-1). Same math as attention_forward:
//   out = sum_s softmax_s(q.k_s / sqrt(HS)) v_s;   out = 0 when no key is visible.
#include <cmath>
#include <limits>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void kv_cache_write(T* kcache, T* vcache, const T* qkv, int64_t B, int64_t T_, int64_t S, int64_t start, int NH, int NKV, int HS) {
  const int64_t W = int64_t(NH + 2 * NKV) * HS, KW = int64_t(NKV) * HS;
#pragma omp parallel for collapse(2) if(worth_threads(B * T_ * KW))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T_; ++t) {
      const T* row = qkv + (b * T_ + t) * W;
      const int64_t c = (b * S + start + t) * KW;
      for (int64_t i = 0; i < KW; ++i) {
        kcache[c + i] = row[int64_t(NH) * HS + i];
        vcache[c + i] = row[int64_t(NH + NKV) * HS + i];
      }
    }
}

template <class T> void attention_decode(T* out, const T* qkv, const T* kcache, const T* vcache, const int32_t* mask, int64_t B, int64_t S, int64_t length, int NH, int NKV, int HS) {
  const int64_t W = int64_t(NH + 2 * NKV) * HS, KW = int64_t(NKV) * HS;
  const int group = NH / NKV;
  const double scale = 1.0 / std::sqrt(double(HS));
  auto score = [&](const T* q, const T* k) {
    double s = 0;
    for (int i = 0; i < HS; ++i) s += double(q[i]) * double(k[i]);
    return s * scale;
  };
#pragma omp parallel for collapse(2) if(worth_threads(B * NH * length * HS))
  for (int64_t b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const T* q = qkv + b * W + int64_t(h) * HS;
      const int64_t kv_off = int64_t(h / group) * HS;
      T* o = out + (b * NH + h) * int64_t(HS);
      // pass 1: the largest visible score
      double max_score = -std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s < length; ++s)
        if (mask[b * S + s] == 1) max_score = std::max(max_score, score(q, kcache + (b * S + s) * KW + kv_off));
      for (int i = 0; i < HS; ++i) o[i] = T(0);
      if (max_score == -std::numeric_limits<double>::infinity()) continue;  // no visible key
      // pass 2: softmax weights and the weighted sum of values
      double sum = 0;
      for (int64_t s = 0; s < length; ++s) {
        if (mask[b * S + s] != 1) continue;
        const double e = std::exp(score(q, kcache + (b * S + s) * KW + kv_off) - max_score);
        const T* v = vcache + (b * S + s) * KW + kv_off;
        sum += e;
        for (int i = 0; i < HS; ++i) o[i] += T(e * double(v[i]));
      }
      for (int i = 0; i < HS; ++i) o[i] = T(double(o[i]) / sum);
    }
}

PPO_CPU_INSTANTIATE(kv_cache_write)
PPO_CPU_INSTANTIATE(attention_decode)

}  // namespace ppo::cpu
