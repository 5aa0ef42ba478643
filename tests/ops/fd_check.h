// Helpers for the op tests: finite-difference gradient checks on a CPU Backend with
// Precision::F64 (a scalar loss L = sum(out * weights) recomputed with each input element moved by
// +-h).
#pragma once
#include <functional>
#include <vector>
#include "engine/dtype.h"
#include "engine/tensor.h"
#include "helpers.h"

namespace ppo::test {

// The f64 values of a CPU f64 tensor, as f32 for check_close.
inline std::vector<float> f64_values(const Tensor& t) {
  REQUIRE(t.dtype == DType::F64);
  REQUIRE(t.device == DeviceKind::CPU);
  const double* p = t.ptr<double>();
  return std::vector<float>(p, p + t.numel());
}

// L = sum_i out_i * weights_i, summed in double from a CPU f64 tensor.
inline double weighted_sum(const Tensor& out, const std::vector<float>& weights) {
  REQUIRE(out.dtype == DType::F64);
  REQUIRE(size_t(out.numel()) == weights.size());
  double L = 0;
  for (int64_t i = 0; i < out.numel(); ++i) L += out.ptr<double>()[i] * double(weights[size_t(i)]);
  return L;
}

// dL/dx_i = (L(x_i + h) - L(x_i - h)) / 2h for every element of the CPU f64 tensor x; `loss`
// recomputes L from the current contents of x. x is restored afterwards.
inline std::vector<float> central_diff(Tensor x, const std::function<double()>& loss, double h = 1e-6) {
  REQUIRE(x.dtype == DType::F64);
  double* p = x.ptr<double>();
  std::vector<float> grad(size_t(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double x0 = p[i];
    p[i] = x0 + h;
    const double up = loss();
    p[i] = x0 - h;
    const double down = loss();
    p[i] = x0;
    grad[size_t(i)] = float((up - down) / (2 * h));
  }
  return grad;
}

// got - base, elementwise: the part an accumulating ("+=") op added to a prefilled buffer.
inline std::vector<float> minus(const std::vector<float>& got, const std::vector<float>& base) {
  std::vector<float> d(got.size());
  for (size_t i = 0; i < got.size(); ++i) d[i] = float(double(got[i]) - double(base[i]));
  return d;
}

// Values rounded through bf16, so CPU (f32) and CUDA (bf16) runs see identical inputs.
inline std::vector<float> bf16_rounded(std::vector<float> v) {
  for (float& x : v) x = f32_from_bf16(bf16_from_f32(x));
  return v;
}

}  // namespace ppo::test
