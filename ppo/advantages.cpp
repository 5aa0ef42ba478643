#include "ppo/advantages.h"

#include <cmath>
#include <vector>
#include "engine/error.h"
#include "ppo/config.h"

namespace ppo {

namespace {
constexpr double kWhitenEps = 1e-8;  // variance floor: one valid token whitens to 0, not NaN
}  // namespace

AdvantageSettings AdvantageSettings::from_config(const PpoConfig& c) {
  AdvantageSettings s;
  s.gamma = c.gamma;
  s.lam = c.lam;
  s.whiten_advantages = c.whiten_advantages;
  return s;
}

AdvantageStats estimate_advantages(Backend& backend, const AdvantageSettings& s, Tensor rewards, Tensor values,
                                   Tensor mask, Tensor advantages, Tensor returns) {
  AdvantageStats stats;
  // GAE advantages and returns (0 on padding)
  backend.gae_reverse_scan(advantages, returns, rewards, values, mask, s.gamma, s.lam);
  const MaskedMoments a = backend.masked_moments(advantages, mask);
  const MaskedMoments r = backend.masked_moments(returns, mask);
  stats.advantage_mean = a.mean, stats.advantage_std = std::sqrt(a.var);
  stats.return_mean = r.mean, stats.return_std = std::sqrt(r.var);
  stats.finite = std::isfinite(a.mean) && std::isfinite(a.var) && std::isfinite(r.mean) && std::isfinite(r.var);

  // how much of the returns' variance the rollout values explain (cleanRL's explained_variance)
  const std::vector<int32_t> m = backend.to_host_ids(mask);
  const std::vector<float> ret = backend.to_host(returns), val = backend.to_host(values);
  double residual_sum = 0, residual_sq = 0, n = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    if (!m[i]) continue;
    const double d = double(ret[i]) - double(val[i]);
    residual_sum += d, residual_sq += d * d, n += 1;
  }
  const double residual_var = residual_sq / n - (residual_sum / n) * (residual_sum / n);
  stats.explained_variance = r.var > 0 ? 1.0 - residual_var / r.var : NAN;

  // advantage whitening over valid tokens
  if (s.whiten_advantages) backend.masked_affine(advantages, mask, float(a.mean), float(1.0 / std::sqrt(a.var + kWhitenEps)));
  return stats;
}

}  // namespace ppo
