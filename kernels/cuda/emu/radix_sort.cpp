// radix_sort_pairs on the emulated device: the contract of kernels/cuda/radix_sort.h, as stable
// 8-bit least-significant-digit passes on the host, using the caller's temp storage for its buffers.
// Not emulated under stream capture: a sort while a stream captures fails (internal.h).
#include "kernels/cuda/radix_sort.h"

#include <cstring>
#include <string>
#include <utility>

#include "kernels/cuda/emu/internal.h"

namespace ppo::cuda {

cudaError_t radix_sort_pairs(void* temp, size_t& temp_bytes, const int32_t* keys_in, int32_t* keys_out,
                             const int32_t* values_in, int32_t* values_out, int n, int begin_bit, int end_bit,
                             cudaStream_t) {
  emu::DeviceState& d = emu::device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  const size_t buffers = size_t(n > 0 ? n : 0) * 2 * sizeof(int32_t);
  const size_t need = buffers + 256;
  if (!temp) {
    temp_bytes = need;
    return cudaSuccess;
  }
  if (cudaError_t e = emu::refuse_under_capture("radix_sort_pairs (not emulated under capture)")) return e;
  auto fail = [&](const std::string& what) {
    emu::set_error(cudaErrorInvalidValue, "radix_sort_pairs: " + what);
    return cudaErrorInvalidValue;
  };
  if (n < 0 || begin_bit < 0 || end_bit > 32 || begin_bit >= end_bit) return fail("bad n or bit range");
  if (temp_bytes < need || !emu::device_range(temp, need)) return fail("temp storage smaller than the size query gave");
  const size_t bytes = size_t(n) * sizeof(int32_t);
  if (n > 0 && (!emu::device_range(keys_in, bytes) || !emu::device_range(keys_out, bytes) ||
                !emu::device_range(values_in, bytes) || !emu::device_range(values_out, bytes)))
    return fail("keys or values are not inside device allocations");
  emu::issue_work();
  if (n == 0) return cudaSuccess;
  // Ping-pong between the output arrays and the temp buffers; CUB's order for signed keys: sign bit flipped.
  int32_t* tk = static_cast<int32_t*>(temp);
  int32_t* tv = tk + n;
  std::memmove(keys_out, keys_in, bytes);
  std::memmove(values_out, values_in, bytes);
  int32_t *src_k = keys_out, *src_v = values_out, *dst_k = tk, *dst_v = tv;
  for (int shift = begin_bit; shift < end_bit; shift += 8) {
    const int width = end_bit - shift < 8 ? end_bit - shift : 8;
    const uint32_t digit_mask = (1u << width) - 1;
    auto digit = [&](int32_t k) { return ((uint32_t(k) ^ 0x80000000u) >> shift) & digit_mask; };
    size_t count[257] = {};
    for (int i = 0; i < n; ++i) ++count[digit(src_k[i]) + 1];
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (int i = 0; i < n; ++i) {
      const size_t at = count[digit(src_k[i])]++;
      dst_k[at] = src_k[i];
      dst_v[at] = src_v[i];
    }
    std::swap(src_k, dst_k);
    std::swap(src_v, dst_v);
    emu::issue_work();
  }
  if (src_k != keys_out) {
    std::memcpy(keys_out, src_k, bytes);
    std::memcpy(values_out, src_v, bytes);
  }
  return cudaSuccess;
}

}  // namespace ppo::cuda
