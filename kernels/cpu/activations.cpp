// GELU (tanh approximation, GPT-2) and SwiGLU (Llama/Qwen2), forward and backward. All "=".
// tanh and sigmoid are vec_math.h's (vectorized in float).
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace ppo::cpu {

namespace {
constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;
}  // namespace

// out = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)      inp, out (n)
template <class T> void gelu_forward(T* out, const T* inp, int64_t n) {
#pragma omp parallel for if(worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T u = T(kGeluScale) * (x + T(kGeluCubic) * x * x * x);
    out[i] = T(0.5) * x * (T(1) + tanh_of(u));
  }
}

// dout/dx of the above: 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715 x^2)
// dinp = dout * gelu'(inp)   (n)
template <class T> void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
#pragma omp parallel for if(worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T u = T(kGeluScale) * (x + T(kGeluCubic) * x * x * x);
    const T t = tanh_of(u);
    const T du_dx = T(kGeluScale) * (T(1) + T(3 * kGeluCubic) * x * x);
    dinp[i] = dout[i] * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du_dx);
  }
}

// inp(N,2F) = [gate | up] per row;  out(N,F) = silu(gate) * up,  silu(g) = g sigmoid(g)
template <class T> void swiglu_forward(T* out, const T* inp, int64_t N, int64_t F) {
#pragma omp parallel for if(worth_threads(N * F))
  for (int64_t n = 0; n < N; ++n) {
    const T* gate = inp + n * 2 * F;
    const T* up = gate + F;
    for (int64_t f = 0; f < F; ++f) {
      out[n * F + f] = gate[f] * sigmoid_of(gate[f]) * up[f];
    }
  }
}

// With s = sigmoid(g):  silu'(g) = s (1 + g (1 - s))
// dgate = dout * up * silu'(gate);  dup = dout * silu(gate)      dinp(N,2F) = [dgate | dup]
template <class T> void swiglu_backward(T* dinp, const T* dout, const T* inp, int64_t N, int64_t F) {
#pragma omp parallel for if(worth_threads(N * F))
  for (int64_t n = 0; n < N; ++n) {
    const T* gate = inp + n * 2 * F;
    const T* up = gate + F;
    T* dgate = dinp + n * 2 * F;
    T* dup = dgate + F;
    for (int64_t f = 0; f < F; ++f) {
      const T g = gate[f], s = sigmoid_of(g), d = dout[n * F + f];
      dgate[f] = d * up[f] * s * (T(1) + g * (T(1) - s));
      dup[f] = d * g * s;
    }
  }
}

PPO_CPU_INSTANTIATE(gelu_forward)
PPO_CPU_INSTANTIATE(gelu_backward)
PPO_CPU_INSTANTIATE(swiglu_forward)
PPO_CPU_INSTANTIATE(swiglu_backward)

}  // namespace ppo::cpu
