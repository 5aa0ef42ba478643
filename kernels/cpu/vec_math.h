// exp, tanh and sigmoid that loops over float arrays can vectorize. std::exp and std::tanh are
// opaque library calls, one element at a time (glibc's vector versions are only declared under
// -ffast-math, which would also drop inf and NaN); the softmax of the LM head and of attention,
// GELU and SwiGLU spend most of their time in them. In double (the gradient checks) these are the
// library functions. The kernels are compiled with -fno-trapping-math -fno-math-errno (CMakeLists)
// so that the selects below become vector blends; neither flag changes a result.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ppo::cpu {

// exp(x) in float, relative error < 2e-7 (about 2 ulp) for x in [-87.3, 88.3]; below -87.5 it is 0
// (exp(-inf) = 0 exactly: masked scores), above 88.4 +inf, NaN stays NaN. Cody-Waite range
// reduction, then Cephes's expf polynomial:
//   n = round(x / ln2),  r = x - n ln2 (ln2 in two parts, exact products),  |r| <= ln2/2
//   exp(x) = 2^n exp(r),  exp(r) = 1 + r + r^2 (1/2 + r/6 + r^2/24 + ...)  (degree 7 in r)
// 2^n is built in the exponent bits; round() is the 1.5*2^23 trick (adding it leaves the rounded
// integer in the low mantissa bits), which needs no float->int conversion.
inline float exp_approx(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const float xc = std::min(std::max(x, -87.5f), 88.5f);
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  // unsigned: wraps (NaN's bits) where int32 arithmetic would be undefined; the same bits otherwise
  const uint32_t ni = __builtin_bit_cast(uint32_t, t) - __builtin_bit_cast(uint32_t, kRound);
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float y = p * __builtin_bit_cast(float, (ni + 127u) << 23);
  const float y0 = x < -87.5f ? 0.0f : y;
  return x != x ? x : y0;
}

inline float exp_of(float x) { return exp_approx(x); }
inline double exp_of(double x) { return std::exp(x); }

// tanh(x) = 1 - 2 / (exp(2x) + 1): exact limits +-1 (exp overflow gives 1, underflow -1); near 0
// the absolute error is ~1e-7 (the relative error grows as x -> 0, harmless where it is used:
// GELU adds it to 1).
inline float tanh_of(float x) { return 1.0f - 2.0f / (exp_approx(2.0f * x) + 1.0f); }
inline double tanh_of(double x) { return std::tanh(x); }

// sigmoid(x) = 1 / (1 + exp(-x))
inline float sigmoid_of(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
inline double sigmoid_of(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace ppo::cpu
