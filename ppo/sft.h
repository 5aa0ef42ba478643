// Supervised fine-tuning of a causal LM: next-token cross-entropy on the response tokens only
// (prompt tokens and padding carry no loss), averaged over the valid tokens of each batch:
//   L = -(1/count) sum_{b, t valid} log p(response token | everything before it)
// Gradients through Transformer::lm_logprobs_backward with g_logp = -1/count on valid targets, so
// micro-batch accumulation equals the batch mean; AdamW with global-norm clipping; epochs over a
// shuffled dataset (Philox permutation per epoch); one metrics row per optimizer step.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>
#include "io/jsonl.h"
#include "io/tokenizer.h"
#include "ppo/demo_task.h"
#include "ppo/metrics.h"
#include "ppo/single_model.h"

namespace ppo {

namespace metric {
inline constexpr const char* kSftLoss = "sft/loss";                 // mean next-token NLL over response tokens
inline constexpr const char* kSftTokensPerSecond = "sft/tokens_per_s";  // sequence tokens (prompt + response) per second
inline constexpr const char* kSftGradNorm = "sft/grad_norm";        // global gradient norm before clipping
inline constexpr const char* kSftEpoch = "sft/epoch";               // 1-based epoch of the step
inline constexpr const char* kSftLr = "sft/lr";
}  // namespace metric

struct SftExample {
  std::vector<int32_t> prompt, response;  // token ids; the response usually ends with EOS
};

struct SftConfig {
  int64_t epochs = 3;             // passes over the dataset
  int64_t batch_size = 32;        // sequences per optimizer step (the last batch of an epoch may be smaller)
  int64_t micro_batch_size = 32;  // sequences per forward/backward
  float learning_rate = 3e-3f;    // AdamW, constant after warmup
  int64_t warmup_steps = 0;       // linear warmup, in optimizer steps
  float weight_decay = 0.0f;
  float max_grad_norm = 1.0f;     // 0 = off
  float adam_beta1 = 0.9f, adam_beta2 = 0.999f, adam_eps = 1e-8f;
  uint64_t seed = 1;              // the per-epoch shuffle and the AdamW rounding draws
  int32_t pad_token_id = 0;
};

// The longest prompt and response of a dataset (the shape a SingleModel needs).
int64_t max_prompt_length(const std::vector<SftExample>& data);
int64_t max_response_length(const std::vector<SftExample>& data);

class SftTrainer {
 public:
  // `model`: a trained model with an LM head, planned for micro_batch_size rows.
  SftTrainer(SingleModel& model, const SftConfig& config);

  // One optimizer step on `batch` (the mean loss over its response tokens); row: step, loss,
  // tokens/s, grad norm, lr.
  MetricsRow train_step(const std::vector<SftExample>& batch);
  // Mean response-token NLL over `data`, no update.
  double evaluate(const std::vector<SftExample>& data);
  // config.epochs over `data`; each step's row goes to `log` (when given) and `on_row`.
  std::vector<MetricsRow> train(const std::vector<SftExample>& data, MetricsLogger* log = nullptr,
                                const std::function<void(const MetricsRow&)>& on_row = {});
  int64_t steps_done() const { return step_; }

 private:
  // Forward (and, with `update`, backward) over `batch` in micro-batches: the token-mean NLL.
  double accumulate(const std::vector<SftExample>& batch, bool update, int64_t* tokens);

  SingleModel& model_;
  SftConfig cfg_;
  int64_t step_ = 0;
  int64_t epoch_ = 0;
};

// SFT data from the demo task: demonstration(i) for i in [first, first + count).
std::vector<SftExample> demo_sft_examples(const DemoTask& task, uint64_t first, int64_t count);
// SFT data from JSONL pairs: prompt and completion tokenized, `eos` appended (when >= 0).
std::vector<SftExample> sft_examples(const std::vector<io::SftPair>& pairs, const io::Tokenizer& tokenizer, int32_t eos);

}  // namespace ppo
