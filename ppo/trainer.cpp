#include "ppo/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include "engine/device_memory.h"
#include "engine/error.h"
#include "engine/philox.h"
#include "io/checkpoint.h"
#include "io/hf_checkpoint.h"
#include "io/jsonl.h"
#include "io/tokenizer.h"
#include "models/plan.h"
#include "ppo/demo_task.h"
#include "ppo/experience.h"
#include "ppo/generate.h"
#include "ppo/trace.h"
#include "ppo/update.h"

namespace ppo {

namespace {

constexpr uint64_t kPromptStream = uint64_t(1) << 41;  // Philox streams of the per-pass prompt order

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Field-by-field comparison of a checkpoint's shapes with this run's; `field` is the dotted path.
void check_same_shapes(const nlohmann::json& saved, const nlohmann::json& ours, const std::string& field,
                       const std::string& where) {
  if (saved.is_object() && ours.is_object()) {
    for (const auto& [key, value] : saved.items()) {
      const std::string name = field.empty() ? key : field + "." + key;
      PPO_ASSERT(ours.contains(key), where, ": field '", name, "' of the checkpoint is not in this run's config");
      check_same_shapes(value, ours[key], name, where);
    }
    for (const auto& [key, value] : ours.items())
      PPO_ASSERT(saved.contains(key), where, ": field '", field.empty() ? key : field + "." + key,
                 "' of this run's config is not in the checkpoint");
    return;
  }
  PPO_ASSERT(saved == ours, where, ": cannot resume: field '", field, "' is ", saved.dump(),
             " in the checkpoint but ", ours.dump(), " in this run's config");
}

}  // namespace

// ---- prompts ----------------------------------------------------------------------------------------

PromptSource PromptSource::demo_task(uint64_t seed) {
  PromptSource s;
  s.demo_ = true;
  s.seed_ = seed;
  s.decode_ = [](const std::vector<int32_t>& ids) { return DemoTask::decode(ids); };
  return s;
}

PromptSource PromptSource::token_ids(std::vector<std::vector<int32_t>> prompts,
                                     std::function<std::string(const std::vector<int32_t>&)> decode) {
  PPO_ASSERT(!prompts.empty(), "prompt source: the prompt set is empty");
  PromptSource s;
  s.prompts_ = std::move(prompts);
  s.decode_ = std::move(decode);
  return s;
}

PromptSource PromptSource::jsonl(const std::string& prompts_path, const std::string& tokenizer_path) {
  auto tokenizer = std::make_shared<io::Tokenizer>(io::Tokenizer::load(tokenizer_path));
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& text : io::load_prompts(prompts_path)) ids.push_back(tokenizer->encode(text));
  for (size_t i = 0; i < ids.size(); ++i)
    PPO_ASSERT(!ids[i].empty(), prompts_path, ": prompt ", i, " encodes to no tokens");
  return token_ids(std::move(ids), [tokenizer](const std::vector<int32_t>& v) { return tokenizer->decode(v); });
}

std::vector<int32_t> PromptSource::prompt(uint64_t index) const {
  if (demo_) return DemoTask(seed_).prompt(index);
  const uint64_t n = prompts_.size(), pass = index / n;
  // a Philox permutation per pass; recomputed per call (prompt sets are small next to a step's work)
  const std::vector<int32_t> order = philox_permutation(int64_t(n), seed_, kPromptStream + pass);
  return prompts_[size_t(order[size_t(index % n)])];
}

std::string PromptSource::decode(const std::vector<int32_t>& ids) const { return decode_ ? decode_(ids) : std::string(); }

void PromptSource::validate(int64_t prompt_length, int64_t vocab_size) const {
  if (demo_) {
    PPO_ASSERT(prompt_length >= DemoTask::max_prompt_length(), "demo task: prompt_length = ", prompt_length,
               " is shorter than its longest prompt (", DemoTask::max_prompt_length(), " tokens)");
    PPO_ASSERT(vocab_size >= DemoTask::vocab_size(), "demo task: the policy's vocab_size ", vocab_size,
               " is smaller than the task's ", DemoTask::vocab_size());
    return;
  }
  for (size_t i = 0; i < prompts_.size(); ++i) {
    const std::vector<int32_t>& p = prompts_[i];
    PPO_ASSERT(!p.empty(), "prompt ", i, " is empty");
    PPO_ASSERT(int64_t(p.size()) <= prompt_length, "prompt ", i, " has ", p.size(), " tokens, more than prompt_length = ",
               prompt_length);
    for (size_t k = 0; k < p.size(); ++k)
      PPO_ASSERT(p[k] >= 0 && p[k] < vocab_size, "prompt ", i, ": token id ", p[k], " at index ", k,
                 " is outside the vocabulary [0,", vocab_size, ")");
  }
}

