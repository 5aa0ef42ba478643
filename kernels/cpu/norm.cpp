// LayerNorm and RMSNorm over the last dim, forward and backward; the residual add.
// inp, out, dout, dinp (N,C); mean, rstd (N) (mean null for RMSNorm); weight, bias (C).
// Row statistics accumulate in double.
#include <cmath>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

// LayerNorm: mean = avg_c x;  rstd = 1/sqrt(avg_c (x-mean)^2 + eps);  out = (x-mean)*rstd*w + b
// RMSNorm:   rstd = 1/sqrt(avg_c x^2 + eps);                          out = x*rstd*w
// bias may be null (LayerNorm without bias). mean, rstd are saved for the backward pass.
template <class T> void norm_forward(NormKind kind, T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, float eps) {
  const bool layer_norm = kind == NormKind::LayerNorm;
#pragma omp parallel for if(worth_threads(N * C))
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    double m = 0;
    if (layer_norm) {
#pragma omp simd reduction(+ : m)
      for (int64_t c = 0; c < C; ++c) m += x[c];
      m /= double(C);
    }
    double var = 0;  // LayerNorm: variance about the mean; RMSNorm: mean square (m = 0)
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= double(C);
    const double s = 1.0 / std::sqrt(var + double(eps));
    T* y = out + n * C;
    for (int64_t c = 0; c < C; ++c) {
      const double xhat = (x[c] - m) * s;
      y[c] = T(xhat * weight[c] + (bias ? double(bias[c]) : 0.0));
    }
    if (mean) mean[n] = T(m);
    rstd[n] = T(s);
  }
}

// With xhat = (x - mean)*rstd (RMSNorm: mean = 0) and dxhat = dout*w:
//   LayerNorm: dx = rstd * (dxhat - avg_c dxhat - xhat * avg_c(dxhat*xhat))
//   RMSNorm:   dx = rstd * (dxhat - xhat * avg_c(dxhat*xhat))
// dinp (N,C) +=;  dweight (C) += sum_n dout*xhat;  dbias (C) += sum_n dout   (both may be null)
template <class T> void norm_backward(NormKind kind, T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, const T* mean, const T* rstd, int64_t N, int64_t C) {
  const bool layer_norm = kind == NormKind::LayerNorm;
  // dinp: rows are independent.
#pragma omp parallel for if(worth_threads(N * C))
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    const T* g = dout + n * C;
    const double m = layer_norm ? double(mean[n]) : 0.0, s = rstd[n];
    double avg_dxhat = 0, avg_dxhat_xhat = 0;
#pragma omp simd reduction(+ : avg_dxhat, avg_dxhat_xhat)
    for (int64_t c = 0; c < C; ++c) {
      const double dxhat = double(g[c]) * weight[c];
      avg_dxhat += dxhat;
      avg_dxhat_xhat += dxhat * (x[c] - m) * s;
    }
    avg_dxhat /= double(C);
    avg_dxhat_xhat /= double(C);
    if (!layer_norm) avg_dxhat = 0;
    T* dx = dinp + n * C;
    for (int64_t c = 0; c < C; ++c) {
      const double xhat = (x[c] - m) * s;
      const double dxhat = double(g[c]) * weight[c];
      dx[c] += T(s * (dxhat - avg_dxhat - xhat * avg_dxhat_xhat));
    }
  }
  // dweight += sum_n dout*xhat, dbias += sum_n dout: sums over rows, per channel (for_column_chunks).
  if (dbias) sum_rows(dbias, dout, N, C);
  if (!dweight) return;
  for_column_chunks(N, C, [&](int64_t c0, int64_t c1) {
    double dw[kColumnChunk] = {};
    for (int64_t n = 0; n < N; ++n) {
      const double m = layer_norm ? double(mean[n]) : 0.0, s = rstd[n];
      for (int64_t c = c0; c < c1; ++c) dw[c - c0] += double(dout[n * C + c]) * (inp[n * C + c] - m) * s;
    }
    for (int64_t c = c0; c < c1; ++c) dweight[c] += T(dw[c - c0]);
  });
}

// out = a + b   (n elements)
template <class T> void residual_forward(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for if(worth_threads(n))
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

PPO_CPU_INSTANTIATE(norm_forward)
PPO_CPU_INSTANTIATE(norm_backward)
PPO_CPU_INSTANTIATE(residual_forward)

}  // namespace ppo::cpu
