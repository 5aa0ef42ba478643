// The KL coefficient beta of the reward -beta*KL: fixed, or adaptive (Ziegler et al. 2019,
// "Fine-Tuning Language Models from Human Preferences", eq. 2):
//   error = clip(KL / target - 1, -0.2, 0.2);   beta <- beta * (1 + error * n_steps / horizon)
// where KL is the batch's mean per-sequence KL (summed over response tokens) and n_steps the number
// of sequences in the batch. The state (beta) is saved with checkpoints so a resumed run continues
// with the same coefficient.
#pragma once
#include <cstdint>
#include <string>
#include <nlohmann/json.hpp>

namespace ppo {

struct PpoConfig;

enum class KlControl : uint8_t { Fixed, Adaptive };

class KlController {
 public:
  KlController(KlControl control, double init_coef, double target, double horizon);
  explicit KlController(const PpoConfig& config);  // kl_coef, adaptive_kl, kl_target, kl_horizon

  double coef() const { return coef_; }
  KlControl control() const { return control_; }
  // After a rollout batch of n_steps sequences whose mean per-sequence KL was `kl`.
  void update(double kl, int64_t n_steps);

  // {"control": "fixed"|"adaptive", "coef": beta}; target and horizon come from the run's config.
  nlohmann::json state() const;
  // The control kind must match this run's, beta be finite and >= 0; errors name `where`.
  void load_state(const nlohmann::json& state, const std::string& where);

 private:
  KlControl control_;
  double coef_, target_, horizon_;
};

}  // namespace ppo
