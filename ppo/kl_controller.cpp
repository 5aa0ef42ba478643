#include "ppo/kl_controller.h"

#include <algorithm>
#include <cfloat>
#include <string>
#include "engine/error.h"
#include "io/json_fields.h"
#include "ppo/config.h"

namespace ppo {

namespace {
const char* control_name(KlControl c) { return c == KlControl::Fixed ? "fixed" : "adaptive"; }
}  // namespace

KlController::KlController(KlControl control, double init_coef, double target, double horizon)
    : control_(control), coef_(init_coef), target_(target), horizon_(horizon) {
  PPO_ASSERT(init_coef >= 0, "KL controller: initial coefficient ", init_coef, " must be >= 0");
  PPO_ASSERT(control == KlControl::Fixed || (target > 0 && horizon > 0), "KL controller: adaptive target ", target,
             " and horizon ", horizon, " must be > 0");
}

KlController::KlController(const PpoConfig& c)
    : KlController(c.adaptive_kl ? KlControl::Adaptive : KlControl::Fixed, c.kl_coef, c.kl_target, c.kl_horizon) {}

void KlController::update(double kl, int64_t n_steps) {
  if (control_ == KlControl::Fixed) return;
  PPO_ASSERT(n_steps > 0, "KL controller: n_steps ", n_steps, " must be > 0");
  const double error = std::clamp(kl / target_ - 1.0, -0.2, 0.2);
  coef_ *= 1.0 + error * double(n_steps) / horizon_;
}

nlohmann::json KlController::state() const {
  return {{"control", control_name(control_)}, {"coef", coef_}};
}

void KlController::load_state(const nlohmann::json& s, const std::string& where) {
  PPO_ASSERT(s.is_object(), where, ": expected {\"control\", \"coef\"}, got ", io::excerpt(s));
  const std::string control = io::read_string(s, where, "control", "");
  PPO_ASSERT(control == control_name(control_), where, ": saved control '", control, "' differs from this run's '",
             control_name(control_), "'");
  coef_ = io::read_number(s, where, "coef", {0, DBL_MAX}, 0, io::Presence::Required);
}

}  // namespace ppo
