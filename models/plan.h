// Arena planning for a PPO run: the four models of classic RLHF and the run-level scratch.
//   policy    : trained, LM head (+ scalar head when the value head sits on its trunk), generates
//   reference : frozen copy of the policy's config, LM head
//   reward    : frozen, scalar head
//   value     : trained, scalar head (config of the reward model, or of the policy by value_init)
#pragma once
#include <string>
#include <utility>
#include <vector>
#include "models/transformer.h"
#include "ppo/config.h"

namespace ppo {

struct PlannedModel {
  std::string owner;  // "policy", "reference", "reward", "value"
  ModelSpec spec;
};

// Whether a run scores responses with a reward model or with the caller's reward function (no
// reward model is allocated then).
enum class Scoring : uint8_t { RewardModel, Callback };

// The models of a run; `value_model` PolicyHead puts the value head on the policy trunk (no
// separate value model), None plans no critic at all. The value model's config is the reward model's with value_init = reward
// (also when a callback scores and no reward model exists), else the policy's.
std::vector<PlannedModel> ppo_models(const ModelConfig& policy, const ModelConfig& reward, ValueModelKind value_model,
                                     ValueInit value_init, Scoring scoring = Scoring::RewardModel);

// ("run", "scratch"), Always: Backend::scratch_bytes for the most rows one op sees (a training
// micro-batch or a rollout batch) and the largest vocabulary.
RegionSpec scratch_region(const std::vector<PlannedModel>& models, const RunShape& shape, Precision p);

// Every region of the run: each model's (model_regions) and the scratch.
std::vector<RegionSpec> ppo_regions(const std::vector<PlannedModel>& models, const RunShape& shape, Precision p);

// From a PPO run config: its model configs (parsed and checked; reward defaults to the policy's)
// and one rank's shape among `ranks` data-parallel ranks (its rollout share: rollout_batch_size /
// ranks rows, which must divide evenly).
std::vector<PlannedModel> ppo_models(const PpoConfig& config, const std::string& where,
                                     Scoring scoring = Scoring::RewardModel);
RunShape run_shape(const PpoConfig& config, int64_t ranks = 1);

}  // namespace ppo
