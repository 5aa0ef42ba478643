// What a PPO run allocates, decided before any work: the device, its precision, the arena regions
// of the run's models and buffers, and the plan report that `ppo plan` and every run print first.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>
#include "engine/arena.h"
#include "models/plan.h"
#include "ppo/config.h"

namespace ppo {

// auto: CUDA when a GPU answers, else the CPU; cuda with no GPU (or no CUDA build) is an error.
DeviceKind resolve_device(DeviceChoice choice);
// cpu: f32; cuda: bf16 weights and activations with f32 master weights, gradients and AdamW.
Precision precision_of(DeviceKind device);

// The regions of one rank of a run on `ranks` data-parallel ranks: ppo_regions of its models plus
// ("run", "experience") (ppo/experience.h); with algorithm dpo, the policy's alone (ppo/dpo.h).
std::vector<RegionSpec> run_regions(const PpoConfig& config, Precision precision,
                                    Scoring scoring = Scoring::RewardModel, int64_t ranks = 1);

// The run's shape and models, one line each (on several ranks, what one rank holds), then the
// table of `plan` (its run_regions; with `capacity`: the free bytes or the shortfall).
std::string plan_report(const PpoConfig& config, DeviceKind device, Scoring scoring, const ArenaPlan& plan,
                        std::optional<size_t> capacity, int64_t ranks = 1);

}  // namespace ppo
