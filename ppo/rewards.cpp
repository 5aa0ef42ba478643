#include "ppo/rewards.h"

#include <algorithm>
#include <cmath>
#include "engine/error.h"
#include "ppo/config.h"

namespace ppo {

namespace {

constexpr double kWhitenEps = 1e-8;  // variance floor

bool all_finite(const std::vector<float>& x, const std::vector<int32_t>& mask) {
  for (size_t i = 0; i < x.size(); ++i)
    if (mask[i] && !std::isfinite(x[i])) return false;
  return true;
}

}  // namespace

RewardSettings RewardSettings::from_config(const PpoConfig& c, double kl_coef) {
  RewardSettings s;
  s.kl_coef = float(kl_coef);
  s.kl_estimator = c.kl_estimator;
  s.kl_in_reward = c.kl_in_reward;
  s.whiten_rewards = c.whiten_rewards;
  s.reward_clip = c.reward_clip;
  s.missing_eos_penalty = c.missing_eos_penalty;
  return s;
}

std::vector<float> shape_rewards(const std::vector<float>& kl, const std::vector<int32_t>& mask, int64_t B,
                                 int64_t R, const std::vector<float>& scores,
                                 const std::vector<uint8_t>& ended_with_eos, const RewardSettings& s,
                                 RewardStats& stats) {
  PPO_ASSERT(int64_t(kl.size()) == B * R && int64_t(mask.size()) == B * R, "shape_rewards: kl ", kl.size(),
             " and mask ", mask.size(), " values for B*R = ", B * R);
  PPO_ASSERT(int64_t(scores.size()) == B && int64_t(ended_with_eos.size()) == B, "shape_rewards: ", scores.size(),
             " scores and ", ended_with_eos.size(), " EOS flags for B = ", B);
  std::vector<float> rewards(size_t(B * R), 0.0f);
  double kl_total = 0, score_total = 0, shaped_total = 0, eos_total = 0, length_total = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* m = &mask[size_t(b * R)];
    const int64_t length = std::count(m, m + R, 1);
    PPO_ASSERT(length >= 1, "shape_rewards: response ", b, " has no valid token for its score to land on");
    PPO_ASSERT(std::all_of(m, m + length, [](int32_t v) { return v == 1; }) &&
                   std::all_of(m + length, m + R, [](int32_t v) { return v == 0; }),
               "shape_rewards: the mask of response ", b, " is not a prefix of ones");
    double kl_sum = 0;
    for (int64_t t = 0; t < length; ++t) {
      const float k = kl[size_t(b * R + t)];
      kl_sum += k;
      if (s.kl_in_reward) rewards[size_t(b * R + t)] = -s.kl_coef * k;
    }
    double score = (double(scores[size_t(b)]) - s.score_shift) * s.score_scale;
    if (s.reward_clip > 0) score = std::clamp(score, -double(s.reward_clip), double(s.reward_clip));
    if (!ended_with_eos[size_t(b)]) score -= s.missing_eos_penalty;
    rewards[size_t(b * R + length - 1)] += float(score);  // the last real token: the EOS when there is one
    kl_total += kl_sum;
    score_total += scores[size_t(b)];
    shaped_total += score;
    eos_total += ended_with_eos[size_t(b)] ? 1 : 0;
    length_total += double(length);
  }
  stats.kl = kl_total / double(B);
  stats.non_score_reward = -double(s.kl_coef) * stats.kl;
  stats.score = score_total / double(B);
  stats.shaped_score = shaped_total / double(B);
  stats.rlhf_reward = stats.shaped_score + stats.non_score_reward;
  stats.num_eos = eos_total;
  stats.response_length = length_total / double(B);
  return rewards;
}

RewardStats compute_rewards(Backend& backend, const RewardSettings& s, const RewardInputs& in, Tensor kl,
                            Tensor rewards, RewardsOnHost* host) {
  PPO_ASSERT(in.mask.ndim == 2, "compute_rewards: mask must be (B,R), got ", in.mask.shape_str());
  const int64_t B = in.mask.dim(0), R = in.mask.dim(1);
  RewardStats stats;
  // per-token KL against the reference (0 on padding)
  backend.kl_penalty(kl, in.logp, in.ref_logp, in.mask, s.kl_estimator);
  // shaped rewards, placed on the host (one score per row lands on its last valid token)
  const std::vector<int32_t> mask = backend.to_host_ids(in.mask);
  std::vector<float> kl_host = backend.to_host(kl);
  std::vector<float> shaped = shape_rewards(kl_host, mask, B, R, in.scores, in.ended_with_eos, s, stats);
  backend.from_host(rewards, shaped);
  stats.finite = all_finite(kl_host, mask) && all_finite(shaped, mask);
  if (s.whiten_rewards) {
    // (r - mean) * rstd, then + mean (two passes: folding the mean into one shift loses it to
    // rounding when rstd is large)
    const MaskedMoments m = backend.masked_moments(rewards, in.mask);
    backend.masked_affine(rewards, in.mask, float(m.mean), float(1.0 / std::sqrt(m.var + kWhitenEps)));
    backend.masked_affine(rewards, in.mask, float(-m.mean), 1.0f);
  }
  if (host) {
    host->rewards = s.whiten_rewards ? backend.to_host(rewards) : std::move(shaped);  // stat holds floats exactly
    host->kl = std::move(kl_host);
  }
  return stats;
}

}  // namespace ppo
