// PPO per-token math: KL penalty, GAE, masked moments and whitening, the clipped policy and value
// losses. Every tensor is (B,T) flattened to n = B*T entries; mask (B,T) i32, 1 = valid token.
// Sums over tokens run serially in token order (deterministic), in double.
#include <algorithm>
#include <cmath>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

// r = ref_logp - logp;  k1 = -r;  k2 = r^2 / 2;  k3 = exp(r) - 1 - r;   kl = 0 where mask == 0
template <class T> void kl_penalty(T* kl, const T* logp, const T* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator) {
#pragma omp parallel for if(worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const double r = double(ref_logp[i]) - double(logp[i]);
    double k = 0;
    switch (estimator) {
      case KLEstimator::K1: k = -r; break;
      case KLEstimator::K2: k = 0.5 * r * r; break;
      case KLEstimator::K3: k = std::expm1(r) - r; break;
    }
    kl[i] = mask[i] ? T(k) : T(0);
  }
}

// dlogp += weight * dKL/dlogp where mask == 1, r = ref_logp - logp:  k1: 1;  k2: -r;  k3: 1 - exp(r)
template <class T> void kl_penalty_backward(T* dlogp, const T* logp, const T* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator, float weight) {
#pragma omp parallel for if(worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    if (!mask[i]) continue;
    const double r = double(ref_logp[i]) - double(logp[i]);
    double g = 0;
    switch (estimator) {
      case KLEstimator::K1: g = 1; break;
      case KLEstimator::K2: g = -r; break;
      case KLEstimator::K3: g = -std::expm1(r); break;
    }
    dlogp[i] = T(double(dlogp[i]) + double(weight) * g);
  }
}

// Per row b, scanning t = T-1 .. 0 with m_T = 0:
//   delta_t = r_t + gamma m_{t+1} V_{t+1} - V_t;   A_t = delta_t + gamma lambda m_{t+1} A_{t+1}
//   returns_t = A_t + V_t;   A_t = returns_t = 0 where m_t == 0.
// Values and rewards at masked tokens are never read, so padding garbage cannot leak in.
template <class T> void gae_reverse_scan(T* advantages, T* returns, const T* rewards, const T* values, const int32_t* mask, int64_t B, int64_t T_, float gamma, float lambda) {
#pragma omp parallel for if(worth_threads(B * T_))
  for (int64_t b = 0; b < B; ++b) {
    double next_value = 0, next_adv = 0;  // m_{t+1} V_{t+1} and m_{t+1} A_{t+1}
    for (int64_t t = T_ - 1; t >= 0; --t) {
      const int64_t i = b * T_ + t;
      if (!mask[i]) {
        advantages[i] = returns[i] = T(0);
        next_value = next_adv = 0;
        continue;
      }
      const double v = values[i];
      const double delta = double(rewards[i]) + double(gamma) * next_value - v;
      const double adv = delta + double(gamma) * double(lambda) * next_adv;
      advantages[i] = T(adv);
      returns[i] = T(adv + v);
      next_value = v;
      next_adv = adv;
    }
  }
}

// Over entries with mask == 1: count, mean, population variance (two passes, double).
// No valid entry gives {mean 0, var 0, count 0}.
template <class T> MaskedMoments masked_moments(const T* x, const int32_t* mask, int64_t n) {
  MaskedMoments r;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) {
      sum += x[i];
      r.count += 1;
    }
  if (r.count == 0) return r;
  r.mean = sum / r.count;
  double sq = 0;
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) sq += (x[i] - r.mean) * (x[i] - r.mean);
  r.var = sq / r.count;
  return r;
}

// x = (x - shift) * scale where mask == 1, else 0
template <class T> void masked_affine(T* x, const int32_t* mask, int64_t n, float shift, float scale) {
#pragma omp parallel for if(worth_threads(n))
  for (int64_t i = 0; i < n; ++i) x[i] = mask[i] ? T((double(x[i]) - shift) * scale) : T(0);
}

