#include "ppo/update.h"

#include <cmath>
#include <numeric>
#include "engine/error.h"
#include "engine/philox.h"
#include "models/transformer.h"

namespace ppo {

namespace {

// The micro-batch's inputs over all T columns, gathered on the device from the whole batch's
// tensors, rows `rows` (a slice of buf.order): the sequences (ppo/sequences.h), and the per-token
// quantities of response token t at column P-1+t (0 and loss mask 0 elsewhere: prepare_micro_batches).
SequenceTensors gather_micro_batch(Backend& be, ExperienceBuffers& buf, Tensor rows, int64_t P, int64_t T) {
  const int64_t n = rows.numel();
  SequenceTensors in = sequence_views(buf.mb, n, T);
  for (auto [dst, src] : {std::pair{in.tokens, buf.seq.tokens}, std::pair{in.pos, buf.seq.pos},
                          std::pair{in.mask, buf.seq.mask}, std::pair{in.targets, buf.seq.targets}})
    be.gather_rows(dst, 0, src, rows);
  for (auto [dst, src] : {std::pair{buf.mb_loss_mask, buf.response_mask}, std::pair{buf.mb_old_logp, buf.old_logp},
                          std::pair{buf.mb_ref_logp, buf.ref_logp}, std::pair{buf.mb_old_values, buf.values},
                          std::pair{buf.mb_advantages, buf.advantages}, std::pair{buf.mb_returns, buf.returns}})
    be.gather_rows(dst.slice0(0, n), P - 1, src, rows);
  return in;
}

// Once per update: every epoch's row order (E,B) and the per-row loss weights of every row go to
// the device, and the columns no gather writes are 0 (loss mask 0).
void prepare_micro_batches(Backend& be, ExperienceBuffers& buf, const Experience& exp, LossAggMode mode,
                           const std::vector<std::vector<int32_t>>& orders) {
  std::vector<int32_t> all;
  for (const std::vector<int32_t>& o : orders) all.insert(all.end(), o.begin(), o.end());
  be.from_host_ids(buf.order.reshape({buf.order.numel()}).slice0(0, int64_t(all.size())), all);
  if (mode == LossAggMode::SeqMeanTokenMean)
    be.from_host(buf.row_scale.slice0(0, exp.B), loss_weights(mode, exp.response_mask, exp.R, row_range(0, exp.B)).row);
  for (Tensor t :
       {buf.mb_loss_mask, buf.mb_old_logp, buf.mb_ref_logp, buf.mb_old_values, buf.mb_advantages, buf.mb_returns})
    be.zero(t);
}

// Slots of buf.sums (kUpdateSums): what one minibatch adds up on the device and the host reads once.
constexpr int64_t kPolicySums = 0, kValueSums = 5, kEntropySums = 8, kPolicyGradSumsq = 10, kValueGradSumsq = 11;

bool finite(double x) { return std::isfinite(x); }

}  // namespace

LossWeights loss_weights(LossAggMode mode, const std::vector<int32_t>& response_mask, int64_t R,
                         const std::vector<int32_t>& rows) {
  LossWeights w;
  w.denominator = mode == LossAggMode::TokenMean ? 0.0 : double(rows.size());
  for (int32_t b : rows) {
    double length = 0;
    for (int64_t t = 0; t < R; ++t) length += response_mask[size_t(b * R + t)];
    if (mode == LossAggMode::TokenMean) w.denominator += length;
    if (mode == LossAggMode::SeqMeanTokenMean) w.row.push_back(float(1.0 / length));
  }
  return w;
}

UpdateStats ppo_update(Backend& be, const PpoConfig& cfg, const UpdateModels& models, ExperienceBuffers& buf,
                       const Experience& exp, int64_t step, double kl_coef, int64_t& optimizer_step, UpdateTrace* trace,
                       Communicator& ranks) {
  const int64_t B = exp.B, P = exp.P, R = exp.R, T = exp.T();
  const int64_t M = cfg.minibatch_size, mbs = cfg.micro_batch_size;
  PPO_ASSERT(B == cfg.rollout_batch_size, "update: ", B, " rollouts, the config's rollout_batch_size is ",
             cfg.rollout_batch_size);
  Transformer& policy = *models.policy;
  Transformer* critic = models.value;
  Transformer* value = critic == &policy ? nullptr : critic;  // a separate value model
  const float inv_t = 1.0f / cfg.temperature;
  const bool entropy_bonus = cfg.entropy_coef > 0;
  PPO_ASSERT(!trace || ranks.size() == 1, "update: the trace is written by a one-rank run");
  // this rank's micro-batches of every minibatch (the ranks split each minibatch; the minibatch is global)
  const Share micro_batches = ranks.share(M / mbs);
  UpdateStats st;

  std::vector<std::vector<int32_t>> orders;
  for (int64_t epoch = 0; epoch < cfg.ppo_epochs; ++epoch)
    orders.push_back(philox_permutation(B, cfg.seed, kShuffleStream + uint64_t(step * cfg.ppo_epochs + epoch)));
  prepare_micro_batches(be, buf, exp, cfg.loss_agg_mode, orders);
  const Tensor sums = buf.sums;
  auto sum_slots = [&](int64_t first, int64_t count) { return sums.slice0(first, first + count); };

  for (int64_t epoch = 0; epoch < cfg.ppo_epochs; ++epoch) {
    const std::vector<int32_t>& order = orders[size_t(epoch)];
    const Tensor epoch_rows = buf.order.slice0(epoch, epoch + 1).reshape({B});
    for (int64_t k = 0; k < cfg.num_minibatches; ++k) {
      const std::vector<int32_t> rows(order.begin() + k * M, order.begin() + (k + 1) * M);
      const LossWeights w = loss_weights(cfg.loss_agg_mode, exp.response_mask, R, rows);
      const float policy_weight = float(1.0 / w.denominator), value_weight = float(cfg.value_loss_coef / w.denominator);
      const bool traced = trace && k == 0 && (epoch == 0 || trace->all_epochs);
      std::vector<float> traced_logp, traced_ratio;
      be.zero(sums);

      for (int64_t start = micro_batches.begin * mbs; start < micro_batches.end * mbs; start += mbs) {
        const std::vector<int32_t> micro(rows.begin() + start, rows.begin() + start + mbs);
        const int64_t n = int64_t(micro.size());
        const Tensor micro_rows = epoch_rows.slice0(k * M + start, k * M + start + n);
        const SequenceTensors in = gather_micro_batch(be, buf, micro_rows, P, T);
        Tensor row_scale;
        if (!w.row.empty()) {
          row_scale = buf.mb_row_scale.slice0(0, n);
          be.gather_rows(row_scale.reshape({n, 1}), 0, buf.row_scale, micro_rows);
        }
        Tensor loss_mask = buf.mb_loss_mask.slice0(0, n), logp = buf.mb_logp.slice0(0, n);
        Tensor entropy = buf.mb_entropy.slice0(0, n), dlogp = buf.mb_dlogp.slice0(0, n);
        Tensor values = buf.mb_values.slice0(0, n), dvalues = buf.mb_dvalues.slice0(0, n);

        // policy: clipped surrogate (+ KL loss) (+ entropy bonus)
        policy.forward(in.tokens, in.pos, in.mask);
        policy.lm_logprobs(in.targets, inv_t, logp, entropy, P - 1);  // response positions only
        be.ppo_policy_loss(dlogp, sum_slots(kPolicySums, 5), logp, buf.mb_old_logp.slice0(0, n),
                           buf.mb_advantages.slice0(0, n), loss_mask, cfg.clip_eps, cfg.dual_clip, policy_weight);
        if (!cfg.kl_in_reward)
          be.kl_penalty_backward(dlogp, logp, buf.mb_ref_logp.slice0(0, n), loss_mask, cfg.kl_estimator,
                                 float(kl_coef) * policy_weight);
        be.masked_sum(sum_slots(kEntropySums, 2), entropy, loss_mask);
        Tensor dentropy;
        if (entropy_bonus) {
          dentropy = buf.mb_dentropy.slice0(0, n);
          be.fill(dentropy, -cfg.entropy_coef * policy_weight);
          be.masked_affine(dentropy, loss_mask, 0.0f, 1.0f);
        }
        if (!row_scale.empty()) {
          be.scale_rows(dlogp, row_scale);
          if (entropy_bonus) be.scale_rows(dentropy, row_scale);
        }
        policy.lm_logprobs_backward(dlogp, dentropy, inv_t);

        // value: clipped value loss, on the policy trunk or the value model (none without a critic)
        if (value || !critic) policy.backward();
        if (critic) {
          if (value) value->forward(in.tokens, in.pos, in.mask);
          critic->scalar(values);
          be.ppo_value_loss(dvalues, sum_slots(kValueSums, 3), values, buf.mb_old_values.slice0(0, n),
                            buf.mb_returns.slice0(0, n), loss_mask, cfg.clip_value, value_weight);
          if (!row_scale.empty()) be.scale_rows(dvalues, row_scale);
          critic->scalar_backward(dvalues);
          critic->backward();
        }
        if (traced) {
          const std::vector<float> lp = be.to_host(logp);
          for (int64_t i = 0; i < n; ++i) {
            const int32_t b = micro[size_t(i)];
            for (int64_t t = 0; t < R; ++t) {
              const size_t r = size_t(b * R + t);
              const bool m = exp.response_mask[r];
              const float l = lp[size_t(i * T + P - 1 + t)];
              traced_logp.push_back(m ? l : 0.0f);
              traced_ratio.push_back(m ? float(std::exp(double(l) - double(exp.old_logp[r]))) : 0.0f);
            }
          }
        }
      }

      // Ranks meet (ZeRO-1): the gradients summed into each rank's shard, the loss sums and the
      // gradients' sums of squares over every rank; all of it read once. Every rank reads the same
      // sums, so every rank takes the same decisions below.
      policy.reduce_gradients();
      if (value) value->reduce_gradients();
      ranks.all_reduce(sum_slots(0, kPolicyGradSumsq));
      be.copy(sum_slots(kPolicyGradSumsq, 1), policy.grad_sum_squares());
      if (value) be.copy(sum_slots(kValueGradSumsq, 1), value->grad_sum_squares());
      const std::vector<double> s = be.to_host_f64(sums);
      const PolicyLossSums pl{s[kPolicySums], s[kPolicySums + 1], s[kPolicySums + 2], s[kPolicySums + 3],
                              s[kPolicySums + 4]};
      const ValueLossSums vl{s[kValueSums], s[kValueSums + 1], s[kValueSums + 2]};
      st.policy_loss += pl.loss, st.clipped += pl.clipped, st.approx_kl += pl.approx_kl, st.ratio += pl.ratio;
      st.entropy += s[kEntropySums], st.tokens += pl.count;
      st.value_loss += vl.loss, st.value_clipped += vl.clipped;
      st.policy_grad_norm = std::sqrt(s[kPolicyGradSumsq]);
      st.value_grad_norm = value ? std::sqrt(s[kValueGradSumsq]) : 0.0;

      if (traced) {
        if (epoch == 0) {
          trace->minibatch_indices = rows;
          trace->new_logp = traced_logp;
          trace->ratio = traced_ratio;
          trace->policy_loss = pl.loss / pl.count;
          trace->value_loss = vl.loss / pl.count;
        }
        trace->epoch_indices.push_back(rows);
        trace->epoch_new_logp.push_back(traced_logp);
        trace->epoch_ratio.push_back(traced_ratio);
      }

      // NaN/Inf anywhere (a non-finite term on any rank makes its sum non-finite on every rank): no
      // optimizer step from here on (weights untouched), reported
      const bool ok = finite(pl.loss) && finite(pl.ratio) && finite(vl.loss) && finite(s[kEntropySums]) &&
                      finite(st.policy_grad_norm) && finite(st.value_grad_norm);
      if (!ok) {
        policy.zero_grad();
        if (value) value->zero_grad();
        st.skipped = true;
        return st;
      }
      const double factor = cfg.lr_factor(optimizer_step);
      AdamWParams hp;
      hp.beta1 = cfg.adam_beta1, hp.beta2 = cfg.adam_beta2, hp.eps = cfg.adam_eps, hp.weight_decay = cfg.weight_decay;
      hp.step = optimizer_step + 1;
      hp.lr = float(cfg.learning_rate * factor);
      const uint64_t seed = cfg.seed + kAdamSeedOffset + 2 * uint64_t(optimizer_step);
      policy.adamw_step(hp, cfg.max_grad_norm, seed);
      policy.zero_grad();
      if (value) {
        hp.lr = float(cfg.value_learning_rate * factor);
        value->adamw_step(hp, cfg.max_grad_norm, seed + 1);
        value->zero_grad();
      }
      ++optimizer_step;
      ++st.optimizer_steps;
    }
  }
  return st;
}

}  // namespace ppo
