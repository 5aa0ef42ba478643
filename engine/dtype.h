// Element types and the bf16 <-> fp32 conversions, usable on host and device.
#pragma once
#include <cstdint>
#include <cstring>
#include <cstddef>

#if defined(__CUDACC__)
#define PPO_HD __host__ __device__ __forceinline__
#else
#define PPO_HD inline
#endif

namespace ppo {

// F64 exists for the CPU backend only: gradient checks run the reference math in double.
enum class DType : uint8_t { F32, BF16, I32, F64 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::F64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::F64: return "f64";
  }
  return "?";
}

// bf16 is the upper half of an IEEE binary32. Storage type only; math happens in fp32.
struct bf16 {
  uint16_t bits;
};

PPO_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

PPO_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// fp32 -> bf16, round to nearest, ties to even. NaN stays NaN (quiet bit set, sign kept),
// +-Inf stays +-Inf, values past the largest bf16 round to Inf, subnormals round like any other value.
PPO_HD bf16 bf16_from_f32(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

PPO_HD float f32_from_bf16(bf16 h) { return f32_from_bits(uint32_t(h.bits) << 16); }

// fp32 -> bf16 with stochastic rounding: add 16 random bits below the kept mantissa, then truncate.
// E[result] = f for finite f inside the bf16 range. NaN/Inf handled as in bf16_from_f32.
PPO_HD bf16 bf16_from_f32_stochastic(float f, uint32_t random_bits) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7f800000u) == 0x7f800000u) return bf16_from_f32(f);
  uint32_t r = u + (random_bits & 0xffffu);
  if ((r & 0x7f800000u) == 0x7f800000u) return bf16_from_f32(f);  // would carry into Inf: round to nearest
  return bf16{uint16_t(r >> 16)};
}

}  // namespace ppo
