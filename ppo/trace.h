// `--trace DIR`: every tensor of one PPO step, for a tensor-by-tensor comparison with the PyTorch
// peer (bench/peers/torch_ppo_step.py writes the same names; its trace is also a valid
// forced-responses file). DIR/trace.safetensors holds (ids and masks i32, the rest f32; B =
// rollout_batch_size, P = prompt_length, R = response_length, M = B / num_minibatches):
//
//   prompt_ids      (B,P)  left-padded prompt tokens (padding holds the EOS id)
//   prompt_mask     (B,P)  1 on real prompt tokens
//   response_ids    (B,R)  sampled tokens, the EOS id after the end
//   response_mask   (B,R)  1 on real response tokens, the EOS included (a prefix of each row)
//   sampler_logp    (B,R)  the sampler's full-vocabulary log-probs at the temperature (engine only)
//   old_logp        (B,R)  rollout policy log-probs at the temperature, 0 on padding
//   ref_logp        (B,R)  reference log-probs, 0 on padding
//   values          (B,R)  rollout values, 0 on padding
//   scores          (B)    raw scores (before clipping and the missing-EOS penalty)
//   kl              (B,R)  per-token KL estimate
//   rewards         (B,R)  shaped per-token rewards (after optional reward whitening)
//   advantages      (B,R)  GAE advantages after optional whitening
//   returns         (B,R)  advantages before whitening + values
//   epoch0/minibatch_indices (M)  rollout rows of the first minibatch of the first epoch
//   epoch0/new_logp (M,R)  the policy's log-probs in that minibatch's training forward (its rows)
//   epoch0/ratio    (M,R)  exp(new_logp - old_logp), 0 on padding
//   epoch0/policy_loss (1) clipped surrogate, mean over the minibatch's valid tokens, before the update
//   epoch0/value_loss  (1) clipped value loss 0.5 max(...), same mean, without value_loss_coef
//   epoch{e}/minibatch_indices, epoch{e}/new_logp, epoch{e}/ratio   for e >= 1: the first
//                   minibatch of each later epoch (after the earlier epochs' updates)
// and DIR/config.json: the run config (PpoConfig::to_json) with "eos_token_id" resolved and
// "kl_coef_used" (the beta of these rewards).
#pragma once
#include <string>
#include "ppo/config.h"
#include "ppo/experience.h"
#include "ppo/update.h"

namespace ppo {

void write_trace(const std::string& dir, const PpoConfig& config, int32_t eos_token_id, const Experience& exp,
                 const UpdateTrace& trace);

}  // namespace ppo
