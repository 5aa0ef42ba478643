// Bradley-Terry reward-model training. The reward of (prompt, response) is the scalar head's value
// at the response's last real token; for a pair with rewards r_c (chosen) and r_r (rejected):
//   loss = -log sigmoid(r_c - r_r),  averaged over the pairs of a batch;  accuracy = [r_c > r_r]
//   dloss/dr_c = -sigmoid(r_r - r_c) / pairs = -dloss/dr_r
// Chosen and rejected rows of a pair share one forward; the per-token gradient handed to
// scalar_backward is nonzero only at those two positions. AdamW with clipping, shuffled epochs,
// one metrics row per optimizer step.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>
#include "io/jsonl.h"
#include "io/tokenizer.h"
#include "ppo/demo_task.h"
#include "ppo/metrics.h"
#include "ppo/single_model.h"

namespace ppo {

namespace metric {
inline constexpr const char* kRmLoss = "rm/loss";            // mean -log sigmoid(r_chosen - r_rejected)
inline constexpr const char* kRmAccuracy = "rm/accuracy";    // fraction of pairs with r_chosen > r_rejected
inline constexpr const char* kRmMargin = "rm/margin";        // mean r_chosen - r_rejected
inline constexpr const char* kRmGradNorm = "rm/grad_norm";   // global gradient norm before clipping
inline constexpr const char* kRmEpoch = "rm/epoch";          // 1-based
}  // namespace metric

struct PreferenceExample {
  std::vector<int32_t> prompt, chosen, rejected;  // token ids; responses must not be empty
};

struct RewardTrainingConfig {
  int64_t epochs = 2;             // passes over the pairs
  int64_t batch_size = 32;        // pairs per optimizer step
  int64_t micro_batch_size = 16;  // pairs per forward/backward (2x rows)
  float learning_rate = 1e-3f;
  float weight_decay = 0.0f;
  float max_grad_norm = 1.0f;     // 0 = off
  float adam_beta1 = 0.9f, adam_beta2 = 0.999f, adam_eps = 1e-8f;
  uint64_t seed = 1;              // the per-epoch shuffle and the AdamW rounding draws
  int32_t pad_token_id = 0;
};

struct PreferenceEval {
  double loss = 0, accuracy = 0, margin = 0;  // means over the pairs
};

class RewardTrainer {
 public:
  // `model`: a trained model with a scalar head, planned for 2 * micro_batch_size rows.
  RewardTrainer(SingleModel& model, const RewardTrainingConfig& config);

  MetricsRow train_step(const std::vector<PreferenceExample>& batch);
  PreferenceEval evaluate(const std::vector<PreferenceExample>& data);
  std::vector<MetricsRow> train(const std::vector<PreferenceExample>& data, MetricsLogger* log = nullptr,
                                const std::function<void(const MetricsRow&)>& on_row = {});

 private:
  // Forward (and backward with `update`) in micro-batches; sums over the batch's pairs.
  PreferenceEval accumulate(const std::vector<PreferenceExample>& batch, bool update);

  SingleModel& model_;
  RewardTrainingConfig cfg_;
  int64_t step_ = 0, epoch_ = 0;
};

// Pairs [first, first + n) as 2n rows at their own widths (ppo/sequences.h pack_tight): rows [0,n)
// the chosen responses, [n,2n) the rejected ones. An empty response is an error naming the pair.
SequenceBatch pack_pairs(const std::vector<PreferenceExample>& pairs, size_t first, size_t n, int32_t pad);

// The rewards of (prompt, response) rows: the scalar head at each response's last token.
std::vector<double> score_responses(SingleModel& model, const std::vector<std::vector<int32_t>>& prompts,
                                    const std::vector<std::vector<int32_t>>& responses, int32_t pad);

// Demo-task pairs preference_pair(i, label_noise) for i in [first, first + count).
std::vector<PreferenceExample> demo_preference_examples(const DemoTask& task, uint64_t first, int64_t count,
                                                        double label_noise);
// Pairs from JSONL: prompt, chosen and rejected tokenized, `eos` appended to both responses (when >= 0).
std::vector<PreferenceExample> preference_examples(const std::vector<io::PreferencePair>& pairs,
                                                   const io::Tokenizer& tokenizer, int32_t eos);

}  // namespace ppo
