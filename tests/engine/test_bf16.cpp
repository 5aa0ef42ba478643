// bf16 <-> fp32 conversion: round to nearest even, ties, NaN, Inf, overflow, subnormals, and
// stochastic rounding's expectation.
#include <doctest/doctest.h>

#include <cmath>
#include <initializer_list>
#include <limits>
#include "engine/dtype.h"
#include "engine/philox.h"

using namespace ppo;

static uint16_t bits_of(float f) { return bf16_from_f32(f).bits; }
static float from_u32(uint32_t u) { return f32_from_bits(u); }

TEST_CASE("bf16 keeps exactly representable values") {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 0.15625f, 65536.0f, 1e-30f})
    CHECK(f32_from_bf16(bf16_from_f32(f32_from_bf16(bf16_from_f32(f)))) == f32_from_bf16(bf16_from_f32(f)));
  CHECK(bits_of(1.0f) == 0x3f80);
  CHECK(bits_of(-2.0f) == 0xc000);
  CHECK(bits_of(-0.0f) == 0x8000);
}

TEST_CASE("bf16 rounds to nearest, ties to even") {
  CHECK(bits_of(from_u32(0x3f808000u)) == 0x3f80);  // exactly halfway, even below: stays
  CHECK(bits_of(from_u32(0x3f818000u)) == 0x3f82);  // exactly halfway, odd below: rounds up to even
  CHECK(bits_of(from_u32(0x3f808001u)) == 0x3f81);  // just above halfway: up
  CHECK(bits_of(from_u32(0x3f807fffu)) == 0x3f80);  // just below halfway: down
  CHECK(bits_of(from_u32(0xbf818000u)) == 0xbf82);  // negative tie, odd: away from zero to even
}

TEST_CASE("bf16 special values") {
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(bits_of(inf) == 0x7f80);
  CHECK(bits_of(-inf) == 0xff80);
  const bf16 n = bf16_from_f32(std::nanf(""));
  CHECK(std::isnan(f32_from_bf16(n)));
  // A NaN whose payload lives only in the low 16 bits must not turn into Inf.
  CHECK(std::isnan(f32_from_bf16(bf16_from_f32(from_u32(0x7f800001u)))));
  CHECK(std::isnan(f32_from_bf16(bf16_from_f32(from_u32(0xff800001u)))));
  CHECK((bf16_from_f32(from_u32(0xff800001u)).bits & 0x8000) != 0);  // sign kept
  // Past the largest finite bf16 (0x7f7f = 3.3895e38) values round to Inf.
  CHECK(bits_of(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(bits_of(from_u32(0x7f7f7fffu)) == 0x7f7f);
}

TEST_CASE("bf16 subnormals round like normals") {
  CHECK(bits_of(from_u32(0x00000001u)) == 0x0000);  // tiny subnormal rounds to +0
  CHECK(bits_of(from_u32(0x00018000u)) == 0x0002);  // subnormal tie, odd: to even
  CHECK(bits_of(from_u32(0x00010000u)) == 0x0001);  // smallest bf16 subnormal is exact
  CHECK(f32_from_bf16(bf16{0x0001}) == from_u32(0x00010000u));
}

TEST_CASE("bf16 stochastic rounding is unbiased and only picks the two neighbours") {
  const float x = from_u32(0x3f80c000u);  // 3/4 of the way from 0x3f80 to 0x3f81
  const float lo = f32_from_bf16(bf16{0x3f80}), hi = f32_from_bf16(bf16{0x3f81});
  double sum = 0;
  const int n = 100000;
  int n_hi = 0;
  for (int i = 0; i < n; ++i) {
    const float r = f32_from_bf16(bf16_from_f32_stochastic(x, philox_draw(7, 0, uint64_t(i)).v[0]));
    REQUIRE((r == lo || r == hi));
    n_hi += r == hi;
    sum += r;
  }
  CHECK(std::fabs(double(n_hi) / n - 0.75) < 0.01);
  CHECK(std::fabs(sum / n - double(x)) < 1e-4 * std::fabs(double(x)));
  CHECK(std::isinf(f32_from_bf16(bf16_from_f32_stochastic(INFINITY, 0xffffu))));
  CHECK(std::isnan(f32_from_bf16(bf16_from_f32_stochastic(NAN, 0x1234u))));
  CHECK(bf16_from_f32_stochastic(std::numeric_limits<float>::max(), 0xffffu).bits == 0x7f80);
}
