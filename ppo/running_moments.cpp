#include "ppo/running_moments.h"

#include "engine/error.h"

namespace ppo {

void RunningMoments::update(const std::vector<float>& batch) {
  if (batch.empty()) return;
  const double n_b = double(batch.size());
  double mean_b = 0, m2_b = 0;
  for (float x : batch) mean_b += x;
  mean_b /= n_b;
  for (float x : batch) m2_b += (x - mean_b) * (x - mean_b);
  const double delta = mean_b - mean, n = count + n_b;
  mean += delta * n_b / n;
  m2 += m2_b + delta * delta * count * n_b / n;
  count = n;
}

nlohmann::json RunningMoments::state() const { return {{"count", count}, {"mean", mean}, {"m2", m2}}; }

void RunningMoments::load_state(const nlohmann::json& s, const std::string& where) {
  for (const char* key : {"count", "mean", "m2"})
    PPO_ASSERT(s.is_object() && s.contains(key) && s.at(key).is_number(), where, ": running moments: '", key,
               "' missing or not a number");
  count = s.at("count").get<double>();
  mean = s.at("mean").get<double>();
  m2 = s.at("m2").get<double>();
}

}  // namespace ppo
