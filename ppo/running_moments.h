// Running mean and variance of every value seen so far, merged one batch at a time (Chan, Golub and
// LeVeque's parallel update, in double): the statistics of running score normalization
// (config normalize_scores; TRL's use_score_scaling + use_score_norm).
//   batch: n_b values, mean_b, m2_b = sum (x - mean_b)^2
//   delta = mean_b - mean;  n' = n + n_b;  mean' = mean + delta n_b / n'
//   m2' = m2 + m2_b + delta^2 n n_b / n';   var = m2 / n (population)
// TRL divides by the Bessel-corrected std plus float eps; normalize_scores (and the PyTorch peer)
// by sqrt(var + 1e-8): a factor sqrt(n / (n - 1)) apart, which fades as scores accumulate.
#pragma once
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

namespace ppo {

struct RunningMoments {
  double count = 0, mean = 0, m2 = 0;

  void update(const std::vector<float>& batch);
  double var() const { return count > 0 ? m2 / count : 0.0; }
  // For checkpoints: {"count", "mean", "m2"} (JSON doubles round-trip exactly).
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state, const std::string& where);
};

}  // namespace ppo
