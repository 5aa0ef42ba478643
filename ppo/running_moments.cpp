#include "ppo/running_moments.h"

#include <cfloat>
#include "engine/error.h"
#include "io/json_fields.h"

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
  PPO_ASSERT(s.is_object(), where, ": expected {\"count\", \"mean\", \"m2\"}, got ", io::excerpt(s));
  count = io::read_number(s, where, "count", {0, DBL_MAX}, 0, io::Presence::Required);
  mean = io::read_number(s, where, "mean", {-DBL_MAX, DBL_MAX}, 0, io::Presence::Required);
  m2 = io::read_number(s, where, "m2", {0, DBL_MAX}, 0, io::Presence::Required);
}

}  // namespace ppo
