#include "models/plan.h"

#include <algorithm>

#include "engine/error.h"

namespace ppo {

std::vector<PlannedModel> ppo_models(const ModelConfig& policy, const ModelConfig& reward, ValueModelKind value_model,
                                     ValueInit value_init, Scoring scoring) {
  const bool value_on_policy = value_model == ValueModelKind::PolicyHead;
  std::vector<PlannedModel> m;
  m.push_back({"policy", {policy, value_on_policy ? Heads::LMAndScalar : Heads::LM, Training::Trained, Generation::KVCache}});
  m.push_back({"reference", {policy, Heads::LM, Training::Frozen, Generation::None}});
  if (scoring == Scoring::RewardModel) m.push_back({"reward", {reward, Heads::Scalar, Training::Frozen, Generation::None}});
  if (value_model == ValueModelKind::Separate)
    m.push_back({"value", {value_init == ValueInit::Reward ? reward : policy, Heads::Scalar, Training::Trained, Generation::None}});
  return m;
}

RegionSpec scratch_region(const std::vector<PlannedModel>& models, const RunShape& shape, Precision p) {
  int64_t vocab = 1;
  for (const PlannedModel& m : models) vocab = std::max(vocab, m.spec.config.vocab_size);
  const int64_t rows = std::max(shape.micro_batch * shape.seq_len(), shape.rollout_batch);
  return {"run", "scratch", Backend::scratch_bytes(p, rows, vocab), Phase::Always};
}

std::vector<RegionSpec> ppo_regions(const std::vector<PlannedModel>& models, const RunShape& shape, Precision p) {
  std::vector<RegionSpec> r;
  for (const PlannedModel& m : models) {
    const std::vector<RegionSpec> own = model_regions(m.owner, m.spec, shape, p);
    r.insert(r.end(), own.begin(), own.end());
  }
  r.push_back(scratch_region(models, shape, p));
  return r;
}

std::vector<PlannedModel> ppo_models(const PpoConfig& config, const std::string& where, Scoring scoring) {
  const ModelConfig policy = ModelConfig::from_json(config.policy, where + ": policy");
  const bool reward_given = !config.reward.is_object() || !config.reward.empty();
  const ModelConfig reward = reward_given ? ModelConfig::from_json(config.reward, where + ": reward") : policy;
  return ppo_models(policy, reward, config.value_model, config.value_init, scoring);
}

RunShape run_shape(const PpoConfig& config, int64_t ranks) {
  PPO_ASSERT(ranks >= 1 && config.rollout_batch_size % ranks == 0,
             "config rollout_batch_size = ", config.rollout_batch_size, " must be a multiple of the ", ranks,
             " ranks (each generates and scores rollout_batch_size / ranks rows)");
  return {config.rollout_batch_size / ranks, config.prompt_length, config.response_length, config.micro_batch_size,
          ranks};
}

}  // namespace ppo
