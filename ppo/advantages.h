// Step 5 of the PPO step: advantages and returns from the shaped per-token rewards (ppo/rewards.h)
// and the rollout values, with the statistics the metrics report. Written once against Backend.
//
// Shapes over response positions: B sequences, R response tokens; (B,R) tensors are stat dtype,
// `mask` (B,R) i32 is 1 on the response's real tokens — a prefix of each row.
//
//   A, returns = GAE(rewards, values; gamma, lam)                      (Backend::gae_reverse_scan)
//   A optionally whitened over valid tokens: (A - mean) / sqrt(var + 1e-8)
#pragma once
#include <cstdint>
#include "kernels/backend.h"

namespace ppo {

struct PpoConfig;

struct AdvantageSettings {
  float gamma = 1.0f, lam = 0.95f;
  bool whiten_advantages = true;

  static AdvantageSettings from_config(const PpoConfig& config);
};

struct AdvantageStats {
  double advantage_mean = 0, advantage_std = 0;  // before whitening, over valid tokens
  double return_mean = 0, return_std = 0;
  double explained_variance = 0;  // 1 - Var(returns - values) / Var(returns) over valid tokens
  bool finite = true;             // false when a moment of the advantages or returns is NaN/Inf
};

// rewards, values (B,R) stat and mask (B,R) i32 in; advantages, returns (B,R) stat overwritten (0 on
// padding).
AdvantageStats estimate_advantages(Backend& backend, const AdvantageSettings& settings, Tensor rewards, Tensor values,
                                   Tensor mask, Tensor advantages, Tensor returns);

}  // namespace ppo
