// Tensor views: a pointer into an arena with a dtype, up to 4 dims (row-major, contiguous) and
// the device the bytes live on. A view owns nothing. An empty view (data == nullptr) stands for
// an absent optional argument.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include "engine/dtype.h"
#include "engine/error.h"

namespace ppo {

enum class DeviceKind : uint8_t { CPU, CUDA };
inline const char* device_name(DeviceKind d) { return d == DeviceKind::CPU ? "cpu" : "cuda"; }

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  DeviceKind device = DeviceKind::CPU;
  int ndim = 0;
  int64_t shape[4] = {0, 0, 0, 0};
  const char* name = "";  // for error messages; points at a string that outlives the view

  Tensor() = default;
  Tensor(void* data_, DType dtype_, DeviceKind device_, std::initializer_list<int64_t> dims,
         const char* name_ = "");

  bool empty() const { return data == nullptr; }
  int64_t numel() const;
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const;  // negative i counts from the end
  std::string shape_str() const;  // e.g. "f32[4,7,24]"

  // Same bytes, another shape with the same element count.
  Tensor reshape(std::initializer_list<int64_t> dims) const;
  // Rows [begin, end) along dim 0.
  Tensor slice0(int64_t begin, int64_t end) const;

  template <class T>
  T* ptr() const { return static_cast<T*>(data); }
};

}  // namespace ppo
