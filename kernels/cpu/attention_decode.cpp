// KV cache of one layer and single-query attention over it (token-by-token generation).
// kcache, vcache (B,S,NKV*HS); qkv (B,T,(NH+2*NKV)*HS) packs [q heads | k heads | v heads].
// Decode: one query per sequence; keys are cache positions s < length with mask[b,s] == 1 (the
// new token's own k, v must already be written at length-1). Same math as attention_forward:
//   out = sum_s softmax_s(q.k_s / sqrt(HS)) v_s;   out = 0 when no key is visible.
// Per (b, h), from the row's first visible position f (as attention_forward):
//   scores(f..length-1) = K q / sqrt(HS)  (a BLAS gemv);  p = exp(scores - max) (masked: 0);
//   out = V^T p / sum p  (a gemv)
#include <cmath>
#include <limits>
#include <vector>
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

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
  const T scale = T(1.0 / std::sqrt(double(HS)));
#pragma omp parallel if(worth_threads(B * NH * length * HS))
  {
    std::vector<T> p(length);  // this thread's scores, then weights
#pragma omp for collapse(2)
    for (int64_t b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h) {
        const int32_t* mask_b = mask + b * S;
        const T* q = qkv + b * W + int64_t(h) * HS;
        const int64_t kv_off = int64_t(h / group) * HS;
        T* o = out + (b * NH + h) * int64_t(HS);
        int64_t f = 0;
        while (f < length && mask_b[f] != 1) ++f;
        if (f == length) {  // no visible key
          for (int i = 0; i < HS; ++i) o[i] = T(0);
          continue;
        }
        const int64_t n = length - f;
        gemv(CblasNoTrans, n, HS, scale, kcache + (b * S + f) * KW + kv_off, KW, q, T(0), p.data());
        T max_score = -std::numeric_limits<T>::infinity();
        for (int64_t s = 0; s < n; ++s) {
          if (mask_b[f + s] != 1) p[size_t(s)] = -std::numeric_limits<T>::infinity();
          max_score = std::max(max_score, p[size_t(s)]);
        }
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t s = 0; s < n; ++s) {
          p[size_t(s)] = exp_of(p[size_t(s)] - max_score);
          sum += p[size_t(s)];
        }
        gemv(CblasTrans, n, HS, T(1) / sum, vcache + (b * S + f) * KW + kv_off, KW, p.data(), T(0), o);
      }
  }
}

PPO_CPU_INSTANTIATE(kv_cache_write)
PPO_CPU_INSTANTIATE(attention_decode)

}  // namespace ppo::cpu
