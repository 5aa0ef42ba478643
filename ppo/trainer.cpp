#include "ppo/trainer.h"

#include <cstdio>
#include "engine/device_memory.h"
#include "engine/error.h"
#include "io/checkpoint.h"
#include "io/hf_checkpoint.h"
#include "io/json_fields.h"
#include "ppo/demo_task.h"
#include "ppo/experience.h"

namespace ppo {

// ---- construction -----------------------------------------------------------------------------------

namespace {

// Every parameter of `src` that `dst` also has (the trunk; heads by name).
void copy_shared(Transformer& dst, Transformer& src) {
  for (const std::string& name : dst.parameter_names()) {
    bool found = false;
    for (const std::string& s : src.parameter_names()) found = found || s == name;
    if (found) dst.set_parameter(name, src.get_parameter(name));
  }
}

}  // namespace

PpoTrainer::PpoTrainer(const PpoConfig& config, TrainerOptions options)
    : cfg_(config), opt_(std::move(options)),
      prompts_(opt_.prompts ? *opt_.prompts
               : config.prompts.empty() ? PromptSource::demo_task(config.seed)
                                        : PromptSource::jsonl(config.prompts, config.tokenizer)),
      kl_(config) {
  PPO_ASSERT(cfg_.sequence_length == cfg_.prompt_length + cfg_.response_length && cfg_.minibatch_size > 0,
             "PpoTrainer: call PpoConfig::derive() (load_config does) before building a trainer");
  const DeviceKind device = resolve_device(cfg_.device);
  const Precision precision = precision_of(device);
  const Scoring scoring = opt_.reward ? Scoring::Callback : Scoring::RewardModel;
  const std::vector<PlannedModel> models = ppo_models(cfg_, "config", scoring);

  const int64_t vocab = models[0].spec.config.vocab_size;
  prompts_.validate(cfg_.prompt_length, vocab);
  eos_ = int32_t(cfg_.eos_token_id >= 0 ? cfg_.eos_token_id : prompts_.is_demo_task() ? DemoTask::kEos : vocab - 1);
  PPO_ASSERT(eos_ < vocab, "config eos_token_id = ", eos_, " is outside the policy's vocabulary [0,", vocab, ")");
  stop_ids_ = {eos_};
  for (int64_t id : cfg_.stop_token_ids) {
    PPO_ASSERT(id < vocab, "config stop_token_ids: ", id, " is outside the policy's vocabulary [0,", vocab, ")");
    if (id != eos_) stop_ids_.push_back(int32_t(id));
  }
  PPO_ASSERT(int(stop_ids_.size()) <= Backend::kMaxMaskedTokens, "config stop_token_ids: ", stop_ids_.size(),
             " stop tokens with the EOS; at most ", Backend::kMaxMaskedTokens);

  // the plan first (one rank's): a device too small stops here, before any work
  const ProcessGroup group = ProcessGroup::of(opt_.ranks);
  PPO_ASSERT(opt_.trace_dir.empty() || group.size == 1, "trace_dir: the trace is written by a one-rank run");
  const RunShape shape = run_shape(cfg_, group.size);
  use_local_device(group, device);
  ArenaPlan plan = ArenaPlan::make(run_regions(cfg_, precision, scoring, group.size));
  const size_t capacity = opt_.device_memory > 0 ? opt_.device_memory : device_capacity(device);
  if (opt_.print_plan && group.rank == 0) {
    std::fputs(plan_report(cfg_, device, scoring, plan, capacity, group.size).c_str(), stdout);
    std::fflush(stdout);
  }
  backend_ = std::make_unique<Backend>(device, precision);
  comm_ = Communicator::create(group, *backend_);
  arena_ = std::make_unique<Arena>(std::move(plan), device, capacity);
  backend_->set_scratch(arena_->carver("run", "scratch"));
  for (const PlannedModel& m : models) {
    auto t = std::make_unique<Transformer>(*backend_, m.spec, shape, *arena_, m.owner, comm_.get());
    if (m.owner == "policy") policy_ = std::move(t);
    else if (m.owner == "reference") reference_ = std::move(t);
    else if (m.owner == "reward") reward_ = std::move(t);
    else value_ = std::move(t);
  }
  buffers_ = std::make_unique<ExperienceBuffers>(cfg_, precision, *arena_, group.size);

  // random weights, or Hugging Face checkpoints: reference = policy (TRL), value from the reward
  // model or the policy's trunk
  policy_->init_random(cfg_.seed);
  if (!cfg_.policy_checkpoint.empty())  // a policy_head value model keeps its fresh score head
    io::load_hf_checkpoint(cfg_.policy_checkpoint, *policy_,
                           cfg_.value_model == ValueModelKind::PolicyHead ? io::HeadMatch::TrunkOnly : io::HeadMatch::Exact);
  copy_shared(*reference_, *policy_);
  if (reward_) {
    reward_->init_random(cfg_.seed + 1);
    if (!cfg_.reward_checkpoint.empty()) io::load_hf_checkpoint(cfg_.reward_checkpoint, *reward_);
  }
  if (value_ && cfg_.value_init == ValueInit::Policy) {
    value_->init_random(cfg_.seed + 2);  // the fresh head
    copy_shared(*value_, *policy_);
  } else if (value_ && reward_) {
    copy_shared(*value_, *reward_);
  } else if (value_) {  // a callback scores: the value model is what the reward model would have been
    value_->init_random(cfg_.seed + 1);
    if (!cfg_.reward_checkpoint.empty()) io::load_hf_checkpoint(cfg_.reward_checkpoint, *value_);
  }
  if (!cfg_.resume.empty()) load_checkpoint(cfg_.resume);
  else if (cfg_.save_every > 0) io::check_no_checkpoints(cfg_.output_dir + "/checkpoints", "PpoTrainer");
}

PpoTrainer::~PpoTrainer() = default;

// ---- weights ----------------------------------------------------------------------------------------

void PpoTrainer::refuse_after_resume(const char* what) const {
  PPO_ASSERT(!resumed_, "PpoTrainer::", what,
             ": the trainer resumed from a checkpoint; loading weights now would overwrite the resumed run's");
}

void PpoTrainer::load_policy_weights(const HostWeights& w) {
  refuse_after_resume("load_policy_weights");
  write_weights(*policy_, w);
  write_weights(*reference_, w);
  if (value_ && cfg_.value_init == ValueInit::Policy)
    for (const auto& [name, values] : w)
      if (name != "lm_head.weight") value_->set_parameter(name, values);
}

Transformer* PpoTrainer::critic() {
  if (value_) return value_.get();
  return cfg_.value_model == ValueModelKind::PolicyHead ? policy_.get() : nullptr;
}

Transformer& PpoTrainer::value_model() {
  PPO_ASSERT(critic(), "PpoTrainer: no value model: advantage_estimator ", to_string(cfg_.advantage_estimator),
             " is critic-free");
  return *critic();
}

bool PpoTrainer::is_stop(int32_t id) const { return is_stop_token(stop_ids_, id); }

Transformer& PpoTrainer::reward_model() {
  PPO_ASSERT(reward_, "PpoTrainer: no reward model: a reward callback scores this run");
  return *reward_;
}

void PpoTrainer::load_reward_weights(const HostWeights& w) {
  refuse_after_resume("load_reward_weights");
  if (reward_) write_weights(*reward_, w);
  if (value_ && cfg_.value_init == ValueInit::Reward) write_weights(*value_, w);
}

void PpoTrainer::load_reference_weights(const HostWeights& w) {
  refuse_after_resume("load_reference_weights");
  write_weights(*reference_, w);
}

void PpoTrainer::load_value_weights(const HostWeights& w) {
  refuse_after_resume("load_value_weights");
  write_weights(value_model(), w);
}

// ---- checkpoints ------------------------------------------------------------------------------------

std::map<std::string, Transformer*> PpoTrainer::checkpoint_models() {
  std::map<std::string, Transformer*> m{{"policy", policy_.get()}, {"reference", reference_.get()}};
  if (reward_) m["reward"] = reward_.get();
  if (value_) m["value"] = value_.get();
  return m;
}

nlohmann::json PpoTrainer::run_shapes() const {
  nlohmann::json models = nlohmann::json::object();
  for (const PlannedModel& m : ppo_models(cfg_, "config", reward_ ? Scoring::RewardModel : Scoring::Callback))
    models[m.owner] = m.spec.config.to_json();
  return {{"models", models},
          {"value_model", to_string(cfg_.value_model)},
          {"advantage_estimator", to_string(cfg_.advantage_estimator)},
          {"samples_per_prompt", cfg_.samples_per_prompt},
          {"precision", backend_->precision() == Precision::BF16 ? "bf16" : "f32"},
          {"rollout_batch_size", cfg_.rollout_batch_size},
          {"prompt_length", cfg_.prompt_length},
          {"response_length", cfg_.response_length},
          {"seed", cfg_.seed},
          {"prompt_set_size", prompts_.size()}};
}

void PpoTrainer::save_checkpoint(const std::string& run_dir) {
  backend_->synchronize();
  nlohmann::json state = run_state_json(progress_, "next_prompt", prompts_.size(), run_shapes());
  state["kl_controller"] = kl_.state();
  state["score_moments"] = score_moments_.state();
  io::save_checkpoint(run_dir, progress_.steps_done, checkpoint_models(), state);
}

void PpoTrainer::load_checkpoint(const std::string& path) {
  const std::string dir = io::checkpoint_step_dir(path), where = dir + "/state.json";
  // the state first (no models): a run of other shapes stops here, naming the field
  const nlohmann::json state = io::load_checkpoint(dir, {});
  const RunProgress progress = read_run_state(state, "next_prompt", run_shapes(), where,
                                              {{"advantage_estimator", "gae"}, {"samples_per_prompt", 1}});
  kl_.load_state(io::read_object(state, where, "kl_controller", io::Presence::Required), where + ": kl_controller");
  if (io::has_field(state, "score_moments"))
    score_moments_.load_state(io::read_object(state, where, "score_moments", io::Presence::Required),
                              where + ": score_moments");
  io::load_checkpoint(dir, checkpoint_models());
  progress_ = progress;
  if (comm_->is_root())
    io::rewind_latest(cfg_.output_dir + "/checkpoints", dir);  // the saves to come may redo later steps
  resumed_ = true;
}

}  // namespace ppo
