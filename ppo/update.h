// Step 6 of the PPO step: ppo_epochs x num_minibatches optimizer steps over the rollout batch,
// each accumulated over grad_accum_steps micro-batches of micro_batch_size rows.
//
// Per epoch a Philox permutation of the B rows (seed, stream kShuffleStream + step*epochs + epoch);
// minibatch k takes rows [k*M, (k+1)*M) of it. A micro-batch's per-token math runs over all T
// columns, aligned with the forward: column j = P-1+t holds response token t (loss mask 1 there
// on valid tokens, 0 elsewhere), so dlogp goes straight into lm_logprobs_backward. Token t of row
// b weighs w = token * row[b] (loss_weights: the loss_agg_mode):
//   policy: forward -> lm_logprobs at 1/temperature (+ entropy) ->
//           ppo_policy_loss(token_weight = token)
//           [+ kl_penalty_backward(weight = kl_coef * token) when kl_in_reward = false]
//           [g_entropy = -entropy_coef * token] -> scale_rows(row) -> lm_logprobs_backward -> backward
//   value : (a critic only) forward -> scalar -> ppo_value_loss(token_weight = value_loss_coef *
//           token) -> scale_rows(row) -> scalar_backward -> backward  (the policy's value head: one
//           forward, both heads, one backward)
// So the accumulated gradient is that of the minibatch's aggregated loss. After accumulation, per
// trained model: a non-finite loss sum or gradient norm skips the optimizer step (weights
// untouched; the step's remaining minibatches are skipped too, `skipped` reported); else
// adamw_step at lr * lr_factor(optimizer step) with max_grad_norm clipping; then zero_grad.
//
// Data parallel (engine/communicator.h): every rank holds the whole batch (the minibatches and
// their loss weights are global) and runs its share of each minibatch's micro-batches; ranks meet
// at each optimizer step: the gradients summed into each rank's shard
// (Transformer::reduce_gradients), the minibatch's loss sums and the norm over all ranks (so the
// NaN/Inf skip is every rank's), AdamW on the shard and the weights all-gathered
// (Transformer::adamw_step). UpdateStats are global on every rank.
#pragma once
#include <cstdint>
#include <vector>
#include "ppo/experience.h"

namespace ppo {

inline constexpr uint64_t kShuffleStream = uint64_t(1) << 40;  // Philox streams of the minibatch shuffles
inline constexpr uint64_t kAdamSeedOffset = 0x5EED;            // AdamW stochastic-rounding seed = cfg.seed + this

// Running sums over every micro-batch of every epoch; means are sums / counts.
struct UpdateStats {
  double policy_loss = 0, clipped = 0, approx_kl = 0, ratio = 0, entropy = 0, tokens = 0;
  double value_loss = 0, value_clipped = 0;
  double policy_grad_norm = 0, value_grad_norm = 0;  // of the last optimizer step
  int64_t optimizer_steps = 0;
  bool skipped = false;  // a non-finite value stopped the update
};

// The first minibatch of the first epoch, for the trace (rows in minibatch order).
struct UpdateTrace {
  std::vector<int32_t> minibatch_indices;  // (M)
  std::vector<float> new_logp, ratio;      // (M,R), 0 on padding
  double policy_loss = 0, value_loss = 0;  // token means over the minibatch, before its update
  bool all_epochs = false;                 // also record epoch{e}/new_logp and ratio of each epoch's first minibatch
  std::vector<std::vector<int32_t>> epoch_indices;
  std::vector<std::vector<float>> epoch_new_logp, epoch_ratio;
};

struct UpdateModels {
  Transformer* policy = nullptr;
  Transformer* value = nullptr;  // the critic: a value model, the policy (value head on its trunk), or
                                 // null (critic-free estimators: no value loss)
};

// The weights of a minibatch's per-token losses: token t of row b weighs row[b] / denominator.
//   token-mean           denominator = valid tokens of the minibatch,  row[b] = 1
//   seq-mean-token-sum   denominator = rows of the minibatch,          row[b] = 1
//   seq-mean-token-mean  denominator = rows of the minibatch,          row[b] = 1 / (valid tokens of b)
struct LossWeights {
  double denominator = 1;
  std::vector<float> row;  // per row of `rows`, in that order; empty: every row 1
};
LossWeights loss_weights(LossAggMode mode, const std::vector<int32_t>& response_mask, int64_t R,
                         const std::vector<int32_t>& rows);

// Runs the update of one step on the experience make_experience left in `buf` (the sequences and
// the per-token tensors stay on the device; micro-batches are gathered there); `exp` gives the
// host-side response mask for the loss weights. `optimizer_step` (the run's count so far) advances
// by the optimizer steps taken. `kl_coef`: beta of the KL loss term (kl_in_reward = false).
UpdateStats ppo_update(Backend& backend, const PpoConfig& config, const UpdateModels& models, ExperienceBuffers& buf,
                       const Experience& exp, int64_t step, double kl_coef, int64_t& optimizer_step, UpdateTrace* trace,
                       Communicator& ranks);

}  // namespace ppo
