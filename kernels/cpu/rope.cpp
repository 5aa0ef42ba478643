// Rotary position embedding, "rotate half" layout (HF Llama/Qwen2), in place on the q and k heads
// of the packed qkv(B,T,(NH+2*NKV)*HS) rows; v heads are untouched. Angles are computed in double:
//   f_i = pos * theta^(-2i/HS),  i < HS/2
//   (x_i, x_{i+HS/2}) <- (x_i cos f - x_{i+HS/2} sin f,  x_{i+HS/2} cos f + x_i sin f)
// The rotation is orthogonal, so the backward pass is the same rotation by -f.
#include <cmath>
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

namespace {

// Rotates the first NH+NKV heads of every row by angle sign * f (sign = +1 forward, -1 backward).
template <class T>
void rope_rotate(T* qkv, const int32_t* pos, int64_t B, int64_t T_, int NH, int NKV, int HS, float theta,
                 double sign) {
  const int half = HS / 2;
  const int64_t W = int64_t(NH + 2 * NKV) * HS;
#pragma omp parallel for if(worth_threads(B * T_ * (NH + NKV) * HS))
  for (int64_t n = 0; n < B * T_; ++n) {
    T* row = qkv + n * W;
    for (int i = 0; i < half; ++i) {
      const double f = sign * double(pos[n]) * std::pow(double(theta), -2.0 * i / HS);
      const double c = std::cos(f), s = std::sin(f);
      for (int h = 0; h < NH + NKV; ++h) {  // q heads, then k heads
        T* x = row + int64_t(h) * HS;
        const double a = x[i], b = x[i + half];
        x[i] = T(a * c - b * s);
        x[i + half] = T(b * c + a * s);
      }
    }
  }
}

}  // namespace

template <class T> void rope_forward(T* qkv, const int32_t* pos, int64_t B, int64_t T_, int NH, int NKV, int HS, float theta) {
  rope_rotate(qkv, pos, B, T_, NH, NKV, HS, theta, +1.0);
}

template <class T> void rope_backward(T* dqkv, const int32_t* pos, int64_t B, int64_t T_, int NH, int NKV, int HS, float theta) {
  rope_rotate(dqkv, pos, B, T_, NH, NKV, HS, theta, -1.0);
}

PPO_CPU_INSTANTIATE(rope_forward)
PPO_CPU_INSTANTIATE(rope_backward)

}  // namespace ppo::cpu
