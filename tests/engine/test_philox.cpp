// Philox4x32-10 against the published known-answer vectors (Random123's kat_vectors, from
// Salmon et al., SC 2011).
#include <doctest/doctest.h>

#include <ios>
#include <set>
#include "engine/philox.h"

using namespace ppo;

static void check_kat(Philox4x32 ctr, uint32_t k0, uint32_t k1, Philox4x32 want) {
  const Philox4x32 got = philox4x32_10(ctr, k0, k1);
  for (int i = 0; i < 4; ++i) CHECK_MESSAGE(got.v[i] == want.v[i], "word ", i, ": ", std::hex, got.v[i], " vs ", want.v[i]);
}

TEST_CASE("philox4x32-10 known answers") {
  check_kat({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
  check_kat({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
            {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
  check_kat({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
            {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

TEST_CASE("philox_draw separates seeds, streams and offsets; uniforms lie in [0,1)") {
  std::set<uint32_t> seen;
  for (uint64_t seed : {1ull, 2ull})
    for (uint64_t stream : {0ull, 1ull, 1ull << 40})
      for (uint64_t offset : {0ull, 1ull, 1ull << 33}) seen.insert(philox_draw(seed, stream, offset).v[0]);
  CHECK(seen.size() == 18);
  double sum = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    const float u = uniform_from_bits(philox_draw(3, 0, i).v[i % 4]);
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    sum += u;
  }
  CHECK(sum / 10000 == doctest::Approx(0.5).epsilon(0.02));
}
