// The rollout batch of a PPO step and the device buffers of the run; step 3 (the scoring pass over
// prompt + response) and the device side of steps 4-5 (ppo/rewards.h, ppo/advantages.h).
//
// Layout (ppo/sequences.h, pad = the EOS id): B rows, P = prompt_length, R = response_length,
// T = P + R. Response token t sits at column P+t, so its log-prob and its value come from the
// hidden state at column P+t-1 (TRL's [:, P-1:-1]): the (B,R) quantities are columns [P-1, T-1).
//
// In micro-batches of micro_batch_size rows, each a teacher-forced forward over (rows, T):
//   old_logp  policy     lm_logprob at 1/temperature (the same path as the update's log-probs)
//   ref_logp  reference  the same
//   values    value model scalar head (or the policy's value head; 0 without a critic), columns [P-1, T-1)
//   scores    reward model scalar head at column P + length - 1 (the last real response token),
//             or the user's reward callback
// All (B,R) outputs are 0 on padding.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/communicator.h"
#include "kernels/backend.h"
#include "ppo/advantages.h"
#include "ppo/config.h"
#include "ppo/generate.h"
#include "ppo/phase.h"
#include "ppo/rewards.h"
#include "ppo/sequences.h"

namespace ppo {

class Transformer;

// One PPO step's rollout batch, host copies (row-major).
struct Experience {
  int64_t B = 0, P = 0, R = 0;
  std::vector<std::vector<int32_t>> prompts;          // (B) without padding
  SequenceBatch seq;                                  // (B,T) prompt + response rows
  std::vector<int32_t> response_ids, response_mask;   // (B,R) mask: 1 on real tokens, EOS included;
                                                      // ids: the pad (EOS) id after the end
  std::vector<float> sampler_logp;                    // (B,R) the sampler's full-vocabulary log-probs (0 if forced)
  std::vector<float> old_logp, ref_logp, values;      // (B,R)
  std::vector<float> kl, rewards, advantages, returns;  // (B,R)
  std::vector<float> scores;                          // (B) raw scores
  std::vector<uint8_t> ended_with_eos;                // (B)
  std::vector<float> entropy;                         // (B) summed per-token entropy of the rollout policy
  RewardStats reward_stats;
  AdvantageStats advantage_stats;
  double kl_coef = 0;                                 // beta used for these rewards

  int64_t T() const { return P + R; }
  std::vector<int32_t> response(int64_t b) const;     // row b's real response tokens
  // No NaN/Inf in the log-probs, values, scores, entropies, KL, rewards and advantage moments so
  // far (false: the step skips its update and leaves the running statistics as they were).
  bool finite() const;
};

// The sums the update reads once per minibatch (ppo/update.cpp): policy loss (5), value loss (3),
// entropy (2), the gradients' sums of squares of the policy and the value model (2).
inline constexpr int64_t kUpdateSums = 12;

// Device tensors of the run (region ("run", "experience"), Phase::Always), sized for B rows of T
// tokens, micro-batches of M rows, vocabulary-independent. Data parallel over `ranks`: generation
// for this rank's B / ranks rows, the (B,R) tensors for the whole batch.
struct ExperienceBuffers {
  GenerationBuffers gen;  // rollout: G = B / ranks rows
  // the whole batch
  SequenceTensors seq;                                          // (B,T) i32, uploaded by score_experience
  Tensor response_mask;                                         // (B,R) i32
  Tensor old_logp, ref_logp, values, kl, rewards, advantages, returns;  // (B,R) stat
  Tensor row_scale;                                                     // (B,1) stat: per-row loss weights
  Tensor order;                                                         // (E,B) i32: each epoch's row order
  Tensor sums;                                                          // (kUpdateSums) f64: a minibatch's sums
  // one micro-batch over all T columns (the update's per-token math runs on these)
  SequenceTensors mb;                                           // (M,T) i32
  Tensor mb_loss_mask;                                          // (M,T) i32
  Tensor mb_logp, mb_entropy, mb_values;                        // (M,T) stat
  Tensor mb_old_logp, mb_ref_logp, mb_old_values, mb_advantages, mb_returns;  // (M,T) stat
  Tensor mb_dlogp, mb_dentropy, mb_dvalues;                     // (M,T) stat
  Tensor mb_row_scale;                                          // (M) stat: per-row loss weights

  static std::vector<TensorSpec> specs(const PpoConfig& config, Precision precision, int64_t ranks = 1);
  static RegionSpec region(const PpoConfig& config, Precision precision, int64_t ranks = 1);  // ("run", "experience")
  ExperienceBuffers(const PpoConfig& config, Precision precision, const Arena& arena, int64_t ranks = 1);
};

// The rollout batch of `prompts` and their responses (generated, or forced with no log-probs):
// seq (pad = stop_token_ids[0], the EOS), response_ids, response_mask, sampler_logp (0 when not
// given), ended_with_eos (the last token is a stop token). Errors name the row: an empty prompt or
// response, one too long, an id outside [0, vocab), a response that goes on after a stop token.
Experience experience_of(const std::vector<std::vector<int32_t>>& prompts, const SampledResponses& responses, int64_t P,
                         int64_t R, const std::vector<int32_t>& stop_token_ids, int64_t vocab);

struct ScoringModels {
  Transformer* policy = nullptr;
  Transformer* reference = nullptr;
  Transformer* reward = nullptr;  // null when `reward_fn` gives the scores
  Transformer* value = nullptr;   // the value model, the policy (value head on its trunk), or null (no
                                  // critic: values are 0)
};

// Rows `rows` of `exp` (a rank's share; all of them on one rank): the device copies of old_logp,
// ref_logp and values in `buf` (0 on padding), and exp.entropy and (with a reward model) exp.scores
// (sized B, 0 on the other rows). The cost of each model's pass is added to the four outputs (may be
// null). gather_scored then brings every row to every rank and to exp.
void score_experience(Backend& backend, const PpoConfig& config, const ScoringModels& models, ExperienceBuffers& buf,
                      Experience& exp, Share rows, PhaseCost* old_logp, PhaseCost* reference, PhaseCost* reward,
                      PhaseCost* value);
// Ranks meet: every rank's rows of old_logp, ref_logp, values (device all-gather in `buf`; ranks
// take equal shares, in rank order), of exp.scores and exp.entropy (host); then exp.old_logp,
// ref_logp and values are read from `buf`: every rank holds the whole scored batch.
void gather_scored(Communicator& ranks, Backend& backend, ExperienceBuffers& buf, Experience& exp);
// Ranks meet: every rank's sampled responses (its rows of the batch, in rank order), on every rank.
SampledResponses gather_sampled(const Communicator& ranks, const SampledResponses& mine);

// Step 4 on the device copies of `buf`: the KL and the shaped rewards of `exp` (its scores set);
// host copies into exp.kl, exp.rewards, exp.reward_stats.
void reward_experience(Backend& backend, const RewardSettings& settings, ExperienceBuffers& buf, Experience& exp);
// Step 5 on the device copies of `buf`: host copies into exp.advantages, exp.returns,
// exp.advantage_stats.
void advantage_experience(Backend& backend, const AdvantageSettings& settings, ExperienceBuffers& buf, Experience& exp);

}  // namespace ppo
