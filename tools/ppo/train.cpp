// `ppo train`: with no arguments, the built-in self-contained RLHF pipeline on the demo task (no
// downloads): SFT a tiny policy, train a reward model on noisily labelled preference pairs, then
// PPO against it, logging the proxy and the hidden gold reward (ppo/demo_pipeline.h). Prints the
// gold reward of the SFT policy and of the final policy on held-out prompts; writes metrics JSONL,
// an SVG plot and the final policy (safetensors + its config JSON) into output_dir.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>
#include "ppo/demo_pipeline.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

namespace {
struct TrainOptions {
  std::string config;
  std::string device;  // empty: the config's
  std::string resume;  // empty: the config's
  std::vector<std::string> overrides;
};

void run_train(const TrainOptions& o) {
  std::vector<std::string> overrides = o.overrides;
  if (!o.device.empty()) overrides.push_back("device=" + o.device);
  if (!o.resume.empty()) overrides.push_back("resume=" + o.resume);
  const DemoRunConfig c = load_demo_config(o.config, overrides);
  // The demo's models are tiny: on the CPU, threads cost more in synchronisation than they give
  // (and spin-waiting threads crawl on a shared machine). One thread unless OMP_NUM_THREADS says.
  if (!std::getenv("OMP_NUM_THREADS")) set_cpu_threads(1);
  std::fprintf(stderr, "ppo train: demo task, policy %s, %lld PPO steps of %lld rollouts, device %s, output %s\n",
               c.ppo.policy.dump().c_str(), (long long)c.ppo.total_steps, (long long)c.ppo.rollout_batch_size,
               to_string(c.ppo.device), c.ppo.output_dir.c_str());
  const DemoResult r = run_demo(c.ppo, c.settings, DemoFiles::Write,
                                [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  std::printf("gold reward (held-out prompts): SFT policy %.4f, after PPO %.4f (%+.4f)\n", r.sft_gold, r.final_gold,
              r.final_gold - r.sft_gold);
  std::printf("reward model held-out accuracy: %.3f (noisy labels), %.3f (gold order)\n", r.rm_accuracy,
              r.rm_gold_accuracy);
  std::printf("wrote %s/{metrics.jsonl,sft_metrics.jsonl,reward_metrics.jsonl,demo_stages.json,metrics.svg,policy.safetensors,"
              "policy_config.json,checkpoints/} in %.1f s\n",
              c.ppo.output_dir.c_str(), r.seconds);
}
}  // namespace

void add_train_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "train", "Run the built-in demo pipeline: SFT, reward model, then PPO against it (proxy vs gold reward)");
  auto o = std::make_shared<TrainOptions>();
  cmd->add_option("--config", o->config, "run config (JSON): PPO keys, plus sections \"sft\", \"rm\", \"demo\"")
      ->check(CLI::ExistingFile);
  cmd->add_option("--device", o->device, "auto: cuda when a GPU answers, else cpu")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--resume", o->resume,
                  "continue a run from its checkpoints (OUTPUT_DIR/checkpoints, or one step_N directory): SFT and "
                  "reward model are skipped; raise total_steps to extend a finished run");
  cmd->add_option("--set", o->overrides, "override a setting: key=value (repeatable; sft.*, rm.*, demo.* too)");
  cmd->callback([o] { run_train(*o); });
}

}  // namespace ppo::tools
