// Philox4x32-10 counter-based RNG (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy
// as 1, 2, 3", SC 2011). One implementation for host and device: a draw is a pure function of
// (key, counter), so the CPU and the GPU produce identical streams from the same (seed, offset).
#pragma once
#include <cstdint>
#if !defined(__CUDACC__)
#include <vector>
#endif
#include "engine/dtype.h"

namespace ppo {

struct Philox4x32 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;   // round multipliers
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule increments
PPO_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}
}  // namespace philox_detail

// Ten rounds of Philox4x32 on counter ctr with key (k0, k1).
PPO_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  using namespace philox_detail;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, ctr.v[0], hi0, lo0);
    mulhilo(kMul1, ctr.v[2], hi1, lo1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return ctr;
}

// The engine's convention: key = 64-bit seed; counter = (offset lo, offset hi, stream lo, stream hi).
// `stream` separates independent uses (a tensor, a sampling row); `offset` indexes draws within it.
PPO_HD Philox4x32 philox_draw(uint64_t seed, uint64_t stream, uint64_t offset) {
  Philox4x32 ctr{{uint32_t(offset), uint32_t(offset >> 32), uint32_t(stream), uint32_t(stream >> 32)}};
  return philox4x32_10(ctr, uint32_t(seed), uint32_t(seed >> 32));
}

// Uniform float in [0, 1) from the top 24 bits of a 32-bit draw.
PPO_HD float uniform_from_bits(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

#if !defined(__CUDACC__)
// A permutation of [0, n) from Philox draws (Fisher-Yates), a pure function of (seed, stream):
// minibatch shuffles and dataset orders that a resumed run reproduces. Host only (engine/philox.cpp).
std::vector<int32_t> philox_permutation(int64_t n, uint64_t seed, uint64_t stream);
#endif

}  // namespace ppo
