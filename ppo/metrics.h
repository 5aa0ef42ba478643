// Metrics of a run: one JSON object per logged step in <output_dir>/metrics.jsonl (flushed per
// line, so a crashed or running job can be plotted), and a one-line progress report on stderr.
// Names follow TRL/OpenRLHF so users find what they know.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace ppo {

namespace metric {
inline constexpr const char* kStep = "step";                          // PPO step, 1-based
inline constexpr const char* kEpisode = "episode";                    // sequences generated so far
inline constexpr const char* kKl = "objective/kl";                    // mean per-sequence KL(policy || ref), summed over tokens
inline constexpr const char* kKlCoef = "objective/kl_coef";           // beta used for this step
inline constexpr const char* kEntropy = "objective/entropy";          // mean per-sequence entropy of the rollout policy
inline constexpr const char* kNonScoreReward = "objective/non_score_reward";  // mean per-sequence -beta*KL
inline constexpr const char* kRlhfReward = "objective/rlhf_reward";   // mean score + non-score reward
inline constexpr const char* kScores = "objective/scores";            // mean reward-model score (raw)
inline constexpr const char* kGoldScores = "objective/gold_scores";   // demo task: mean hidden gold reward
inline constexpr const char* kPolicyClipfrac = "policy/clipfrac_avg"; // fraction of tokens where the ratio clip binds
inline constexpr const char* kApproxKl = "policy/approxkl_avg";       // mean (logp - old_logp)^2 / 2
inline constexpr const char* kRatio = "policy/ratio_avg";             // mean exp(logp - old_logp)
inline constexpr const char* kPolicyEntropy = "policy/entropy_avg";   // mean per-token entropy during the update
inline constexpr const char* kPolicyLoss = "loss/policy_avg";         // mean clipped-surrogate loss
inline constexpr const char* kValueLoss = "loss/value_avg";           // mean clipped value loss
inline constexpr const char* kValueClipfrac = "val/clipfrac_avg";     // fraction of tokens where the value clip binds
inline constexpr const char* kExplainedVariance = "val/explained_variance";  // 1 - Var(returns - values) / Var(returns)
inline constexpr const char* kNumEos = "val/num_eos_tokens";          // responses that ended with EOS
inline constexpr const char* kResponseLength = "val/response_length"; // mean response tokens (EOS included)
inline constexpr const char* kLr = "lr";                              // policy learning rate at the step's end
inline constexpr const char* kValueLr = "value_lr";                   // value learning rate at the step's end
inline constexpr const char* kRolloutSeconds = "time/rollout_s";      // generation
inline constexpr const char* kScoreSeconds = "time/score_s";          // reward, reference, old log-probs, values
inline constexpr const char* kTrainSeconds = "time/train_s";          // PPO epochs
inline constexpr const char* kStepSeconds = "time/step_s";            // whole step
inline constexpr const char* kSkipped = "skipped";                    // 1 when a NaN/Inf made the step skip its update
// DPO (ppo/dpo.h), TRL's names; means over the step's pairs
inline constexpr const char* kDpoLoss = "loss";                       // the DPO (or IPO) loss
inline constexpr const char* kRewardsChosen = "rewards/chosen";       // beta (log pi - log pi_ref) of the chosen response
inline constexpr const char* kRewardsRejected = "rewards/rejected";   // the same, rejected
inline constexpr const char* kRewardsMargins = "rewards/margins";     // chosen - rejected
inline constexpr const char* kRewardsAccuracies = "rewards/accuracies";  // share of pairs with chosen > rejected
inline constexpr const char* kLogpsChosen = "logps/chosen";           // summed log-prob of the chosen response
inline constexpr const char* kLogpsRejected = "logps/rejected";       // the same, rejected
inline constexpr const char* kGradNorm = "grad_norm";                 // gradient norm before clipping
}  // namespace metric

// One row: (name, value) in insertion order; set() replaces an existing name.
class MetricsRow {
 public:
  void set(const std::string& name, double value);
  bool has(const std::string& name) const;
  double get(const std::string& name) const;  // NaN when absent
  const std::vector<std::pair<std::string, double>>& items() const { return items_; }
  std::string to_json_line() const;  // NaN and Inf are written as null

 private:
  std::vector<std::pair<std::string, double>> items_;
};

enum class LogMode : uint8_t { Truncate, Append };  // Append: resuming a run

class MetricsLogger {
 public:
  MetricsLogger(const std::string& path, LogMode mode);
  void write(const MetricsRow& row);  // one line, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Every row of a metrics JSONL file (null reads back as NaN). Blank lines are skipped.
std::vector<MetricsRow> read_metrics_jsonl(const std::string& path);

// Resuming from a checkpoint taken after step `step`: the rows of a later step (written before a
// crash, and about to be redone) are removed from the file, which is rewritten atomically
// (temporary file, rename). Returns the rows kept. A missing file is an error.
std::vector<MetricsRow> keep_metrics_through_step(const std::string& path, int64_t step);

// "step 12/200 | rlhf_reward 0.531 | kl 0.0123 | ... | 1.23 s/step | ETA 3m51s"
// seconds_per_step is measured over the steps of this process (a resumed run starts afresh).
std::string format_progress(int64_t step, int64_t total_steps, double seconds_per_step, const MetricsRow& row);
std::string format_duration(double seconds);  // "45s", "3m51s", "2h05m"

class ProgressPrinter {
 public:
  // first_step: the step this process starts at (resume), so the rate counts only its own steps.
  ProgressPrinter(int64_t total_steps, int64_t first_step, std::FILE* out = stderr);
  void print(int64_t step, const MetricsRow& row);

 private:
  int64_t total_steps_, first_step_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ppo
