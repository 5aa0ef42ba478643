#include "ppo/advantages.h"

#include <cmath>
#include "engine/error.h"

namespace ppo {

namespace {

constexpr double kWhitenEps = 1e-8;  // variance floor: one valid token whitens to 0, not NaN
constexpr double kGroupStdEps = 1e-6;  // veRL's epsilon of the group std

// grpo and rloo: the sequence returns R_i (sums of the valid rewards), their group advantages on
// every valid token of the row, and R_i as the returns.
void outcome_advantages(Backend& be, const AdvantageSettings& s, Tensor rewards, Tensor mask, Tensor advantages,
                        Tensor returns) {
  const int64_t B = mask.dim(0), R = mask.dim(1);
  const std::vector<int32_t> m = be.to_host_ids(mask);
  const std::vector<float> r = be.to_host(rewards);
  std::vector<double> sequence_returns(static_cast<size_t>(B), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < R; ++t)
      if (m[size_t(b * R + t)]) sequence_returns[size_t(b)] += r[size_t(b * R + t)];
  const std::vector<double> a = group_advantages(sequence_returns, s.group_size, s.estimator, s.norm_by_std);
  std::vector<float> adv(size_t(B * R), 0.0f), ret(size_t(B * R), 0.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < R; ++t)
      if (m[size_t(b * R + t)]) {
        adv[size_t(b * R + t)] = float(a[size_t(b)]);
        ret[size_t(b * R + t)] = float(sequence_returns[size_t(b)]);
      }
  be.from_host(advantages, adv);
  be.from_host(returns, ret);
}

}  // namespace

AdvantageSettings AdvantageSettings::from_config(const PpoConfig& c) {
  AdvantageSettings s;
  s.estimator = c.advantage_estimator;
  s.gamma = c.gamma;
  s.lam = c.lam;
  s.whiten_advantages = c.whiten_advantages;
  s.group_size = c.samples_per_prompt;
  s.norm_by_std = c.norm_adv_by_std_in_grpo;
  return s;
}

std::vector<double> group_advantages(const std::vector<double>& returns, int64_t G, AdvantageEstimator e,
                                     bool norm_by_std) {
  PPO_ASSERT(e == AdvantageEstimator::Grpo || e == AdvantageEstimator::Rloo, "group_advantages: ", to_string(e),
             " is not a group estimator");
  PPO_ASSERT(G >= 2 && returns.size() % size_t(G) == 0, "group_advantages: ", returns.size(),
             " returns in groups of ", G, " (at least 2, dividing the batch)");
  std::vector<double> a(returns.size());
  for (size_t first = 0; first < returns.size(); first += size_t(G)) {
    double sum = 0;
    for (int64_t j = 0; j < G; ++j) sum += returns[first + size_t(j)];
    const double mean = sum / double(G);
    double sq = 0;
    for (int64_t j = 0; j < G; ++j) sq += (returns[first + size_t(j)] - mean) * (returns[first + size_t(j)] - mean);
    const double std = std::sqrt(sq / double(G - 1));
    for (int64_t j = 0; j < G; ++j) {
      const double r = returns[first + size_t(j)];
      if (e == AdvantageEstimator::Rloo) a[first + size_t(j)] = r - (sum - r) / double(G - 1);
      else a[first + size_t(j)] = norm_by_std ? (r - mean) / (std + kGroupStdEps) : r - mean;
    }
  }
  return a;
}

AdvantageStats estimate_advantages(Backend& backend, const AdvantageSettings& s, Tensor rewards, Tensor values,
                                   Tensor mask, Tensor advantages, Tensor returns) {
  AdvantageStats stats;
  switch (s.estimator) {  // advantages and returns, 0 on padding
    case AdvantageEstimator::Gae:
      backend.gae_reverse_scan(advantages, returns, rewards, values, mask, s.gamma, s.lam);
      break;
    case AdvantageEstimator::ReinforcePP:  // values are 0: the discounted reward-to-go
      backend.gae_reverse_scan(advantages, returns, rewards, values, mask, s.gamma, 1.0f);
      break;
    case AdvantageEstimator::Grpo:
    case AdvantageEstimator::Rloo:
      outcome_advantages(backend, s, rewards, mask, advantages, returns);
      break;
  }
  const MaskedMoments a = backend.masked_moments(advantages, mask);
  const MaskedMoments r = backend.masked_moments(returns, mask);
  stats.advantage_mean = a.mean, stats.advantage_std = std::sqrt(a.var);
  stats.return_mean = r.mean, stats.return_std = std::sqrt(r.var);
  stats.finite = std::isfinite(a.mean) && std::isfinite(a.var) && std::isfinite(r.mean) && std::isfinite(r.var);
  stats.explained_variance = s.estimator == AdvantageEstimator::Gae && r.var > 0 ? 1.0 - a.var / r.var : NAN;

  // advantage whitening over valid tokens
  if (s.whiten_advantages) backend.masked_affine(advantages, mask, float(a.mean), float(1.0 / std::sqrt(a.var + kWhitenEps)));
  return stats;
}

}  // namespace ppo
