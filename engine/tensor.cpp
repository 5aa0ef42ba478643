#include "engine/tensor.h"

namespace ppo {

Tensor::Tensor(void* data_, DType dtype_, DeviceKind device_, std::initializer_list<int64_t> dims,
               const char* name_)
    : data(data_), dtype(dtype_), device(device_), name(name_) {
  PPO_ASSERT(dims.size() >= 1 && dims.size() <= 4, "tensor '", name_, "' must have 1 to 4 dims");
  for (int64_t d : dims) {
    PPO_ASSERT(d >= 0, "tensor '", name_, "' has a negative dim");
    shape[ndim++] = d;
  }
}

int64_t Tensor::numel() const {
  if (ndim == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

int64_t Tensor::dim(int i) const {
  int j = i < 0 ? ndim + i : i;
  PPO_ASSERT(j >= 0 && j < ndim, "tensor '", name, "' ", shape_str(), " has no dim ", i);
  return shape[j];
}

std::string Tensor::shape_str() const {
  std::string s = std::string(dtype_name(dtype)) + "[";
  for (int i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor Tensor::reshape(std::initializer_list<int64_t> dims) const {
  Tensor t(data, dtype, device, dims, name);
  PPO_ASSERT(t.numel() == numel(), "cannot reshape tensor '", name, "' ", shape_str(), " to ",
             t.shape_str());
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  PPO_ASSERT(ndim >= 1 && 0 <= begin && begin <= end && end <= shape[0], "bad slice [", begin, ",",
             end, ") of tensor '", name, "' ", shape_str());
  Tensor t = *this;
  t.shape[0] = end - begin;
  t.data = static_cast<char*>(data) + size_t(begin) * (bytes() / size_t(shape[0] ? shape[0] : 1));
  return t;
}

}  // namespace ppo
