// Step 4 of the PPO step: from the rollout's per-token log-probs and the per-sequence scores, the
// per-token KL against the reference and the shaped per-token rewards, with the statistics the
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
#pragma once
#include <cstdint>
#include <vector>
#include "kernels/backend.h"

namespace ppo {

struct PpoConfig;

struct RewardSettings {
  float kl_coef = 0.05f;  // the KL controller's current beta
  KLEstimator kl_estimator = KLEstimator::K1;
  bool kl_in_reward = true;
  bool whiten_rewards = false;
  double score_shift = 0.0, score_scale = 1.0;  // running score normalization (normalize_scores)
  float reward_clip = 0.0f;  // 0 = off
  float missing_eos_penalty = 0.0f;

  static RewardSettings from_config(const PpoConfig& config, double kl_coef);
};

struct RewardInputs {
  Tensor logp, ref_logp;                // (B,R) stat: rollout policy and reference log-probs
  Tensor mask;                          // (B,R) i32
  std::vector<float> scores;            // (B) reward-model score per sequence
  std::vector<uint8_t> ended_with_eos;  // (B) 1 when the response ended with EOS
};

struct RewardStats {
  double kl = 0;                // mean over sequences of the summed per-token KL (objective/kl)
  double non_score_reward = 0;  // mean over sequences of -kl_coef * summed KL
  double score = 0;             // mean raw score (objective/scores)
  double shaped_score = 0;      // mean score after normalization, clipping and the missing-EOS penalty
  double rlhf_reward = 0;       // shaped_score + non_score_reward (objective/rlhf_reward)
  double num_eos = 0;           // responses that ended with EOS
  double response_length = 0;   // mean valid tokens per response
  bool finite = true;           // false when a KL or reward of a valid token is NaN/Inf: skip the step
};

// The host part, kept apart so it reads (and tests) on its own: per-token rewards (B*R, row-major)
// from the per-token KL (B*R) and the per-sequence scores; fills every statistic but `finite`.
std::vector<float> shape_rewards(const std::vector<float>& kl, const std::vector<int32_t>& mask, int64_t B,
                                 int64_t R, const std::vector<float>& scores,
                                 const std::vector<uint8_t>& ended_with_eos, const RewardSettings& settings,
                                 RewardStats& stats);

// Host copies of the per-token results, as compute_rewards has them (the KL read once for the
// shaping; the rewards read back only when whitened on the device).
struct RewardsOnHost {
  std::vector<float> kl, rewards;  // (B,R)
};

// kl and rewards (B,R) stat are overwritten (0 on padding); `host`, when given, gets their copies.
RewardStats compute_rewards(Backend& backend, const RewardSettings& settings, const RewardInputs& in, Tensor kl,
                            Tensor rewards, RewardsOnHost* host = nullptr);

}  // namespace ppo
