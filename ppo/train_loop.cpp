#include "ppo/train_loop.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include "engine/error.h"
#include "io/checkpoint.h"
#include "io/hf_checkpoint.h"
#include "io/jsonl.h"
#include "io/tokenizer.h"
#include "ppo/dpo.h"
#include "ppo/plot.h"
#include "ppo/trainer.h"

namespace ppo {

std::vector<MetricsRow> run_training_loop(StepTrainer& trainer, bool write_files, const LogLine& log) {
  const PpoConfig& config = trainer.config();
  const bool resumed = !config.resume.empty(), root = trainer.ranks().is_root();
  const std::string metrics_path = config.output_dir + "/metrics.jsonl";
  std::vector<MetricsRow> rows;
  std::unique_ptr<MetricsLogger> out;
  if (write_files && root) {
    std::filesystem::create_directories(config.output_dir);
    // the steps after the checkpoint are redone: their rows (from before a crash) go
    if (resumed) rows = keep_metrics_through_step(metrics_path, trainer.steps_done());
    out = std::make_unique<MetricsLogger>(metrics_path, resumed ? LogMode::Append : LogMode::Truncate);
  }
  const int64_t first_step = trainer.steps_done() + 1;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = first_step; step <= config.total_steps; ++step) {
    rows.push_back(trainer.step());
    if (out) out->write(rows.back());
    if (log && root && (step % config.log_every == 0 || step == config.total_steps)) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      log(format_progress(step, config.total_steps, elapsed / double(step - first_step + 1), rows.back()));
    }
  }
  const bool saved_by_step = config.save_every > 0 && trainer.steps_done() % config.save_every == 0;
  if (write_files && trainer.steps_done() >= first_step && !saved_by_step)
    trainer.save_checkpoint(config.output_dir + "/checkpoints");
  return rows;
}

void check_output_dir(const PpoConfig& config) {
  const std::string run_dir = config.output_dir + "/checkpoints";
  if (config.resume.empty()) return io::check_no_checkpoints(run_dir, "ppo train");
  PPO_ASSERT(io::is_step_dir_of(run_dir, io::checkpoint_step_dir(config.resume)), "resume = '", config.resume,
             "' is not a checkpoint of output_dir '", config.output_dir, "' (", run_dir,
             "): a resumed run writes on in the output_dir it was started with; set output_dir to it");
}

namespace {

std::vector<MetricsRow> run_dpo_on_checkpoints(const PpoConfig& config, const LogLine& log) {
  PPO_ASSERT(!config.policy_checkpoint.empty() && !config.preferences.empty(),
             "ppo train with algorithm dpo on real models needs policy_checkpoint and preferences (set: '",
             config.policy_checkpoint, "', '", config.preferences, "')");
  check_output_dir(config);
  const DeviceKind device = resolve_device(config.device);
  SingleModel model(device, dpo_policy_spec(config), dpo_shape(config), "policy");
  if (model.ranks().is_root()) {
    std::fputs(
        plan_report(config, device, Scoring::RewardModel, model.plan(), std::nullopt, model.ranks().size()).c_str(),
        stdout);
    std::fflush(stdout);
  }
  model.model().init_random(config.seed);
  io::load_hf_checkpoint(config.policy_checkpoint, model.model());
  const io::Tokenizer tokenizer = io::Tokenizer::load(config.tokenizer);
  const int32_t eos = int32_t(config.eos_token_id);
  DpoTrainer trainer(model, config, preference_examples(io::load_preference_pairs(config.preferences), tokenizer, eos),
                     eos);  // restores `resume`
  const std::vector<MetricsRow> rows = run_training_loop(trainer, /*write_files=*/true, log);
  if (model.ranks().is_root())
    write_svg(config.output_dir + "/metrics.svg", rows,
              {metric::kDpoLoss, metric::kRewardsMargins, metric::kRewardsAccuracies, metric::kLogpsChosen},
              {"ppo train (dpo): loss, reward margin and accuracy, chosen log-prob", 2, 320, 210});
  io::export_hf_checkpoint(config.output_dir + "/policy", model.model(), Heads::LM);
  return rows;
}

}  // namespace

std::vector<MetricsRow> run_on_checkpoints(const PpoConfig& config, const LogLine& log) {
  if (config.algorithm == Algorithm::Dpo) return run_dpo_on_checkpoints(config, log);
  PPO_ASSERT(!config.policy_checkpoint.empty() && !config.reward_checkpoint.empty() && !config.prompts.empty(),
             "ppo train on real models needs policy_checkpoint, reward_checkpoint and prompts (set: '",
             config.policy_checkpoint, "', '", config.reward_checkpoint, "', '", config.prompts, "')");
  check_output_dir(config);
  PpoTrainer trainer(config);  // loads the checkpoints and the prompts; restores `resume`
  const std::vector<MetricsRow> rows = run_training_loop(trainer, /*write_files=*/true, log);
  if (trainer.ranks().is_root())
    write_svg(config.output_dir + "/metrics.svg", rows,
              {metric::kScores, metric::kKl, metric::kEntropy, metric::kPolicyClipfrac},
              {"ppo train: reward-model score, KL, entropy, clip fraction", 2, 320, 210});
  io::export_hf_checkpoint(config.output_dir + "/policy", trainer.policy(), Heads::LM);
  if (trainer.has_separate_value_model())
    io::export_hf_checkpoint(config.output_dir + "/value", trainer.value_model(), Heads::Scalar);
  return rows;
}

}  // namespace ppo