// ---- construction -----------------------------------------------------------------------------------

std::vector<RegionSpec> trainer_regions(const PpoConfig& cfg, Precision precision, Scoring scoring) {
  std::vector<RegionSpec> r = ppo_regions(ppo_models(cfg, "config", scoring), run_shape(cfg), precision);
  r.push_back(ExperienceBuffers::region(cfg, precision));
  return r;
}

namespace {

DeviceKind pick_device(DeviceChoice c) {
  if (c == DeviceChoice::CPU) return DeviceKind::CPU;
  if (c == DeviceChoice::CUDA) {
    PPO_ASSERT(cuda_compiled(), "device = cuda, but this build has no CUDA backend");
    PPO_ASSERT(cuda_device_count() > 0, "device = cuda, but no GPU answers");
    return DeviceKind::CUDA;
  }
  return cuda_device_count() > 0 ? DeviceKind::CUDA : DeviceKind::CPU;
}

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
  const DeviceKind device = pick_device(cfg_.device);
  const Precision precision = device == DeviceKind::CUDA ? Precision::BF16 : Precision::F32;
  const Scoring scoring = opt_.reward ? Scoring::Callback : Scoring::RewardModel;
  const std::vector<PlannedModel> models = ppo_models(cfg_, "config", scoring);
  const RunShape shape = run_shape(cfg_);
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

  // the plan first: a device too small stops here, before any work
  ArenaPlan plan = ArenaPlan::make(trainer_regions(cfg_, precision, scoring));
  size_t capacity = opt_.device_memory;
  if (capacity == 0) capacity = device == DeviceKind::CUDA ? cuda_free_bytes() : std::numeric_limits<size_t>::max();
  if (opt_.print_plan) {
    std::printf("ppo: %s (%s), rollout %lld x (%lld + %lld) tokens, micro-batch %lld\n", device_name(device),
                device == DeviceKind::CUDA ? "bf16, f32 master/grads/AdamW" : "f32", (long long)shape.rollout_batch,
                (long long)shape.prompt_len, (long long)shape.response_len, (long long)shape.micro_batch);
    std::fputs(plan.table(capacity == std::numeric_limits<size_t>::max() ? std::nullopt : std::optional<size_t>(capacity)).c_str(),
               stdout);
    std::fflush(stdout);
  }
  backend_ = std::make_unique<Backend>(device, precision);
  arena_ = std::make_unique<Arena>(std::move(plan), device, capacity);
  backend_->set_scratch(arena_->carver("run", "scratch"));
  for (const PlannedModel& m : models) {
    auto t = std::make_unique<Transformer>(*backend_, m.spec, shape, *arena_, m.owner);
    if (m.owner == "policy") policy_ = std::move(t);
    else if (m.owner == "reference") reference_ = std::move(t);
    else if (m.owner == "reward") reward_ = std::move(t);
    else value_ = std::move(t);
  }
  buffers_ = std::make_unique<ExperienceBuffers>(cfg_, precision, *arena_);

  // random weights, or Hugging Face checkpoints: reference = policy (TRL), value from the reward
  // model or the policy's trunk
  policy_->init_random(cfg_.seed);
  if (!cfg_.policy_checkpoint.empty())  // a policy_head value model keeps its fresh score head
    io::load_hf_checkpoint(cfg_.policy_checkpoint, *policy_, value_ ? io::HeadMatch::Exact : io::HeadMatch::TrunkOnly);
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
          {"precision", backend_->precision() == Precision::BF16 ? "bf16" : "f32"},
          {"rollout_batch_size", cfg_.rollout_batch_size},
          {"prompt_length", cfg_.prompt_length},
          {"response_length", cfg_.response_length},
          {"seed", cfg_.seed},
          {"prompt_set_size", prompts_.size()}};
}

