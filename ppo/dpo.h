// Direct Preference Optimization (Rafailov et al. 2023) on preference pairs: the policy learns from
// (prompt, chosen, rejected) directly, with no reward model, no rollouts and no critic. With pi_c,
// pi_r the policy's summed log-probs of the chosen and rejected responses and ref_c, ref_r the
// reference's (the policy at the start, computed once over every pair before training):
//
//   h = (pi_c - ref_c) - (pi_r - ref_r)
//   sigmoid: L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)   (eps = label_smoothing:
//            the conservative DPO of TRL's "sigmoid" loss)
//   ipo:     L = (h - 1/(2 beta))^2                                          (Azar et al. 2023, on
//            summed log-probs as in the paper; TRL averages them per token)
//   dL/dpi_c = L'(h) = -dL/dpi_r, on every response token of the pair's rows (g_logp)
//
// The loss of a batch is the mean over its pairs. Metrics with TRL's names: rewards/chosen =
// beta (pi_c - ref_c), rewards/rejected = beta (pi_r - ref_r), rewards/margins (their difference),
// rewards/accuracies ([chosen > rejected]), logps/chosen = pi_c, logps/rejected = pi_r, all means
// over the step's pairs; loss.
//
// One step(): the next rollout_batch_size pairs of a Philox permutation per pass over the pairs;
// micro-batches of micro_batch_size pairs, the chosen and the rejected rows of a micro-batch in one
// forward (ppo/sequences.h layout, each micro-batch its own widths); AdamW at learning_rate *
// lr_factor(step) with max_grad_norm clipping; a NaN/Inf loss or gradient norm skips the step
// (weights untouched). Checkpoints (io/checkpoint.h) hold the policy with its AdamW state and a
// state.json with the data position, the run's shapes and the reference log-probs, so a resumed
// run continues bit-exactly on the CPU.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>
#include "ppo/config.h"
#include "ppo/metrics.h"
#include "ppo/reward_training.h"
#include "ppo/run_state.h"
#include "ppo/single_model.h"
#include "ppo/train_loop.h"

namespace ppo {

struct DpoSettings {
  double beta = 0.1, label_smoothing = 0.0;
  DpoLoss loss = DpoLoss::Sigmoid;
  static DpoSettings from_config(const PpoConfig& config);
};

struct PairLoss {
  double loss = 0, dloss_dh = 0;
};
// The loss of one pair and its derivative in h (the host part, as in the header comment).
PairLoss dpo_pair_loss(double h, const DpoSettings& settings);

struct PairLogps {
  double chosen = 0, rejected = 0;  // summed response log-probs
};

// Sums over pairs of the step's statistics (means: / pairs).
struct DpoSums {
  double loss = 0, chosen_rewards = 0, rejected_rewards = 0, accuracies = 0, chosen_logps = 0, rejected_logps = 0;
  double pairs = 0;
};

enum class Gradients : uint8_t { None, Accumulate };

// Forward over `pairs` in micro-batches of micro_pairs pairs (2 * micro_pairs rows, `pad` pads):
// each pair's summed log-probs (into `logps` when given); with `reference` (one per pair) the DPO
// sums, and with Gradients::Accumulate the gradient of the mean loss accumulates into the model.
DpoSums dpo_pass(SingleModel& model, const std::vector<PreferenceExample>& pairs,
                 const std::vector<PairLogps>* reference, const DpoSettings& settings, int64_t micro_pairs,
                 int32_t pad, Gradients gradients, std::vector<PairLogps>* logps = nullptr);

// The policy DPO trains (trained, LM head, no generation) and its shape: micro-batches of
// micro_batch_size pairs, 2x rows of prompt_length + response_length tokens. Its arena is the
// whole run's: no reference, reward or value model.
ModelSpec dpo_policy_spec(const PpoConfig& config);
RunShape dpo_shape(const PpoConfig& config, int64_t ranks = 1);

class DpoTrainer : public StepTrainer {
 public:
  // `model`: the policy (trained, LM head) planned for 2 * micro_batch_size rows of prompt_length +
  // response_length tokens; its weights now are the reference (one pass over every pair here).
  // With config.resume the checkpoint restores the policy, its AdamW state and the reference
  // log-probs instead. `monitor` (optional) adds to each step's row, untimed (the demo's gold reward).
  DpoTrainer(SingleModel& model, const PpoConfig& config, std::vector<PreferenceExample> pairs, int32_t pad,
             std::function<void(MetricsRow&)> monitor = {});

  MetricsRow step() override;
  int64_t steps_done() const override { return progress_.steps_done; }
  const PpoConfig& config() const override { return cfg_; }
  Communicator& ranks() override { return model_.ranks(); }
  // step_<n>/policy.safetensors (+ AdamW state) and state.json (run_state.h, data key "next_pair",
  // plus "reference_logps": [[chosen, rejected], ...]).
  void save_checkpoint(const std::string& run_dir) override;
  void load_checkpoint(const std::string& path);

  const std::vector<PairLogps>& reference() const { return reference_; }
  const std::vector<MetricsRow>& metrics() const { return metrics_; }

 private:
  nlohmann::json run_shapes() const;

  SingleModel& model_;
  PpoConfig cfg_;
  std::vector<PreferenceExample> pairs_;
  int32_t pad_;
  std::function<void(MetricsRow&)> monitor_;
  std::vector<PairLogps> reference_;
  RunProgress progress_;  // next_example: the next pair of the stream
  std::vector<MetricsRow> metrics_;
};

}  // namespace ppo
