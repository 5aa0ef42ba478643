#include "ppo/demo_pipeline.h"

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <tuple>
#include "engine/device_memory.h"
#include "engine/error.h"
#include "io/json_fields.h"
#include "io/safetensors.h"
#include "ppo/dpo.h"
#include "ppo/plot.h"
#include "ppo/train_loop.h"
#include "ppo/trainer.h"

namespace ppo {

namespace {

using json = nlohmann::json;

// Calls f(key, field) for every setting, in declaration order: the one list of keys.
template <class Settings, class F>
void visit_fields(Settings& s, F&& f) {
  f("demo.sft_examples", s.sft_examples);
  f("demo.rm_pairs", s.rm_pairs);
  f("demo.rm_eval_pairs", s.rm_eval_pairs);
  f("demo.label_noise", s.label_noise);
  f("demo.rm_from_sft", s.rm_from_sft);
  f("demo.eval_prompts", s.eval_prompts);
  f("sft.epochs", s.sft.epochs);
  f("sft.batch_size", s.sft.batch_size);
  f("sft.micro_batch_size", s.sft.micro_batch_size);
  f("sft.learning_rate", s.sft.learning_rate);
  f("sft.warmup_steps", s.sft.warmup_steps);
  f("sft.weight_decay", s.sft.weight_decay);
  f("sft.max_grad_norm", s.sft.max_grad_norm);
  f("rm.epochs", s.rm.epochs);
  f("rm.batch_size", s.rm.batch_size);
  f("rm.micro_batch_size", s.rm.micro_batch_size);
  f("rm.learning_rate", s.rm.learning_rate);
  f("rm.weight_decay", s.rm.weight_decay);
  f("rm.max_grad_norm", s.rm.max_grad_norm);
}

// Every integer setting in its range (examples and pairs: at most 2^24), the label noise in [0, 0.5].
void check(DemoSettings& s) {
  constexpr int64_t kMaxExamples = int64_t(1) << 24;
  const std::tuple<const char*, int64_t, int64_t, int64_t> ranges[] = {
      {"demo.sft_examples", s.sft_examples, 1, kMaxExamples},   {"demo.rm_pairs", s.rm_pairs, 1, kMaxExamples},
      {"demo.rm_eval_pairs", s.rm_eval_pairs, 1, kMaxExamples}, {"demo.eval_prompts", s.eval_prompts, 1, kMaxExamples},
      {"sft.epochs", s.sft.epochs, 1, kMaxEpochs},              {"sft.batch_size", s.sft.batch_size, 1, kMaxRolloutBatch},
      {"sft.micro_batch_size", s.sft.micro_batch_size, 1, kMaxRolloutBatch},
      {"sft.warmup_steps", s.sft.warmup_steps, 0, kMaxOptimizerSteps},
      {"rm.epochs", s.rm.epochs, 1, kMaxEpochs},                {"rm.batch_size", s.rm.batch_size, 1, kMaxRolloutBatch},
      {"rm.micro_batch_size", s.rm.micro_batch_size, 1, kMaxRolloutBatch}};
  for (const auto& [key, v, lo, hi] : ranges) check_setting_range(key, v, lo, hi);
  PPO_ASSERT(s.label_noise >= 0 && s.label_noise <= 0.5, "demo.label_noise = ", s.label_noise, ": must lie in [0, 0.5]");
}

}  // namespace

DemoSettings::DemoSettings() {
  sft.epochs = 6;
  sft.batch_size = 32;
  sft.micro_batch_size = 32;
  sft.learning_rate = 3e-3f;
  rm.epochs = 4;
  rm.batch_size = 32;
  rm.micro_batch_size = 16;
  rm.learning_rate = 1e-3f;
}

std::vector<std::string> DemoSettings::keys() {
  std::vector<std::string> k;
  DemoSettings s;
  visit_fields(s, [&](const char* name, auto&) { k.push_back(name); });
  return k;
}

void DemoSettings::set(const std::string& key, const std::string& value) {
  bool found = false;
  visit_fields(*this, [&](const char* name, auto& field) {
    if (key != name) return;
    const std::string where = "--set " + key + "=" + value;
    setting_from_json(where, io::parse_json_or_string(value, where), field);
    found = true;
  });
  PPO_ASSERT(found, "--set ", key, ": unknown key; did you mean '", nearest(key, keys()), "'?");
  check(*this);
}

void DemoSettings::update_from_json(const json& j, const std::string& source) {
  for (const char* section : {"sft", "rm", "demo"}) {
    if (!j.contains(section)) continue;
    PPO_ASSERT(j.at(section).is_object(), source, ": \"", section, "\" must be an object");
    for (const auto& item : j.at(section).items()) {  // no structured binding: lambdas capture it only from C++20
      const std::string key = std::string(section) + "." + item.key();
      const json& value = item.value();
      bool found = false;
      visit_fields(*this, [&](const char* name, auto& field) {
        if (key != name) return;
        setting_from_json(source + ": " + key, value, field);
        found = true;
      });
      PPO_ASSERT(found, source, ": unknown key '", key, "'; did you mean '", nearest(key, keys()), "'?");
    }
  }
  check(*this);
}

json DemoSettings::to_json() const {
  json j = json::object();
  DemoSettings copy = *this;
  visit_fields(copy, [&](const char* name, auto& field) {
    const std::string key = name;
    const size_t dot = key.find('.');
    j[key.substr(0, dot)][key.substr(dot + 1)] = field;
  });
  return j;
}

json demo_policy_config() {
  return {{"arch", "gpt2"}, {"n_layer", 2}, {"n_head", 4}, {"d_model", 64}, {"d_ff", 256},
          {"vocab_size", DemoTask::vocab_size()}, {"max_seq_len", 16}};
}

PpoConfig demo_ppo_config() {
  PpoConfig c;
  c.output_dir = "runs/demo";
  c.policy = demo_policy_config();
  c.prompt_length = DemoTask::max_prompt_length();  // 7
  c.response_length = 8;
  c.eos_token_id = DemoTask::kEos;
  c.total_steps = 60;
  c.rollout_batch_size = 64;
  c.micro_batch_size = 32;
  c.ppo_epochs = 4;
  c.num_minibatches = 2;
  c.temperature = 1.0f;
  c.learning_rate = 3e-4f;
  c.value_learning_rate = 1e-3f;
  c.lr_schedule = LrSchedule::Constant;
  c.kl_coef = 0.02f;
  c.reward_clip = 10.0f;
  return c;
}

HeldOut evaluate_heldout(SingleModel& policy, const DemoTask& task, uint64_t first, int64_t count,
                         const SamplingSettings& sampling, SingleModel* reward, const HostWeights* reference) {
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t i = 0; i < count; ++i) prompts.push_back(task.prompt(first + uint64_t(i)));
  const std::vector<std::vector<int32_t>> responses = policy.generate(prompts, sampling, DemoTask::kPad).responses;
  HeldOut h;
  for (size_t i = 0; i < prompts.size(); ++i) h.gold += DemoTask::gold_reward(prompts[i], responses[i]) / double(count);
  if (reward) {
    h.proxy = 0;
    for (double score : score_responses(*reward, prompts, responses, DemoTask::kPad)) h.proxy += score / double(count);
  }
  if (reference) {  // log pi - log pi_ref of each sample, the reference's weights swapped in and out
    auto summed_logps = [&] {
      std::vector<double> out;
      const size_t micro = size_t(policy.shape().micro_batch);
      for (size_t b = 0; b < prompts.size(); b += micro) {
        const size_t e = std::min(prompts.size(), b + micro);
        const SequenceBatch rows = pack_tight({prompts.begin() + b, prompts.begin() + e},
                                              {responses.begin() + b, responses.begin() + e}, DemoTask::kPad);
        for (double lp : policy.response_logps(rows, 1.0f / sampling.temperature)) out.push_back(lp);
      }
      return out;
    };
    const std::vector<double> own = summed_logps();
    const HostWeights weights = read_weights(policy.model());
    write_weights(policy.model(), *reference, WeightCoverage::All);
    const std::vector<double> ref = summed_logps();
    write_weights(policy.model(), weights, WeightCoverage::All);
    h.kl = 0;
    for (size_t i = 0; i < own.size(); ++i) h.kl += (own[i] - ref[i]) / double(count);
  }
  return h;
}