void PpoTrainer::save_checkpoint(const std::string& run_dir) {
  backend_->synchronize();
  nlohmann::json data = {{"next_prompt", next_prompt_}};
  if (prompts_.size() > 0) {
    data["pass"] = next_prompt_ / uint64_t(prompts_.size());
    data["index_in_pass"] = next_prompt_ % uint64_t(prompts_.size());
  }
  const nlohmann::json state = {{"steps_done", step_},
                                {"optimizer_steps_done", optimizer_step_},
                                {"data", data},
                                {"kl_controller", kl_.state()},
                                {"score_moments", score_moments_.state()},
                                {"shapes", run_shapes()}};
  io::save_checkpoint(run_dir, step_, checkpoint_models(), state);
}

void PpoTrainer::load_checkpoint(const std::string& path) {
  const std::string dir = io::checkpoint_step_dir(path), where = dir + "/state.json";
  // the state first (no models): a run of other shapes stops here, naming the field
  const nlohmann::json state = io::load_checkpoint(dir, {});
  for (const char* key : {"steps_done", "optimizer_steps_done", "data", "kl_controller", "shapes"})
    PPO_ASSERT(state.contains(key), where, ": missing '", key, "'");
  check_same_shapes(state["shapes"], run_shapes(), "", where);
  const nlohmann::json& data = state["data"];
  PPO_ASSERT(data.contains("next_prompt") && data["next_prompt"].is_number_unsigned(), where,
             ": data.next_prompt missing or not a non-negative integer");
  PPO_ASSERT(state["steps_done"].is_number_integer() && state["optimizer_steps_done"].is_number_integer(), where,
             ": steps_done / optimizer_steps_done must be integers");
  io::load_checkpoint(dir, checkpoint_models());
  step_ = state["steps_done"].get<int64_t>();
  optimizer_step_ = state["optimizer_steps_done"].get<int64_t>();
  next_prompt_ = data["next_prompt"].get<uint64_t>();
  kl_.load_state(state["kl_controller"]);
  if (state.contains("score_moments")) score_moments_.load_state(state["score_moments"], where);
  io::rewind_latest(cfg_.output_dir + "/checkpoints", dir);  // the saves to come may redo later steps
  resumed_ = true;
}

// ---- the step ---------------------------------------------------------------------------------------

std::vector<std::vector<int32_t>> PpoTrainer::next_prompts() {
  std::vector<std::vector<int32_t>> p;
  for (int64_t b = 0; b < cfg_.rollout_batch_size; ++b) p.push_back(prompts_.prompt(next_prompt_++));
  return p;
}

Experience PpoTrainer::make_experience(const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<std::vector<int32_t>>* responses) {
  Backend& be = *backend_;
  PPO_ASSERT(int64_t(prompts.size()) <= cfg_.rollout_batch_size, "make_experience: ", prompts.size(),
             " prompts exceed rollout_batch_size = ", cfg_.rollout_batch_size);
  be.synchronize();
  auto start = Clock::now();
  SampledResponses g;
  if (responses) {
    g.responses = *responses;
  } else {
    const uint64_t stream = uint64_t(step_ * cfg_.response_length);
    g = generate(be, *policy_, buffers_->gen, prompts, eos_,
                 SamplingSettings::from_config(cfg_, stop_ids_, stream, opt_.fixed_response_length));
  }
  Experience exp = experience_of(prompts, g, cfg_.prompt_length, cfg_.response_length, stop_ids_,
                                 policy_->config().vocab_size);
  be.synchronize();
  times_ = PhaseTimes{};
  times_.sampling = seconds_since(start);

  ScoringModels sm{policy_.get(), reference_.get(), opt_.reward ? nullptr : reward_.get(),
                   value_ ? value_.get() : policy_.get()};
  score_experience(be, cfg_, sm, *buffers_, exp, &times_.old_logp, &times_.reference, &times_.reward, &times_.value);
  if (opt_.reward) {
    start = Clock::now();
    exp.scores.assign(size_t(exp.B), 0.0f);
    for (int64_t b = 0; b < exp.B; ++b) {
      const std::vector<int32_t> r = exp.response(b);
      exp.scores[size_t(b)] = float(opt_.reward(exp.prompts[size_t(b)], r, prompts_.decode(r)));
    }
    times_.reward = seconds_since(start);
  }
  be.synchronize();
  start = Clock::now();
  finish_experience(be, cfg_, kl_, score_moments_, *buffers_, exp);
  times_.advantages = seconds_since(start);
  return exp;
}

