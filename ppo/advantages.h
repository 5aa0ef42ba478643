// Step 5 of the PPO step: advantages and returns from the shaped per-token rewards (ppo/rewards.h),
// by the run's estimator, with the statistics the metrics report. Written once against Backend.
//
// Shapes over response positions: B sequences, R response tokens; (B,R) tensors are stat dtype,
// `mask` (B,R) i32 is 1 on the response's real tokens — a prefix of each row. G = group_size: rows
// [gG, (g+1)G) answer one prompt. R_i = sum_t reward_{i,t}, the sequence's return.
//
//   gae           A, returns = GAE(rewards, values; gamma, lam)       (Backend::gae_reverse_scan)
//   grpo          A_{i,t} = (R_i - mean_g R) / (std_g R + 1e-6)       (DeepSeekMath, outcome supervision;
//                 std with Bessel's correction, as torch.std in TRL and veRL;
//                 norm_by_std = false: A_{i,t} = R_i - mean_g R, Dr. GRPO)
//   rloo          A_{i,t} = R_i - mean_{j in g, j != i} R_j          (Ahmadian et al. 2024)
//   reinforce_pp  A_t = returns_t = sum_{s >= t} gamma^(s-t) reward_s (Hu 2025: token-level KL in the
//                 rewards, no critic): GAE with values 0 and lambda 1
// returns of grpo and rloo: R_i on every valid token. Then, for every estimator, A optionally
// whitened over the batch's valid tokens: (A - mean) / sqrt(var + 1e-8) (REINFORCE++'s batch
// normalization). Without a critic `values` are 0 (ppo/experience.h) and explained variance is NaN.
#pragma once
#include <cstdint>
#include <vector>
#include "kernels/backend.h"
#include "ppo/config.h"

namespace ppo {

struct AdvantageSettings {
  AdvantageEstimator estimator = AdvantageEstimator::Gae;
  float gamma = 1.0f, lam = 0.95f;
  bool whiten_advantages = true;
  int64_t group_size = 1;   // G (samples_per_prompt)
  bool norm_by_std = true;  // grpo: divide by the group's std (norm_adv_by_std_in_grpo)

  static AdvantageSettings from_config(const PpoConfig& config);
};

struct AdvantageStats {
  double advantage_mean = 0, advantage_std = 0;  // before whitening, over valid tokens
  double return_mean = 0, return_std = 0;
  // 1 - Var(returns - values) / Var(returns) over valid tokens (gae); returns - values are the
  // advantages before whitening, so it comes from the two moments above with no other pass.
  double explained_variance = 0;
  bool finite = true;             // false when a moment of the advantages or returns is NaN/Inf
};

// The host part of grpo and rloo: one advantage per sequence from the sequence returns (B of them,
// B a multiple of G), as in the table above.
std::vector<double> group_advantages(const std::vector<double>& returns, int64_t group_size,
                                     AdvantageEstimator estimator, bool norm_by_std);

// rewards, values (B,R) stat and mask (B,R) i32 in; advantages, returns (B,R) stat overwritten (0 on
// padding).
AdvantageStats estimate_advantages(Backend& backend, const AdvantageSettings& settings, Tensor rewards, Tensor values,
                                   Tensor mask, Tensor advantages, Tensor returns);

}  // namespace ppo
