#include "engine/philox.h"

#include <numeric>
#include <utility>
#include "engine/error.h"

namespace ppo {

std::vector<int32_t> philox_permutation(int64_t n, uint64_t seed, uint64_t stream) {
  PPO_ASSERT(n >= 0 && n <= INT32_MAX, "philox_permutation: n = ", n, " is out of range");
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) {
    const Philox4x32 r = philox_draw(seed, stream, uint64_t(i));
    const uint64_t bits = (uint64_t(r.v[0]) << 32) | r.v[1];
    std::swap(p[size_t(i)], p[size_t(bits % uint64_t(i + 1))]);
  }
  return p;
}

}  // namespace ppo
