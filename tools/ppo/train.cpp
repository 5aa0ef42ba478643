// `ppo train`. With no arguments, the built-in self-contained RLHF pipeline on the demo task (no
// downloads): SFT a tiny policy, train a reward model on noisily labelled preference pairs, then
// PPO against it, logging the proxy and the hidden gold reward (ppo/demo_pipeline.h). Prints the
// gold reward of the SFT policy and of the final policy on held-out prompts; writes metrics JSONL,
// an SVG plot and the final policy (safetensors + its config JSON) into output_dir.
// With a config naming prompts, policy_checkpoint or reward_checkpoint (a run needs all three): PPO
// on those Hugging Face models (ppo/train_loop.h run_on_checkpoints).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/communicator.h"
#include "io/json_fields.h"
#include "ppo/demo_pipeline.h"
#include "ppo/train_loop.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

namespace {
struct TrainOptions {
  std::string config;
  std::string device;  // empty: the config's
  std::string resume;  // empty: the config's
  std::vector<std::string> overrides;
};

// A run on real models names its files: key prompts, policy_checkpoint or reward_checkpoint in the
// config file or a --set (run_on_checkpoints then names any of the three that is missing).
bool names_real_models(const std::string& config_path, const std::vector<std::string>& overrides) {
  const char* keys[] = {"prompts", "policy_checkpoint", "reward_checkpoint", "preferences"};
  for (const std::string& o : overrides)
    for (const char* key : keys)
      if (o.rfind(std::string(key) + "=", 0) == 0) return true;
  if (config_path.empty()) return false;
  const nlohmann::json j = io::read_json_file(config_path, io::JsonComments::Allowed);
  if (!j.is_object()) return false;
  for (const char* key : keys)
    if (j.contains(key)) return true;
  return false;
}

// Progress on stderr, from rank 0 of a data-parallel run (the other ranks' stdout is closed: main.cpp).
void say(const std::string& line) {
  if (ProcessGroup::world().rank == 0) std::fprintf(stderr, "%s\n", line.c_str());
}

void run_demo_task(const std::string& config_path, const std::vector<std::string>& overrides) {
  const DemoRunConfig c = load_demo_config(config_path, overrides);
  // The demo's models are tiny: on the CPU, threads cost more in synchronisation than they give
  // (and spin-waiting threads crawl on a shared machine). One thread unless OMP_NUM_THREADS says.
  if (!std::getenv("OMP_NUM_THREADS")) set_cpu_threads(1);
  char line[1024];
  std::snprintf(line, sizeof line,
                "ppo train: demo task, policy %s, %lld PPO steps of %lld rollouts, device %s, %d rank%s, "
                "output %s",
                c.ppo.policy.dump().c_str(), (long long)c.ppo.total_steps, (long long)c.ppo.rollout_batch_size,
                to_string(c.ppo.device), ProcessGroup::world().size, ProcessGroup::world().size > 1 ? "s" : "",
                c.ppo.output_dir.c_str());
  say(line);
  const DemoResult r = run_demo(c.ppo, c.settings, DemoFiles::Write, say);
  std::printf("gold reward (held-out prompts): SFT policy %.4f, after %s %.4f (%+.4f)\n", r.sft_gold,
              to_string(c.ppo.algorithm), r.final_gold, r.final_gold - r.sft_gold);
  std::printf("reward-model score (held-out): %.4f -> %.4f; KL to the SFT policy %.4f; %s steps %.1f s (%.1f s CPU), "
              "arena %zu bytes\n",
              r.sft_proxy, r.final_proxy, r.final_kl, to_string(c.ppo.algorithm), r.train_seconds, r.train_cpu_seconds,
              r.arena_bytes);
  std::printf("reward model held-out accuracy: %.3f (noisy labels), %.3f (gold order)\n", r.rm_accuracy,
              r.rm_gold_accuracy);
  std::printf("wrote %s/{metrics.jsonl,sft_metrics.jsonl,reward_metrics.jsonl,demo_stages.json,metrics.svg,"
              "policy.safetensors,policy_config.json,result.json,checkpoints/} in %.1f s\n",
              c.ppo.output_dir.c_str(), r.seconds);
}

void run_real_models(const std::string& config_path, const std::vector<std::string>& overrides) {
  const auto start = std::chrono::steady_clock::now();
  const PpoConfig c = load_config(config_path, overrides);
  const bool dpo = c.algorithm == Algorithm::Dpo;
  char line[2048];
  std::snprintf(line, sizeof line, "ppo train (%s): policy %s, %s %s; %lld steps of %lld %s, %d rank%s, output %s",
                to_string(c.algorithm), c.policy_checkpoint.c_str(), dpo ? "preferences" : "reward model",
                (dpo ? c.preferences : c.reward_checkpoint + ", prompts " + c.prompts).c_str(),
                (long long)c.total_steps, (long long)c.rollout_batch_size, dpo ? "pairs" : "rollouts",
                ProcessGroup::world().size, ProcessGroup::world().size > 1 ? "s" : "", c.output_dir.c_str());
  say(line);
  const std::vector<MetricsRow> rows = run_on_checkpoints(c, say);
  const char* shown = dpo ? metric::kDpoLoss : metric::kScores;
  if (!rows.empty())
    std::printf("%s: step %lld %.4f -> step %lld %.4f\n", dpo ? "DPO loss" : "reward-model score",
                (long long)rows.front().get(metric::kStep), rows.front().get(shown), (long long)rows.back().get(metric::kStep),
                rows.back().get(shown));
  std::printf("wrote %s/{metrics.jsonl,metrics.svg,checkpoints/,policy/%s} in %.1f s\n", c.output_dir.c_str(),
              c.value_model == ValueModelKind::Separate && !dpo ? ",value/" : "",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

void run_train(const TrainOptions& o) {
  std::vector<std::string> overrides = o.overrides;
  if (!o.device.empty()) overrides.push_back("device=" + o.device);
  if (!o.resume.empty()) overrides.push_back("resume=" + o.resume);
  if (names_real_models(o.config, overrides)) run_real_models(o.config, overrides);
  else run_demo_task(o.config, overrides);
}
}  // namespace

void add_train_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "train",
      "PPO-RLHF. With no prompts: the built-in demo pipeline (SFT, reward model, then PPO against it; proxy vs gold "
      "reward). With prompts, policy_checkpoint and reward_checkpoint in the config: PPO on those models");
  auto o = std::make_shared<TrainOptions>();
  cmd->add_option("--config", o->config,
                  "run config (JSON): PPO keys (ppo/config.h); for the demo also sections \"sft\", \"rm\", \"demo\"")
      ->check(CLI::ExistingFile);
  cmd->add_option("--device", o->device, "auto: cuda when a GPU answers, else cpu")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--resume", o->resume,
                  "continue a run from its checkpoints (OUTPUT_DIR/checkpoints, or one of its step_N directories), "
                  "with the run's --config and --set again (the same output_dir): the demo skips SFT and reward "
                  "model; raise total_steps to extend a finished run (a linear or cosine lr schedule then stretches "
                  "to the new length)");
  cmd->add_option("--set", o->overrides, "override a setting: key=value (repeatable; sft.*, rm.*, demo.* too)");
  cmd->callback([o] { run_train(*o); });
}

}  // namespace ppo::tools
