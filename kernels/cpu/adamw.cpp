// AdamW over a model's parameters as one flat array (in place on the CPU: no master copy) and the sum
// of squares used for global-norm gradient clipping. param, grad, m, v (n).
#include <algorithm>
#include <cmath>
#include <vector>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

// clip = min(1, max_grad_norm / (sqrt(grad_sumsq) + 1e-6)) (1 without clipping); g = grad * (grad_scale * clip)
// m = b1 m + (1-b1) g;   v = b2 v + (1-b2) g^2;   mhat = m / (1 - b1^step);   vhat = v / (1 - b2^step)
// w = w - lr (mhat / (sqrt(vhat) + eps) + wd_i w),  wd_i = weight_decay for i < decayed, else 0
// A non-finite grad_sumsq leaves everything unchanged. The per-element math runs in double; m, v
// and w are stored back in T.
template <class T>
void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, int64_t decayed, double grad_sumsq,
                  float max_grad_norm, const AdamWParams& hp) {
  const double norm = std::sqrt(grad_sumsq);
  if (!std::isfinite(norm)) return;
  const float clip = max_grad_norm > 0 ? float(std::min(1.0, double(max_grad_norm) / (norm + 1e-6))) : 1.0f;
  const float scale = hp.grad_scale * clip;
  const double b1 = hp.beta1, b2 = hp.beta2;
  const double m_correction = 1.0 / (1.0 - std::pow(b1, double(hp.step)));
  const double v_correction = 1.0 / (1.0 - std::pow(b2, double(hp.step)));
#pragma omp parallel for if(worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(grad[i]) * scale;
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = T(mi);
    v[i] = T(vi);
    const double w = param[i];
    const double decay = i < decayed ? double(hp.weight_decay) : 0.0;
    const double update = (mi * m_correction) / (std::sqrt(vi * v_correction) + hp.eps) + decay * w;
    param[i] = T(w - double(hp.lr) * update);
  }
}

// sum_i x_i^2 in double. Fixed chunks summed in chunk order: the result does not depend on the
// number of threads.
template <class T> double sum_squares(const T* x, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(size_t(chunks), 0.0);
#pragma omp parallel for if(worth_threads(n))
  for (int64_t k = 0; k < chunks; ++k) {
    double s = 0;
    const int64_t end = std::min(n, (k + 1) * kChunk);
#pragma omp simd reduction(+ : s)
    for (int64_t i = k * kChunk; i < end; ++i) s += double(x[i]) * double(x[i]);
    partial[size_t(k)] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

PPO_CPU_INSTANTIATE(adamw_update)
PPO_CPU_INSTANTIATE(sum_squares)

}  // namespace ppo::cpu
