// The training loop of `ppo train` (PPO and its estimators, DPO), shared by the demo
// (ppo/demo_pipeline.h) and runs on Hugging Face checkpoints: steps, metrics file, progress line,
// checkpoints, resume.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/communicator.h"
#include "ppo/config.h"
#include "ppo/metrics.h"

namespace ppo {

using LogLine = std::function<void(const std::string&)>;

// What the loop drives, one optimizer-side step at a time: PpoTrainer (ppo/trainer.h) and
// DpoTrainer (ppo/dpo.h).
class StepTrainer {
 public:
  virtual ~StepTrainer() = default;
  virtual MetricsRow step() = 0;  // saves a checkpoint itself every save_every steps
  virtual int64_t steps_done() const = 0;
  virtual void save_checkpoint(const std::string& run_dir) = 0;
  virtual const PpoConfig& config() const = 0;
  virtual Communicator& ranks() = 0;  // the data-parallel ranks (rank 0 writes the files)
};

// Steps `trainer` from steps_done() + 1 through config.total_steps. With write_files: each row goes
// to output_dir/metrics.jsonl (a resumed run first drops the rows after its checkpoint's step, then
// appends) and the run ends on a checkpoint in output_dir/checkpoints (step() saves every
// save_every steps) so that it can be resumed or extended. The progress line goes to `log` every
// log_every steps. Returns the run's rows (after a resume with files: the kept ones too). Every rank
// of a data-parallel run calls it; rank 0 writes the metrics and the progress line.
std::vector<MetricsRow> run_training_loop(StepTrainer& trainer, bool write_files, const LogLine& log);

// Before any work of a run that writes files: a fresh run's output_dir holds no checkpoints (it
// would mix with them); a resumed run continues its own run directory: `resume` must name
// output_dir/checkpoints or one of its step directories (an error naming both otherwise), so that
// metrics, checkpoints and outputs never land in, or trim, another run's output_dir.
void check_output_dir(const PpoConfig& config);

// `ppo train` on real models: policy_checkpoint (policy and reference), reward_checkpoint (reward
// and value models), prompts + tokenizer; everything else from `config`. Writes into output_dir:
// metrics.jsonl, metrics.svg (proxy reward, KL, entropy, clip fraction), checkpoints/, and the final
// policy and value model as Hugging Face directories policy/ and value/ (io/hf_checkpoint.h).
// Errors before any work: a missing checkpoint or prompt file, an output_dir that holds
// checkpoints of another run (unless resuming), a resume of a checkpoint outside output_dir.
// With algorithm dpo: DPO (ppo/dpo.h) of policy_checkpoint on the `preferences` pairs (tokenized,
// the EOS appended to each response; the EOS pads); writes metrics.jsonl, metrics.svg (loss, reward
// margin and accuracy, chosen log-prob), checkpoints/ and policy/.
std::vector<MetricsRow> run_on_checkpoints(const PpoConfig& config, const LogLine& log);

}  // namespace ppo
