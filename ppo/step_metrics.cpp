#include "ppo/step_metrics.h"

#include <algorithm>
#include <cmath>
#include "ppo/demo_task.h"

namespace ppo {

MetricsRow step_metrics(const PpoConfig& config, int64_t step, int64_t optimizer_steps, const Experience& exp,
                        const UpdateStats& update, const PhaseTimes& times, bool gold) {
  const RewardStats& r = exp.reward_stats;
  const AdvantageStats& a = exp.advantage_stats;
  MetricsRow row;
  const double B = double(exp.B), tokens = update.tokens > 0 ? update.tokens : NAN;
  double entropy = 0;
  for (float e : exp.entropy) entropy += e;
  row.set(metric::kStep, double(step));
  row.set(metric::kEpisode, double(step) * B);
  row.set(metric::kKl, r.kl);
  row.set(metric::kKlCoef, exp.kl_coef);
  row.set(metric::kEntropy, entropy / B);
  row.set(metric::kNonScoreReward, r.non_score_reward);
  row.set(metric::kRlhfReward, r.rlhf_reward);
  row.set(metric::kScores, r.score);
  if (gold) {
    double sum = 0;
    for (int64_t b = 0; b < exp.B; ++b) sum += DemoTask::gold_reward(exp.prompts[size_t(b)], exp.response(b));
    row.set(metric::kGoldScores, sum / B);
  }
  row.set(metric::kPolicyClipfrac, update.clipped / tokens);
  row.set(metric::kApproxKl, update.approx_kl / tokens);
  row.set(metric::kRatio, update.ratio / tokens);
  row.set(metric::kPolicyEntropy, update.entropy / tokens);
  row.set(metric::kPolicyLoss, update.policy_loss / tokens);
  const bool critic = config.has_critic();  // the value metrics of a run with a critic only
  if (critic) row.set(metric::kValueLoss, update.value_loss / tokens);
  if (critic) row.set(metric::kValueClipfrac, update.value_clipped / tokens);
  if (critic) row.set(metric::kExplainedVariance, a.explained_variance);
  row.set(metric::kNumEos, r.num_eos);
  row.set(metric::kResponseLength, r.response_length);
  row.set("objective/advantage_mean", a.advantage_mean);
  row.set("objective/advantage_std", a.advantage_std);
  row.set("val/return_mean", a.return_mean);
  row.set("val/return_std", a.return_std);
  row.set("policy/grad_norm", update.policy_grad_norm);
  if (critic) row.set("val/grad_norm", update.value_grad_norm);
  const double factor = config.lr_factor(std::max<int64_t>(0, optimizer_steps - 1));
  row.set(metric::kLr, config.learning_rate * factor);
  if (critic) row.set(metric::kValueLr, config.value_learning_rate * factor);
  row.set(metric::kRolloutSeconds, times.sampling.seconds);
  row.set(metric::kScoreSeconds, times.old_logp.seconds + times.reference.seconds + times.reward.seconds + times.value.seconds + times.advantages.seconds);
  row.set(metric::kTrainSeconds, times.train.seconds);
  row.set(metric::kStepSeconds, times.total.seconds);
  row.set("time/old_logp_s", times.old_logp.seconds);
  row.set("time/reference_s", times.reference.seconds);
  row.set("time/reward_s", times.reward.seconds);
  row.set("time/value_s", times.value.seconds);
  row.set("time/advantages_s", times.advantages.seconds);
  row.set(metric::kSkipped, (!exp.finite() || update.skipped) ? 1.0 : 0.0);
  return row;
}

}  // namespace ppo
