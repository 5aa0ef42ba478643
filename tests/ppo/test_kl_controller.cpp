// KL controller: the adaptive update of Ziegler et al. 2019 on hand-computed numbers; fixed stays
// fixed; the state round-trips for resume.
#include <doctest/doctest.h>

#include "engine/error.h"
#include "ppo/config.h"
#include "ppo/kl_controller.h"

using namespace ppo;

TEST_CASE("adaptive KL: proportional error clipped to +-0.2, scaled by n_steps / horizon") {
  KlController kl(KlControl::Adaptive, 0.1, /*target=*/6.0, /*horizon=*/10000.0);
  // kl 7.2: error = 7.2/6 - 1 = 0.2 (at the clip); beta = 0.1 * (1 + 0.2 * 64 / 10000) = 0.100128
  kl.update(7.2, 64);
  CHECK(kl.coef() == doctest::Approx(0.100128).epsilon(1e-12));
  // kl 3: error = -0.5 -> clipped to -0.2; beta = 0.100128 * (1 - 0.2 * 500 / 10000) = 0.09912672
  kl.update(3.0, 500);
  CHECK(kl.coef() == doctest::Approx(0.09912672).epsilon(1e-12));
  // kl 6.6: error = 0.1 (inside the clip); beta *= 1 + 0.1 * 1000 / 10000 = 1.01
  kl.update(6.6, 1000);
  CHECK(kl.coef() == doctest::Approx(0.09912672 * 1.01).epsilon(1e-12));
  // kl 1000: still clipped at +0.2
  const double before = kl.coef();
  kl.update(1000.0, 10000);
  CHECK(kl.coef() == doctest::Approx(before * 1.2).epsilon(1e-12));
  CHECK_THROWS_AS(kl.update(1.0, 0), Error);
}

TEST_CASE("fixed KL stays fixed") {
  KlController kl(KlControl::Fixed, 0.05, 6.0, 10000.0);
  for (double k : {0.0, 3.0, 60.0, 1e6}) kl.update(k, 64);
  CHECK(kl.coef() == 0.05);
}

TEST_CASE("controller from the config, and its state round trip") {
  PpoConfig c;
  c.apply_override("adaptive_kl=true");
  c.apply_override("kl_coef=0.2");
  c.apply_override("kl_target=1");
  c.apply_override("kl_horizon=100");
  KlController a(c);
  CHECK(a.control() == KlControl::Adaptive);
  a.update(2.0, 10);  // error +0.2: beta = 0.2 * (1 + 0.2 * 10 / 100) = 0.204
  CHECK(a.coef() == doctest::Approx(0.204));
  KlController b(c);
  b.load_state(a.state(), "state");
  CHECK(b.coef() == a.coef());
  b.update(0.5, 10);
  a.update(0.5, 10);
  CHECK(b.coef() == a.coef());

  c.apply_override("adaptive_kl=false");
  KlController fixed(c);
  CHECK_THROWS_AS(fixed.load_state(a.state(), "state"), Error);  // adaptive state into a fixed run
  CHECK_THROWS_AS(fixed.load_state(nlohmann::json::object(), "state"), Error);
  // wrong types and a negative or non-finite coefficient are errors naming the field, never exceptions of the JSON library
  CHECK_THROWS_WITH_AS(fixed.load_state({{"control", 7}, {"coef", 0.1}}, "state"), doctest::Contains("field 'control'"), Error);
  CHECK_THROWS_WITH_AS(fixed.load_state({{"control", "fixed"}, {"coef", -0.1}}, "state"), doctest::Contains("field 'coef'"), Error);
  CHECK_THROWS_WITH_AS(fixed.load_state({{"control", "fixed"}, {"coef", "0.1"}}, "state"), doctest::Contains("field 'coef'"), Error);
  CHECK_THROWS_AS(fixed.load_state(nlohmann::json::array(), "state"), Error);
}
