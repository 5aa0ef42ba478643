// Step 4-5 of the PPO step: from the rollout's per-token log-probs and values and the per-sequence
// scores, the per-token KL, the shaped rewards, GAE advantages and returns, and the statistics the
// metrics report. Written once against Backend; runs on any device.
//
// Shapes over response positions: B sequences, R response tokens; (B,R) tensors are stat dtype,
// `mask` (B,R) i32 is 1 on the response's real tokens (the EOS included) — a prefix of each row.
//
//   kl_t      = KL estimator(logp_t, ref_logp_t)                      (Backend::kl_penalty)
//   s         = clip((score - score_shift) * score_scale, -reward_clip, reward_clip)
//               - missing_eos_penalty * [no EOS]       (shift 0, scale 1 unless normalize_scores)
//   reward_t  = -kl_coef * kl_t * [kl_in_reward] + s * [t == last valid token]   (0 on padding)
//   rewards optionally scaled to unit variance over valid tokens, mean kept (TRL's whiten_rewards)
//   A, returns = GAE(rewards, values; gamma, lam)                      (Backend::gae_reverse_scan)
//   A optionally whitened over valid tokens: (A - mean) / sqrt(var + 1e-8)
#pragma once
#include <cstdint>
#include <vector>
#include "kernels/backend.h"

namespace ppo {

struct PpoConfig;

struct AdvantageSettings {
  float kl_coef = 0.05f;  // the KL controller's current beta
  KLEstimator kl_estimator = KLEstimator::K1;
  bool kl_in_reward = true;
  float gamma = 1.0f, lam = 0.95f;
  bool whiten_advantages = true, whiten_rewards = false;
  double score_shift = 0.0, score_scale = 1.0;  // running score normalization (finish_experience)
  float reward_clip = 0.0f;  // 0 = off
  float missing_eos_penalty = 0.0f;

  static AdvantageSettings from_config(const PpoConfig& config, double kl_coef);
};

struct AdvantageInputs {
  Tensor logp, ref_logp, values;  // (B,R) stat: rollout policy and reference log-probs, rollout values
  Tensor mask;                    // (B,R) i32
  std::vector<float> scores;      // (B) reward-model score per sequence
  std::vector<uint8_t> ended_with_eos;  // (B) 1 when the response ended with EOS
};

struct AdvantageOutputs {
  Tensor kl, rewards, advantages, returns;  // (B,R) stat, overwritten
};

struct AdvantageStats {
  double kl = 0;                // mean over sequences of the summed per-token KL (objective/kl)
  double non_score_reward = 0;  // mean over sequences of -kl_coef * summed KL
  double score = 0;             // mean raw score (objective/scores)
  double shaped_score = 0;      // mean score after normalization, clipping and the missing-EOS penalty
  double rlhf_reward = 0;       // shaped_score + non_score_reward (objective/rlhf_reward)
  double num_eos = 0;           // responses that ended with EOS
  double response_length = 0;   // mean valid tokens per response
  double advantage_mean = 0, advantage_std = 0;  // before whitening, over valid tokens
  double return_mean = 0, return_std = 0;
  double explained_variance = 0;  // 1 - Var(returns - values) / Var(returns) over valid tokens
  bool finite = true;             // false when a KL, reward, return or advantage is NaN/Inf: skip the step
};

// The host part, kept apart so it reads (and tests) on its own: per-token rewards (B*R, row-major)
// from the per-token KL (B*R) and the per-sequence scores. Fills the per-sequence statistics
// (kl, non_score_reward, score, shaped_score, rlhf_reward, num_eos, response_length) of `stats`.
std::vector<float> shape_rewards(const std::vector<float>& kl, const std::vector<int32_t>& mask, int64_t B,
                                 int64_t R, const std::vector<float>& scores,
                                 const std::vector<uint8_t>& ended_with_eos, const AdvantageSettings& settings,
                                 AdvantageStats& stats);

AdvantageStats compute_advantages(Backend& backend, const AdvantageSettings& settings, const AdvantageInputs& in,
                                  const AdvantageOutputs& out);

}  // namespace ppo
