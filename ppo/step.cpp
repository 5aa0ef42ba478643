// One PPO step, top to bottom (DESIGN.md "The PPO step"; read it as cleanRL's ppo.py). Each phase
// is one named call; the math lives in the file it names. B = rollout_batch_size rows per step.
//
//   1. prompts     next_prompts    ppo/prompts.h     B / G prompts of the stream, each G times in a row
//   2. generate    rollout         ppo/generate.h    a response per prompt, sampled by the policy
//   3. score       score           ppo/experience.h  old-policy and reference log-probs, values, and
//                                                    the reward model's (or the callback's) scores
//   4. rewards     add_rewards     ppo/rewards.h     per-token KL; the shaped score on the last token
//   5. advantages  add_advantages  ppo/advantages.h  the estimator: gae | grpo | rloo | reinforce_pp
//   6. update      update          ppo/update.h      epochs x minibatches x micro-batches: clipped
//                                                    surrogate (+ KL loss), value loss (a critic),
//                                                    aggregated by loss_agg_mode; AdamW
// then the KL controller sees the batch's KL, and the step's metrics row (ppo/step_metrics.h).
//
// Data parallel (ranks, engine/communicator.h): the batch is global. Each rank generates and scores
// its share of the rows (Philox streams by global row: a row samples the same tokens on any number
// of ranks). Ranks meet where the comments say so: after generation and after scoring every rank
// holds the whole batch, so steps 4-5, the KL controller and the metrics are the one-rank run's;
// in the update, at every optimizer step (ppo/update.h), and for its loss sums.
#include <cmath>
#include "engine/error.h"
#include "ppo/experience.h"
#include "ppo/generate.h"
#include "ppo/trace.h"
#include "ppo/trainer.h"
#include "ppo/update.h"