DemoRunConfig load_demo_config(const std::string& path, const std::vector<std::string>& overrides) {
  DemoRunConfig c{demo_ppo_config(), DemoSettings()};
  json j = json::object();
  if (!path.empty()) {
    j = io::read_json_file(path, io::JsonComments::Allowed);
    PPO_ASSERT(j.is_object(), "config file '", path, "': expected a JSON object at the top level");
  }
  apply_named_algorithm(c.ppo, j, overrides);
  if (!path.empty()) {
    c.settings.update_from_json(j, "config file '" + path + "'");
    for (const char* section : {"sft", "rm", "demo"}) j.erase(section);
    c.ppo.update_from_json(j, "config file '" + path + "'");
  }
  std::vector<std::string> all_keys = PpoConfig::keys();
  for (const std::string& k : DemoSettings::keys()) all_keys.push_back(k);
  for (const std::string& o : overrides) {
    const size_t eq = o.find('=');
    PPO_ASSERT(eq != std::string::npos && eq > 0, "--set ", o, ": expected key=value");
    const std::string key = o.substr(0, eq), prefix = key.substr(0, key.find('.'));
    if (prefix == "sft" || prefix == "rm" || prefix == "demo") {
      c.settings.set(key, o.substr(eq + 1));
      continue;
    }
    const std::vector<std::string> ppo_keys = PpoConfig::keys();
    const bool known = prefix == "policy" || prefix == "reward" ||
                       std::find(ppo_keys.begin(), ppo_keys.end(), key) != ppo_keys.end();
    PPO_ASSERT(known, "--set ", o, ": unknown key '", key, "'; did you mean '", nearest(key, all_keys), "'?");
    c.ppo.apply_override(o);
  }
  c.ppo.derive();
  return c;
}