// Per valid token, ratio = exp(logp - old_logp), A the advantage:
//   l_unclipped = -A ratio;   l_clipped = -A clip(ratio, 1-clip_eps, 1+clip_eps)
//   l = max(l_unclipped, l_clipped);   if dual_clip > 1 and A < 0:  l = min(l, -dual_clip A)
// dl/dlogp = -A ratio when l_unclipped is the active term, else 0 (the clipped and the dual-clip
// terms are constant in logp where they are active). dlogp = token_weight dl/dlogp, 0 where masked.
// Sums over valid tokens: loss l; clipped = #(l_clipped > l_unclipped), the standard clip binding
// (TRL's clipfrac; a token cut by the dual clip is not counted); approx_kl (logp - old_logp)^2 / 2;
// ratio; count.
template <class T> PolicyLossSums ppo_policy_loss(T* dlogp, const T* logp, const T* old_logp, const T* advantages, const int32_t* mask, int64_t n, float clip_eps, float dual_clip, float token_weight) {
  PolicyLossSums s;
  for (int64_t i = 0; i < n; ++i) {
    if (!mask[i]) {
      dlogp[i] = T(0);
      continue;
    }
    const double log_ratio = double(logp[i]) - double(old_logp[i]);
    const double ratio = std::exp(log_ratio);
    const double A = advantages[i];
    const double l_unclipped = -A * ratio;
    const double l_clipped = -A * std::clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps);
    double l = std::max(l_unclipped, l_clipped);
    double grad = l_clipped > l_unclipped ? 0.0 : -A * ratio;
    if (dual_clip > 1 && A < 0 && -dual_clip * A < l) {
      l = -dual_clip * A;
      grad = 0;
    }
    dlogp[i] = T(token_weight * grad);
    s.loss += l;
    s.clipped += l_clipped > l_unclipped ? 1 : 0;
    s.approx_kl += 0.5 * log_ratio * log_ratio;
    s.ratio += ratio;
    s.count += 1;
  }
  return s;
}

// Per valid token, R the return:  vc = old_v + clip(v - old_v, -clip_value, clip_value)
//   l = 0.5 max((v - R)^2, (vc - R)^2)
// dl/dv = v - R when the unclipped term is the larger (or equal) one, else 0 (vc is then clipped,
// constant in v). dvalues = token_weight dl/dv, 0 where masked.
// Sums over valid tokens: loss l; clipped = #((vc - R)^2 > (v - R)^2); count.
template <class T> ValueLossSums ppo_value_loss(T* dvalues, const T* values, const T* old_values, const T* returns, const int32_t* mask, int64_t n, float clip_value, float token_weight) {
  ValueLossSums s;
  for (int64_t i = 0; i < n; ++i) {
    if (!mask[i]) {
      dvalues[i] = T(0);
      continue;
    }
    const double v = values[i], old_v = old_values[i], R = returns[i];
    const double vc = old_v + std::clamp(v - old_v, -double(clip_value), double(clip_value));
    const double l_unclipped = (v - R) * (v - R), l_clipped = (vc - R) * (vc - R);
    const bool clip_active = l_clipped > l_unclipped;
    dvalues[i] = T(token_weight * (clip_active ? 0.0 : v - R));
    s.loss += 0.5 * std::max(l_unclipped, l_clipped);
    s.clipped += clip_active ? 1 : 0;
    s.count += 1;
  }
  return s;
}

PPO_CPU_INSTANTIATE(kl_penalty)
PPO_CPU_INSTANTIATE(kl_penalty_backward)
PPO_CPU_INSTANTIATE(gae_reverse_scan)
PPO_CPU_INSTANTIATE(masked_moments)
PPO_CPU_INSTANTIATE(masked_affine)
PPO_CPU_INSTANTIATE(ppo_policy_loss)
PPO_CPU_INSTANTIATE(ppo_value_loss)

}  // namespace ppo::cpu