namespace ppo {

MetricsRow PpoTrainer::step() {
  times_ = PhaseTimes{};
  UpdateStats u;
  Experience exp;
  timed(*backend_, &times_.total, [&] {
    // 1. prompts (the whole batch, on every rank)
    const std::vector<std::vector<int32_t>> prompts = next_prompts();
    // 2. generate: this rank's rows; ranks meet: every rank gets every response
    exp = rollout(prompts, nullptr);
    // 3. score: this rank's rows; ranks meet: every rank gets every row's log-probs, values, scores
    score(exp);
    // 4. rewards (the whole batch: global statistics, the same on every rank)
    add_rewards(exp);
    // 5. advantages (the whole batch)
    add_advantages(exp);
    // 6. update (not on a batch with a NaN/Inf: the step is skipped, and reported): each rank its
    //    micro-batches of each minibatch; ranks meet at every optimizer step, then for the loss sums
    if (exp.finite()) u = update(exp);
    // the KL coefficient of the next step (adaptive control) sees this batch's KL
    if (exp.finite()) kl_.update(exp.reward_stats.kl, exp.B);
  });
  ++progress_.steps_done;
  metrics_.push_back(step_metrics(cfg_, progress_.steps_done, progress_.optimizer_steps_done, exp, u, times_,
                                  prompts_.is_demo_task()));
  if (cfg_.save_every > 0 && progress_.steps_done % cfg_.save_every == 0) save_checkpoint(cfg_.output_dir + "/checkpoints");
  return metrics_.back();
}

Experience PpoTrainer::make_experience(const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<std::vector<int32_t>>* responses) {
  times_ = PhaseTimes{};
  Experience exp = rollout(prompts, responses);
  score(exp);
  add_rewards(exp);
  add_advantages(exp);
  return exp;
}

// ---- the phases ---------------------------------------------------------------------------------------

// B / G prompts of the stream, each G = samples_per_prompt times in a row (a group).
std::vector<std::vector<int32_t>> PpoTrainer::next_prompts() {
  std::vector<std::vector<int32_t>> rows;
  for (int64_t i = 0; i < cfg_.prompts_per_step; ++i) {
    const std::vector<int32_t> prompt = prompts_.prompt(progress_.next_example++);
    for (int64_t g = 0; g < cfg_.samples_per_prompt; ++g) rows.push_back(prompt);
  }
  return rows;
}

// Sampling streams: step s draws token t of row b (of the whole batch) from Philox stream
// (s*R + t)*B + b, on any number of ranks. This rank samples its share of the rows.
Experience PpoTrainer::rollout(const std::vector<std::vector<int32_t>>& prompts,
                               const std::vector<std::vector<int32_t>>* responses) {
  PPO_ASSERT(int64_t(prompts.size()) <= cfg_.rollout_batch_size, "rollout: ", prompts.size(),
             " prompts exceed rollout_batch_size = ", cfg_.rollout_batch_size);
  PPO_ASSERT(int64_t(prompts.size()) % comm_->size() == 0, "rollout: ", prompts.size(),
             " prompts do not split evenly over ", comm_->size(), " ranks");
  SampledResponses sampled;
  timed(*backend_, &times_.sampling, [&] {
    if (responses) {
      sampled.responses = *responses;  // forced: no log-probs
      return;
    }
    const Share mine = comm_->share(int64_t(prompts.size()));
    SamplingSettings settings = SamplingSettings::from_config(
        cfg_, stop_ids_, uint64_t(progress_.steps_done * cfg_.response_length), opt_.fixed_response_length);
    settings.first_row = uint64_t(mine.begin);
    settings.row_stride = uint64_t(cfg_.rollout_batch_size);
    const std::vector<std::vector<int32_t>> my_prompts(prompts.begin() + mine.begin, prompts.begin() + mine.end);
    sampled = gather_sampled(*comm_, generate(*backend_, *policy_, buffers_->gen, my_prompts, eos_, settings));
  });
  return experience_of(prompts, sampled, cfg_.prompt_length, cfg_.response_length, stop_ids_,
                       policy_->config().vocab_size);
}

void PpoTrainer::score(Experience& exp) {
  const ScoringModels models{policy_.get(), reference_.get(), opt_.reward ? nullptr : reward_.get(), critic()};
  const Share mine = comm_->share(exp.B);
  score_experience(*backend_, cfg_, models, *buffers_, exp, mine, &times_.old_logp, &times_.reference, &times_.reward,
                   &times_.value);
  if (opt_.reward) {
    timed(*backend_, &times_.reward, [&] {
      exp.scores.assign(size_t(exp.B), 0.0f);
      for (int64_t b = mine.begin; b < mine.end; ++b) {
        const std::vector<int32_t> r = exp.response(b);
        exp.scores[size_t(b)] = float(opt_.reward(exp.prompts[size_t(b)], r, prompts_.decode(r)));
      }
    });
  }
  gather_scored(*comm_, *backend_, *buffers_, exp);  // ranks meet
}

// With normalize_scores the scores are normalized by the running moments with this batch merged
// in; the merge is kept for a finite batch only (a NaN would stay in the moments for good).
void PpoTrainer::add_rewards(Experience& exp) {
  RewardSettings settings = RewardSettings::from_config(cfg_, kl_.coef());
  RunningMoments moments = score_moments_;
  if (cfg_.normalize_scores) {
    moments.update(exp.scores);
    settings.score_shift = moments.mean;
    settings.score_scale = 1.0 / std::sqrt(moments.var() + 1e-8);
  }
  exp.kl_coef = kl_.coef();
  timed(*backend_, &times_.advantages, [&] { reward_experience(*backend_, settings, *buffers_, exp); });
  if (exp.finite()) score_moments_ = moments;
}

void PpoTrainer::add_advantages(Experience& exp) {
  timed(*backend_, &times_.advantages,
        [&] { advantage_experience(*backend_, AdvantageSettings::from_config(cfg_), *buffers_, exp); });
}

// The first step of a run with TrainerOptions::trace_dir writes its tensors (ppo/trace.h).
UpdateStats PpoTrainer::update(const Experience& exp) {
  UpdateTrace trace;
  trace.all_epochs = true;
  const bool tracing = !opt_.trace_dir.empty() && progress_.steps_done == 0;
  UpdateStats u;
  timed(*backend_, &times_.train, [&] {
    u = ppo_update(*backend_, cfg_, {policy_.get(), critic()}, *buffers_, exp, progress_.steps_done, exp.kl_coef,
                   progress_.optimizer_steps_done, tracing ? &trace : nullptr, *comm_);
  });
  if (tracing) write_trace(opt_.trace_dir, cfg_, eos_, exp, trace);
  return u;
}

}  // namespace ppo
