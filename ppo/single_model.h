// One transformer on its own backend and arena, with device buffers for one batch of token rows
// (the layout of ppo/sequences.h): the setting of supervised fine-tuning, reward-model training,
// DPO and evaluation by sampling. Stages hand weights to each other (and to PpoTrainer) by
// parameter name, as host f32 values.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/philox.h"
#include "kernels/backend.h"
#include "models/transformer.h"
#include "ppo/config.h"
#include "ppo/generate.h"
#include "ppo/metrics.h"
#include "ppo/run_plan.h"
#include "ppo/sequences.h"

namespace ppo {

// The arena regions of a SingleModel: the model's (models/plan.h), its "batch" buffers and the
// scratch.
std::vector<RegionSpec> single_model_regions(const std::string& owner, const ModelSpec& spec, const RunShape& shape,
                                             Precision precision);

class SingleModel {
 public:
  // `shape`: training forwards of micro_batch rows of prompt_len + response_len tokens, and (when
  // spec.generation is KVCache) generation for rollout_batch prompts. CUDA runs in bf16; the CPU in
  // f32, or f64 when `precision` says so (gradient checks). Data parallel over `ranks` (shape.ranks
  // is set to their number): the trainers (SFT, reward model, DPO) split each batch's micro-batches
  // over them (ZeRO-1); generation and scoring run whole on every rank.
  SingleModel(DeviceKind device, const ModelSpec& spec, RunShape shape, std::string owner = "model",
              std::optional<Precision> precision = std::nullopt, Ranks ranks = Ranks::World);
  SingleModel(const SingleModel&) = delete;
  SingleModel& operator=(const SingleModel&) = delete;

  Backend& backend() { return *backend_; }
  Communicator& ranks() { return *comm_; }
  Transformer& model() { return *model_; }
  const RunShape& shape() const { return shape_; }
  const ArenaPlan& plan() const { return arena_->plan(); }

  // Device views of (rows, T) for a training forward: the sequences (ppo/sequences.h) and two
  // stat tensors (a gradient and an output) for the heads.
  struct Batch {
    SequenceTensors seq;
    Tensor grad, out;
  };
  // Uploads rows [begin, end) of `rows` (T = rows.T() <= the planned length).
  Batch upload(const SequenceBatch& rows, int64_t begin, int64_t end);

  // Teacher-forced forward of every row of `rows` (at most micro_batch) and the log-probs of the
  // response tokens at 1/temperature: each row's summed response log-prob. The per-token log-probs
  // stay in the batch's `out` and the activations for lm_logprobs_backward (g_logp in `grad`).
  std::vector<double> response_logps(const SequenceBatch& rows, float inv_temperature, Batch* batch = nullptr);

  // Samples up to shape.response_len tokens after each prompt (ppo/generate.h: chunks of
  // rollout_batch prompts); prompts padded with `pad`.
  SampledResponses generate(const std::vector<std::vector<int32_t>>& prompts, const SamplingSettings& sampling, int32_t pad);

 private:
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Transformer> model_;
  RunShape shape_;
  std::string owner_;
  SequenceTensors seq_;                 // the "batch" region: (micro_batch, T) rows
  Tensor grad_, out_;
  GenerationBuffers gen_;               // (with a KV cache) rollout_batch rows
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

// This rank's micro-batches of a batch of `items` in micro-batches of `micro` (all of them on one
// rank): items [begin, end) of the batch.
inline Share micro_batch_share(const Communicator& ranks, int64_t items, int64_t micro) {
  const Share m = ranks.share((items + micro - 1) / micro);
  return {std::min(items, m.begin * micro), std::min(items, m.end * micro)};
}

// AdamW step number `step` (0-based) at learning rate `lr` with cfg's betas, eps, weight decay and
// gradient clipping; the rounding draws come from (cfg.seed, step). The step itself runs on the
// device (Transformer::adamw_step); call reduce_gradients, then grad_norm() for the norm (a
// synchronization).
template <class Config>
void trainer_adamw_step(Transformer& m, const Config& cfg, float lr, int64_t step) {
  AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = cfg.adam_beta1;
  hp.beta2 = cfg.adam_beta2;
  hp.eps = cfg.adam_eps;
  hp.weight_decay = cfg.weight_decay;
  hp.step = step + 1;
  m.adamw_step(hp, cfg.max_grad_norm, cfg.seed * 1000003ull + uint64_t(step));
}

}  // namespace ppo
