// One transformer on its own backend and arena, with device buffers for one batch of token rows:
// the setting of supervised fine-tuning, reward-model training and evaluation by sampling. Stages
// hand weights to each other (and to PpoTrainer) by parameter name, as host f32 values.
//
// Row layout (the PPO rollout's): [prompt left-padded to P | response right-padded to R], T = P+R.
// Positions count from each row's first real token; pads hold token `pad`, position 0, mask 0.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "engine/arena.h"
#include "engine/philox.h"
#include "kernels/backend.h"
#include "models/transformer.h"
#include "ppo/config.h"
#include "ppo/metrics.h"

namespace ppo {


// auto: CUDA when a GPU answers, else the CPU.
DeviceKind resolve_device(DeviceChoice choice);

// Host rows in the layout above.
struct PackedRows {
  int64_t rows = 0, P = 0, R = 0;
  std::vector<int32_t> tokens, pos, mask;  // (rows, P+R)
  std::vector<int64_t> prompt_len, response_len;  // per row
  int64_t T() const { return P + R; }
  // Column of row b's last real token (its response's last token, or the prompt's when empty).
  int64_t last_column(int64_t b) const { return P + response_len[size_t(b)] - 1; }
};
// Errors name the row when a prompt is empty or longer than P, or a response longer than R.
PackedRows pack_rows(const std::vector<std::vector<int32_t>>& prompts,
                     const std::vector<std::vector<int32_t>>& responses, int64_t P, int64_t R, int32_t pad);

// Sampling settings for generate().
struct SamplingSettings {
  float temperature = 1.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;
  int32_t eos = -1;  // rows stop at this token (generation ends when every row has); -1: never
  uint64_t seed = 1;
  uint64_t stream = 0;  // token t of row b of chunk c: Philox stream (stream + c*R + t) * rollout_batch + b
};

class SingleModel {
 public:
  // `shape`: training forwards of micro_batch rows of prompt_len + response_len tokens, and (when
  // spec.generation is KVCache) generation for rollout_batch prompts. CUDA runs in bf16.
  SingleModel(DeviceKind device, const ModelSpec& spec, const RunShape& shape, std::string owner = "model");
  SingleModel(const SingleModel&) = delete;
  SingleModel& operator=(const SingleModel&) = delete;

  Backend& backend() { return *backend_; }
  Transformer& model() { return *model_; }
  const RunShape& shape() const { return shape_; }
  const ArenaPlan& plan() const { return arena_->plan(); }

  // Device views of (rows, T) for a training forward: tokens, pos, mask, targets (i32) and two
  // stat tensors (a gradient and an output) for the heads.
  struct Batch {
    Tensor tokens, pos, mask, targets, grad, out;
  };
  // Uploads rows [begin, end) of `rows` (T = rows.T() <= the planned length); targets[b,t] is
  // tokens[b,t+1] (pad in the last column).
  Batch upload(const PackedRows& rows, int64_t begin, int64_t end, int32_t pad);

  // Samples up to shape.response_len tokens after each prompt (at most rollout_batch per call;
  // longer lists run in chunks). Responses end after the first EOS (included).
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const SamplingSettings& sampling, int32_t pad);


 private:
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Transformer> model_;
  RunShape shape_;
  std::string owner_;
  std::map<std::string, Tensor> buf_;  // the "batch" region, by name
};

// ---- shared by the single-model trainers (ppo/sft.h, ppo/reward_training.h) ---------------------------

// One epoch's minibatches: `data` in the Philox shuffle of (seed, epoch), `batch_size` at a time
// (the last one shorter).
template <class Example>
std::vector<std::vector<Example>> shuffled_batches(const std::vector<Example>& data, int64_t batch_size, uint64_t seed,
                                                   int64_t epoch) {
  const std::vector<int32_t> order = philox_permutation(int64_t(data.size()), seed, uint64_t(epoch));
  std::vector<std::vector<Example>> batches;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i % size_t(batch_size) == 0) batches.emplace_back();
    batches.back().push_back(data[size_t(order[i])]);
  }
  return batches;
}

// cfg.epochs passes over `data` in shuffled batches of cfg.batch_size: train_step(batch) -> its row,
// written to `log` and given to `on_row` as it comes. `epoch` (the trainer's) counts the passes.
template <class Example, class Config, class TrainStep>
std::vector<MetricsRow> train_epochs(const std::vector<Example>& data, const Config& cfg, int64_t& epoch,
                                     MetricsLogger* log, const std::function<void(const MetricsRow&)>& on_row,
                                     TrainStep&& train_step) {
  std::vector<MetricsRow> rows;
  for (epoch = 0; epoch < cfg.epochs; ++epoch) {
    for (const std::vector<Example>& batch : shuffled_batches(data, cfg.batch_size, cfg.seed, epoch)) {
      rows.push_back(train_step(batch));
      if (log) log->write(rows.back());
      if (on_row) on_row(rows.back());
    }
  }
  return rows;
}

// AdamW step number `step` (0-based) at learning rate `lr` with cfg's betas, eps, weight decay and
// gradient clipping; the rounding draws come from (cfg.seed, step). Returns the norm before clipping.
template <class Config>
double trainer_adamw_step(Transformer& m, const Config& cfg, float lr, int64_t step) {
  AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = cfg.adam_beta1;
  hp.beta2 = cfg.adam_beta2;
  hp.eps = cfg.adam_eps;
  hp.weight_decay = cfg.weight_decay;
  hp.step = step + 1;
  return m.adamw_step(hp, cfg.max_grad_norm, cfg.seed * 1000003ull + uint64_t(step));
}

}  // namespace ppo