MetricsRow PpoTrainer::step() {
  Backend& be = *backend_;
  be.synchronize();
  const auto step_start = Clock::now();
  Experience exp = make_experience(next_prompts());
  const AdvantageStats& a = exp.stats;

  UpdateStats u;
  UpdateTrace trace;
  trace.all_epochs = true;
  const bool tracing = !opt_.trace_dir.empty() && step_ == 0;
  be.synchronize();
  auto start = Clock::now();
  if (a.finite)
    u = ppo_update(be, cfg_, {policy_.get(), value_.get()}, *buffers_, exp, step_, exp.kl_coef, optimizer_step_,
                   tracing ? &trace : nullptr);
  be.synchronize();
  times_.train = seconds_since(start);
  times_.total = seconds_since(step_start);
  if (tracing) write_trace(opt_.trace_dir, cfg_, eos_, exp, trace);
  ++step_;

  MetricsRow row;
  const double B = double(exp.B), tokens = u.tokens > 0 ? u.tokens : NAN;
  double entropy = 0;
  for (float e : exp.entropy) entropy += e;
  row.set(metric::kStep, double(step_));
  row.set(metric::kEpisode, double(step_) * B);
  row.set(metric::kKl, a.kl);
  row.set(metric::kKlCoef, exp.kl_coef);
  row.set(metric::kEntropy, entropy / B);
  row.set(metric::kNonScoreReward, a.non_score_reward);
  row.set(metric::kRlhfReward, a.rlhf_reward);
  row.set(metric::kScores, a.score);
  if (prompts_.is_demo_task()) {
    double gold = 0;
    for (int64_t b = 0; b < exp.B; ++b) gold += DemoTask::gold_reward(exp.prompts[size_t(b)], exp.response(b));
    row.set(metric::kGoldScores, gold / B);
  }
  row.set(metric::kPolicyClipfrac, u.clipped / tokens);
  row.set(metric::kApproxKl, u.approx_kl / tokens);
  row.set(metric::kRatio, u.ratio / tokens);
  row.set(metric::kPolicyEntropy, u.entropy / tokens);
  row.set(metric::kPolicyLoss, u.policy_loss / tokens);
  row.set(metric::kValueLoss, u.value_loss / tokens);
  row.set(metric::kValueClipfrac, u.value_clipped / tokens);
  row.set(metric::kExplainedVariance, a.explained_variance);
  row.set(metric::kNumEos, a.num_eos);
  row.set(metric::kResponseLength, a.response_length);
  row.set("objective/advantage_mean", a.advantage_mean);
  row.set("objective/advantage_std", a.advantage_std);
  row.set("val/return_mean", a.return_mean);
  row.set("val/return_std", a.return_std);
  row.set("policy/grad_norm", u.policy_grad_norm);
  row.set("val/grad_norm", u.value_grad_norm);
  const double factor = cfg_.lr_factor(std::max<int64_t>(0, optimizer_step_ - 1));
  row.set(metric::kLr, cfg_.learning_rate * factor);
  row.set(metric::kValueLr, cfg_.value_learning_rate * factor);
  row.set(metric::kRolloutSeconds, times_.sampling);
  row.set(metric::kScoreSeconds, times_.old_logp + times_.reference + times_.reward + times_.value + times_.advantages);
  row.set(metric::kTrainSeconds, times_.train);
  row.set(metric::kStepSeconds, times_.total);
  row.set("time/old_logp_s", times_.old_logp);
  row.set("time/reference_s", times_.reference);
  row.set("time/reward_s", times_.reward);
  row.set("time/value_s", times_.value);
  row.set("time/advantages_s", times_.advantages);
  row.set(metric::kSkipped, (!a.finite || u.skipped) ? 1.0 : 0.0);
  metrics_.push_back(row);
  if (cfg_.save_every > 0 && step_ % cfg_.save_every == 0) save_checkpoint(cfg_.output_dir + "/checkpoints");
  return row;
}

}  // namespace ppo
