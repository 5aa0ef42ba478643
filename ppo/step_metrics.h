// The metrics row of one PPO step, with the names TRL and OpenRLHF users know (ppo/metrics.h).
#pragma once
#include <cstdint>
#include "ppo/config.h"
#include "ppo/experience.h"
#include "ppo/metrics.h"
#include "ppo/phase.h"
#include "ppo/update.h"

namespace ppo {

// The cost of one step's phases (ppo/phase.h). Bench phase names of bench/peers: generate =
// sampling + old_logp.
struct PhaseTimes {
  PhaseCost sampling, old_logp, reference, reward, value, advantages, train, total;
};

// Row of step `step` (1-based) after `optimizer_steps` optimizer steps of the run; with `gold`
// (the demo task) also objective/gold_scores.
MetricsRow step_metrics(const PpoConfig& config, int64_t step, int64_t optimizer_steps, const Experience& exp,
                        const UpdateStats& update, const PhaseTimes& times, bool gold);

}  // namespace ppo