std::vector<std::string> demo_plot_metrics(Algorithm algorithm) {
  if (algorithm == Algorithm::Dpo)
    return {metric::kGoldScores, metric::kDpoLoss, metric::kRewardsMargins, metric::kRewardsAccuracies,
            metric::kLogpsChosen};
  return {metric::kScores, metric::kGoldScores, metric::kKl, metric::kEntropy, metric::kPolicyClipfrac};
}

namespace {

// The weights as f32 CPU views with the model's shapes, for the safetensors writer.
void save_policy(const std::string& dir, const HostWeights& weights, const std::map<std::string, std::vector<int64_t>>& shapes,
                 const ModelConfig& config) {
  std::vector<io::NamedTensor> tensors;
  for (const auto& [name, values] : weights) {
    Tensor t;
    t.data = const_cast<float*>(values.data());
    t.dtype = DType::F32;
    t.device = DeviceKind::CPU;
    const std::vector<int64_t>& shape = shapes.at(name);
    t.ndim = int(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
    tensors.push_back({name, t});
  }
  io::write_safetensors(dir + "/policy.safetensors", tensors, {{"format", "pt"}, {"arch", arch_name(config.arch)}});
  std::ofstream(dir + "/policy_config.json") << config.to_json().dump(2) << "\n";
}

// The numbers of the stages before PPO, kept in output_dir/demo_stages.json so that a resumed run
// (which skips those stages) still reports them and compares with the SFT policy.
constexpr const char* kStagesFile = "demo_stages.json";

// The numbers kept, by key.
std::vector<std::pair<const char*, double*>> stage_fields(DemoResult& r) {
  return {{"random_gold", &r.random_gold}, {"sft_gold", &r.sft_gold}, {"sft_loss", &r.sft_loss},
          {"rm_accuracy", &r.rm_accuracy}, {"rm_gold_accuracy", &r.rm_gold_accuracy}};
}

void save_stages(const std::string& dir, DemoResult& r) {
  json j = json::object();
  for (auto [key, field] : stage_fields(r)) j[key] = *field;
  std::ofstream(dir + "/" + kStagesFile) << j.dump(2) << "\n";
}

void load_stages(const std::string& dir, DemoResult& r) {
  const std::string path = dir + "/" + kStagesFile;
  PPO_ASSERT(std::filesystem::exists(path), "resume: '", path,
             "' is missing; resume a demo run with the output_dir it was started with");
  const json j = io::read_json_file(path);
  for (auto [key, field] : stage_fields(r))
    *field = io::read_number(j, "resume: '" + path + "'", key, {-DBL_MAX, DBL_MAX}, 0, io::Presence::Required);
}

// The run's numbers, for bench/compare_algorithms.py (NaN as null).
void save_result(const PpoConfig& config, const DemoResult& r) {
  auto number = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  const json j = {{"algorithm", to_string(config.algorithm)}, {"seed", config.seed},
                  {"sft_gold", number(r.sft_gold)},       {"final_gold", number(r.final_gold)},
                  {"sft_proxy", number(r.sft_proxy)},     {"final_proxy", number(r.final_proxy)},
                  {"final_kl", number(r.final_kl)},       {"rm_gold_accuracy", number(r.rm_gold_accuracy)},
                  {"train_seconds", r.train_seconds},     {"train_cpu_seconds", r.train_cpu_seconds},
                  {"seconds", r.seconds},
                  {"arena_bytes", r.arena_bytes}};
  std::ofstream(config.output_dir + "/result.json") << j.dump(2) << "\n";
}

// Stage 3's outcome.
struct Stage {
  std::vector<MetricsRow> rows;
  HostWeights policy, reference;  // the final policy; the reference of the KL (empty: unknown)
  size_t arena_bytes = 0;
  double cpu_seconds = 0;  // of the steps (a shared machine's wall clock is noisy; one thread: this is the work)
};

double cpu_seconds_since(std::clock_t start) { return double(std::clock() - start) / CLOCKS_PER_SEC; }

// PPO, GRPO, RLOO or REINFORCE++ against the reward model: PpoTrainer (the checkpoint restored when
// config.resume is set).
Stage rl_stage(const PpoConfig& config, const HostWeights& sft_weights, const HostWeights& rm_weights, bool write,
               const LogLine& log) {
  TrainerOptions options;
  options.prompts = PromptSource::demo_task(config.seed);  // enables objective/gold_scores
  options.print_plan = false;
  PpoTrainer trainer(config, options);
  if (config.resume.empty()) {
    trainer.load_policy_weights(sft_weights);  // policy and reference
    trainer.load_reward_weights(rm_weights);   // reward model and (value_init = reward) value model
  }
  Stage s;
  const std::clock_t start = std::clock();
  s.rows = run_training_loop(trainer, write, log);
  s.cpu_seconds = cpu_seconds_since(start);
  s.policy = read_weights(trainer.policy());
  s.reference = read_weights(trainer.reference());
  s.arena_bytes = trainer.arena().plan().total_bytes;
  return s;
}

// DPO from the SFT policy on the reward model's training pairs. Each step's row also gets the gold
// reward of B fresh samples of the stream's next prompts (the PPO rows' objective/gold_scores), drawn
// with `eval` (the demo's generating copy of the policy), untimed.
Stage dpo_stage(const PpoConfig& config, const DemoSettings& settings, const DemoTask& task, DeviceKind device,
                const HostWeights& sft_weights, SingleModel& eval, bool write, const LogLine& log) {
  SingleModel model(device, dpo_policy_spec(config), dpo_shape(config), "policy");
  if (config.resume.empty()) write_weights(model.model(), sft_weights, WeightCoverage::All);
  const int64_t B = config.rollout_batch_size;
  double monitor_cpu_seconds = 0;
  auto gold_of_samples = [&](MetricsRow& row) {
    const std::clock_t start = std::clock();
    const uint64_t step = uint64_t(row.get(metric::kStep)) - 1;
    std::vector<std::vector<int32_t>> prompts;
    for (int64_t i = 0; i < B; ++i) prompts.push_back(task.prompt(step * uint64_t(B) + uint64_t(i)));
    write_weights(eval.model(), read_weights(model.model()), WeightCoverage::All);
    const SamplingSettings sampling =
        SamplingSettings::from_config(config, {DemoTask::kEos}, step * uint64_t(config.response_length), false);
    const std::vector<std::vector<int32_t>> responses = eval.generate(prompts, sampling, DemoTask::kPad).responses;
    double gold = 0;
    for (int64_t i = 0; i < B; ++i) gold += DemoTask::gold_reward(prompts[size_t(i)], responses[size_t(i)]) / double(B);
    row.set(metric::kGoldScores, gold);
    monitor_cpu_seconds += cpu_seconds_since(start);
  };
  DpoTrainer trainer(model, config,
                     demo_preference_examples(task, uint64_t(settings.sft_examples), settings.rm_pairs,
                                              settings.label_noise),
                     DemoTask::kPad, gold_of_samples);
  Stage s;
  const std::clock_t start = std::clock();
  s.rows = run_training_loop(trainer, write, log);
  s.cpu_seconds = cpu_seconds_since(start) - monitor_cpu_seconds;
  s.policy = read_weights(model.model());
  if (config.resume.empty()) s.reference = sft_weights;
  s.arena_bytes = model.plan().total_bytes;
  return s;
}

}  // namespace

DemoResult run_demo(const PpoConfig& config, const DemoSettings& settings, DemoFiles files,
                    const std::function<void(const std::string&)>& log) {
  const auto start = std::chrono::steady_clock::now();
  const int ranks = ProcessGroup::world().size;
  const bool root = ProcessGroup::world().rank == 0;  // data parallel: rank 0 reports and writes the files
  auto say = [&](const std::string& line) {
    if (log && root) log(line);
  };
  auto fmt = [](const char* format, auto... args) {
    char buf[512];
    std::snprintf(buf, sizeof buf, format, args...);
    return std::string(buf);
  };
  PPO_ASSERT(config.prompt_length >= DemoTask::max_prompt_length(), "demo: prompt_length = ", config.prompt_length,
             " must be at least ", DemoTask::max_prompt_length(), " (the longest demo prompt)");
  const DemoTask task(config.seed);
  DemoResult result;
  result.policy_config = ModelConfig::from_json(config.policy, "policy");
  PPO_ASSERT(result.policy_config.vocab_size == DemoTask::vocab_size(), "demo: policy.vocab_size = ",
             result.policy_config.vocab_size, " must be the demo vocabulary's ", DemoTask::vocab_size());
  const bool reward_given = !config.reward.is_object() || !config.reward.empty();
  const ModelConfig reward_config = reward_given ? ModelConfig::from_json(config.reward, "reward") : result.policy_config;
  const DeviceKind device = resolve_device(config.device);
  const int64_t P = config.prompt_length, R = config.response_length;
  SamplingSettings sampling;
  sampling.max_new_tokens = R;
  sampling.temperature = config.temperature;
  sampling.top_k = config.top_k;
  sampling.top_p = config.top_p;
  sampling.stop_token_ids = {DemoTask::kEos};
  sampling.seed = config.seed + 0x5eed;
  // the PPO run's plan first: a device too small stops here, before SFT and the reward model
  use_local_device(ProcessGroup::world(), device);
  check_fits(ArenaPlan::make(run_regions(config, precision_of(device), Scoring::RewardModel, ranks)), device,
             device_capacity(device));
  const bool write = files == DemoFiles::Write, write_here = write && root;
  if (write_here) std::filesystem::create_directories(config.output_dir);
  auto logger = [&](const char* name) {
    return write_here ? std::make_unique<MetricsLogger>(config.output_dir + "/" + name, LogMode::Truncate) : nullptr;
  };
  // The policy used for generation outside PPO: the held-out evaluations.
  SingleModel policy(device, {result.policy_config, Heads::LM, Training::Trained, Generation::KVCache},
                     {config.rollout_batch_size, P, R, settings.sft.micro_batch_size}, "policy");
  const bool resuming = !config.resume.empty();
  if (write) check_output_dir(config);
  HostWeights sft_weights, rm_weights;
  std::unique_ptr<SingleModel> rm;  // kept for the held-out proxy score (fresh runs)

  if (resuming) {
    load_stages(config.output_dir, result);
    say(fmt("resume: SFT and reward model done (SFT gold %.3f, reward model gold-order accuracy %.3f); %s from %s",
            result.sft_gold, result.rm_gold_accuracy, to_string(config.algorithm), config.resume.c_str()));
  } else {
    // ---- 1. SFT --------------------------------------------------------------------------------------
    policy.model().init_random(config.seed);
    result.random_gold = evaluate_heldout(policy, task, kDemoEvalFirst, settings.eval_prompts, sampling).gold;
    SftConfig sft = settings.sft;
    sft.seed = config.seed;
    sft.pad_token_id = DemoTask::kPad;
    SftTrainer sft_trainer(policy, sft);
    std::unique_ptr<MetricsLogger> sft_log = logger("sft_metrics.jsonl");
    const std::vector<MetricsRow> sft_rows = sft_trainer.train(demo_sft_examples(task, 0, settings.sft_examples), sft_log.get());
    result.sft_loss = sft_rows.back().get(metric::kSftLoss);
    result.sft_gold = evaluate_heldout(policy, task, kDemoEvalFirst, settings.eval_prompts, sampling).gold;
    sft_weights = read_weights(policy.model());
    say(fmt("sft: %lld steps, loss %.3f; gold reward on %lld held-out prompts: random init %.3f -> SFT %.3f",
            (long long)sft_rows.size(), result.sft_loss, (long long)settings.eval_prompts, result.random_gold,
            result.sft_gold));

    // ---- 2. reward model -----------------------------------------------------------------------------
    rm = std::make_unique<SingleModel>(device, ModelSpec{reward_config, Heads::Scalar, Training::Trained, Generation::None},
                                       RunShape{1, P, R, 2 * settings.rm.micro_batch_size}, "reward");
    rm->model().init_random(config.seed + 1);
    if (settings.rm_from_sft) {
      PPO_ASSERT(reward_given == false || reward_config.to_json() == result.policy_config.to_json(),
                 "demo.rm_from_sft needs the reward model's config to be the policy's");
      HostWeights trunk;
      for (const std::string& name : rm->model().parameter_names())
        if (sft_weights.count(name)) trunk[name] = sft_weights.at(name);
      write_weights(rm->model(), trunk, WeightCoverage::Some);
    }
    RewardTrainingConfig rmc = settings.rm;
    rmc.seed = config.seed;
    rmc.pad_token_id = DemoTask::kPad;
    RewardTrainer rm_trainer(*rm, rmc);
    const uint64_t first_pair = uint64_t(settings.sft_examples);
    std::unique_ptr<MetricsLogger> rm_log = logger("reward_metrics.jsonl");
    const std::vector<MetricsRow> rm_rows =
        rm_trainer.train(demo_preference_examples(task, first_pair, settings.rm_pairs, settings.label_noise), rm_log.get());
    const uint64_t eval_first = kDemoEvalFirst + uint64_t(settings.eval_prompts);
    result.rm_accuracy =
        rm_trainer.evaluate(demo_preference_examples(task, eval_first, settings.rm_eval_pairs, settings.label_noise)).accuracy;
    result.rm_gold_accuracy =
        rm_trainer.evaluate(demo_preference_examples(task, eval_first, settings.rm_eval_pairs, 0.0)).accuracy;
    rm_weights = read_weights(rm->model());
    say(fmt("reward model: %lld steps, loss %.3f; held-out accuracy %.3f (noisy labels), %.3f (gold order)",
            (long long)rm_rows.size(), rm_rows.back().get(metric::kRmLoss), result.rm_accuracy, result.rm_gold_accuracy));
    result.sft_proxy = evaluate_heldout(policy, task, kDemoEvalFirst, settings.eval_prompts, sampling, rm.get()).proxy;
    if (write_here) save_stages(config.output_dir, result);
  }

  // ---- 3. the algorithm ---------------------------------------------------------------------------
  const Stage stage = config.algorithm == Algorithm::Dpo
                          ? dpo_stage(config, settings, task, device, sft_weights, policy, write, log)
                          : rl_stage(config, sft_weights, rm_weights, write, log);
  result.rows = stage.rows;
  result.policy = stage.policy;
  result.arena_bytes = stage.arena_bytes;
  result.train_cpu_seconds = stage.cpu_seconds;
  for (const MetricsRow& row : result.rows) result.train_seconds += row.get(metric::kStepSeconds);
  write_weights(policy.model(), result.policy, WeightCoverage::All);
  const HeldOut final = evaluate_heldout(policy, task, kDemoEvalFirst, settings.eval_prompts, sampling, rm.get(),
                                         stage.reference.empty() ? nullptr : &stage.reference);
  result.final_gold = final.gold;
  result.final_proxy = final.proxy;
  result.final_kl = final.kl;
  say(fmt("gold reward on %lld held-out prompts: SFT policy %.3f -> after %s %.3f; reward-model score %.3f -> %.3f; "
          "KL to the SFT policy %.3f",
          (long long)settings.eval_prompts, result.sft_gold, to_string(config.algorithm), result.final_gold,
          result.sft_proxy, result.final_proxy, result.final_kl));
  if (write_here) {
    const std::string title = std::string("ppo train (demo task, ") + to_string(config.algorithm) +
                              (config.algorithm == Algorithm::Dpo
                                   ? "): gold reward of samples, loss, reward margin and accuracy, chosen log-prob"
                                   : "): proxy and gold reward, KL, entropy, clip fraction");
    write_svg(config.output_dir + "/metrics.svg", result.rows, demo_plot_metrics(config.algorithm), {title, 3, 320, 210});
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const std::string& name : policy.model().parameter_names()) {
      const Tensor p = policy.model().parameter(name);
      shapes[name] = std::vector<int64_t>(p.shape, p.shape + p.ndim);
    }
    save_policy(config.output_dir, result.policy, shapes, result.policy_config);
  }

  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (write_here) save_result(config, result);
  return result;
}

}  // namespace ppo
