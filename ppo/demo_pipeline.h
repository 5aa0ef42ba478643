// The self-contained RLHF pipeline of `ppo train` on the demo task (ppo/demo_task.h), no downloads:
//   1. SFT a tiny policy on DemoTask demonstrations (mediocre on purpose);
//   2. train a reward model on preference pairs labelled by the hidden gold reward, with label
//      noise (a proxy of the gold reward, as a learned reward model always is);
//   3. the algorithm (config.algorithm): PPO, GRPO, RLOO or REINFORCE++ (PpoTrainer) against that
//      reward model, logging the proxy reward (objective/scores) and the gold reward
//      (objective/gold_scores) every step; or DPO (DpoTrainer) on the same preference pairs, with
//      no reward model (the one of stage 2 only measures it), logging the gold reward of fresh
//      samples of each step's prompts.
// The SFT policy and the final policy are measured on held-out prompts with the same sampling, so
// the numbers compare: gold reward, the reward model's score (proxy) and KL(policy || SFT policy).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "ppo/config.h"
#include "ppo/demo_task.h"
#include "ppo/metrics.h"
#include "ppo/reward_training.h"
#include "ppo/sft.h"
#include "ppo/single_model.h"

namespace ppo {

// Settings of the stages before the algorithm and of the evaluation; `--set sft.key=value`,
// `--set rm.key=value`, `--set demo.key=value` and config-file sections "sft", "rm", "demo".
struct DemoSettings {
  int64_t sft_examples = 2048;       // demonstrations 0 .. sft_examples-1
  SftConfig sft;
  int64_t rm_pairs = 4096;           // preference pairs (indices after the demonstrations')
  int64_t rm_eval_pairs = 256;       // held-out pairs for the reward model's accuracy
  double label_noise = 0.1;          // preference labels flipped with this probability
  bool rm_from_sft = false;          // the reward model's trunk starts from the SFT policy (InstructGPT's
                                     // choice; on the demo a fresh init ranks held-out pairs better)
  RewardTrainingConfig rm;
  int64_t eval_prompts = 256;        // held-out prompts for the evaluation before and after the algorithm

  DemoSettings();
  // "sft.epochs", "rm.learning_rate", "demo.eval_prompts", ...
  static std::vector<std::string> keys();
  // `key` one of keys(); the value parses strictly for the key's type.
  void set(const std::string& key, const std::string& value);
  // Sections {"sft": {...}, "rm": {...}, "demo": {...}}; unknown keys are errors naming `source`.
  void update_from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
};

// The demo's PPO defaults: the tiny gpt2 policy (2 layers, d 64) on the demo vocabulary, P = 7,
// R = 8, and the tuned learning rates, batch sizes, KL coefficient and steps.
PpoConfig demo_ppo_config();
nlohmann::json demo_policy_config();

// Held-out prompt indices: far from the training data's.
inline constexpr uint64_t kDemoEvalFirst = uint64_t(1) << 40;

// What `policy` buys on held-out prompts [first, first + count), one sampled response each.
struct HeldOut {
  double gold = 0;    // mean gold reward
  double proxy = NAN;  // with a reward model: its mean score
  double kl = NAN;     // with reference weights: mean of sum_t log pi(y_t) - log pi_ref(y_t) over the samples
                       // y ~ pi, at the sampling temperature (k1: an unbiased estimate of KL(pi || pi_ref))
};
HeldOut evaluate_heldout(SingleModel& policy, const DemoTask& task, uint64_t first, int64_t count,
                         const SamplingSettings& sampling, SingleModel* reward = nullptr,
                         const HostWeights* reference = nullptr);

struct DemoResult {
  double random_gold = 0;     // the untrained policy, held-out prompts
  double sft_gold = 0;        // the SFT policy, held-out prompts
  double final_gold = 0;      // after the algorithm, held-out prompts
  double sft_proxy = NAN, final_proxy = NAN;  // the reward model's held-out score (fresh runs only)
  double final_kl = NAN;      // held-out KL(final policy || SFT policy) (NaN after a DPO resume)
  double sft_loss = 0;        // the last SFT step's loss
  double rm_accuracy = 0;     // held-out pairs, noisy labels
  double rm_gold_accuracy = 0;  // held-out pairs, against the gold ordering
  double seconds = 0;         // the whole pipeline
  double train_seconds = 0;   // the algorithm's steps (sum of time/step_s)
  double train_cpu_seconds = 0;  // the process's CPU time in them (the DPO demo's gold sampling left out;
                                 // the measure of work on a shared machine, one thread)
  size_t arena_bytes = 0;     // the algorithm's arena (PpoTrainer's, or DPO's policy alone)
  std::vector<MetricsRow> rows;  // the algorithm's metrics, a row per step
  HostWeights policy;         // the final policy
  ModelConfig policy_config;
};

// Defaults (demo_ppo_config(), DemoSettings()), then the JSON file when `path` is not empty (its
// sections "sft", "rm", "demo" go to the settings, the rest to the PPO config), then each --set
// key=value (keys "sft.*", "rm.*", "demo.*" to the settings), then PpoConfig::derive(). An unknown
// key is an error that suggests the nearest valid one.
struct DemoRunConfig {
  PpoConfig ppo;
  DemoSettings settings;
};
DemoRunConfig load_demo_config(const std::string& path, const std::vector<std::string>& overrides);

enum class DemoFiles : uint8_t { None, Write };
// With DemoFiles::Write, config.output_dir receives: metrics.jsonl (a row per step of the algorithm),
// sft_metrics.jsonl, reward_metrics.jsonl, demo_stages.json (the SFT and reward-model numbers),
// metrics.svg (proxy reward, gold reward, KL, entropy, clip fraction), policy.safetensors,
// policy_config.json (the final policy's ModelConfig), result.json (the held-out numbers, step time
// and arena bytes of DemoResult) and checkpoints/ (every save_every steps and at the end: the run
// can be resumed or extended).
// With config.resume set, SFT and reward-model training are skipped (their numbers come from
// output_dir/demo_stages.json), the algorithm continues from the checkpoint, and metrics.jsonl keeps its rows
// up to the checkpoint's step and gets the new ones appended; rows holds them all (with
// DemoFiles::None only the new ones). Stage reports and the progress line go to `log`.
DemoResult run_demo(const PpoConfig& config, const DemoSettings& settings, DemoFiles files,
                    const std::function<void(const std::string&)>& log = {});

// The metrics the plot shows for an algorithm.
std::vector<std::string> demo_plot_metrics(Algorithm algorithm);

}  // namespace ppo
