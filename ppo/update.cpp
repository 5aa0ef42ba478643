#include "ppo/update.h"

#include <cmath>
#include <numeric>
#include "engine/error.h"
#include "engine/philox.h"
#include "models/transformer.h"

namespace ppo {

namespace {

// The micro-batch's inputs over all T columns, rows in `rows` order: the sequences
// (ppo/sequences.h), and the per-token quantities of response token t at column P-1+t (0 and loss
// mask 0 elsewhere).
SequenceTensors upload_micro_batch(Backend& be, ExperienceBuffers& buf, const Experience& exp,
                                   const std::vector<int32_t>& rows) {
  const int64_t n = int64_t(rows.size()), P = exp.P, R = exp.R, T = exp.T();
  std::vector<int32_t> loss_mask(size_t(n * T), 0);
  std::vector<float> old_logp(size_t(n * T), 0), ref_logp(size_t(n * T), 0), old_values(size_t(n * T), 0),
      advantages(size_t(n * T), 0), returns(size_t(n * T), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = rows[size_t(i)];
    for (int64_t t = 0; t < R; ++t) {
      const size_t src = size_t(b * R + t), dst = size_t(i * T + P - 1 + t);
      loss_mask[dst] = exp.response_mask[src];
      old_logp[dst] = exp.old_logp[src];
      ref_logp[dst] = exp.ref_logp[src];
      old_values[dst] = exp.values[src];
      advantages[dst] = exp.advantages[src];
      returns[dst] = exp.returns[src];
    }
  }
  be.from_host_ids(buf.mb_loss_mask.slice0(0, n), loss_mask);
  be.from_host(buf.mb_old_logp.slice0(0, n), old_logp);
  be.from_host(buf.mb_ref_logp.slice0(0, n), ref_logp);
  be.from_host(buf.mb_old_values.slice0(0, n), old_values);
  be.from_host(buf.mb_advantages.slice0(0, n), advantages);
  be.from_host(buf.mb_returns.slice0(0, n), returns);
  return upload_sequences(be, exp.seq, rows, buf.mb);
}

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
                       const Communicator& ranks) {
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

  for (int64_t epoch = 0; epoch < cfg.ppo_epochs; ++epoch) {
    const std::vector<int32_t> order =
        philox_permutation(B, cfg.seed, kShuffleStream + uint64_t(step * cfg.ppo_epochs + epoch));
    for (int64_t k = 0; k < cfg.num_minibatches; ++k) {
      const std::vector<int32_t> rows(order.begin() + k * M, order.begin() + (k + 1) * M);
      const LossWeights w = loss_weights(cfg.loss_agg_mode, exp.response_mask, R, rows);
      const float policy_weight = float(1.0 / w.denominator), value_weight = float(cfg.value_loss_coef / w.denominator);
      const bool traced = trace && k == 0 && (epoch == 0 || trace->all_epochs);
      std::vector<float> traced_logp, traced_ratio;
      double traced_pl = 0, traced_vl = 0, traced_tokens = 0;
      bool ok = true;

      for (int64_t start = micro_batches.begin * mbs; start < micro_batches.end * mbs; start += mbs) {
        const std::vector<int32_t> micro(rows.begin() + start, rows.begin() + start + mbs);
        const int64_t n = int64_t(micro.size());
        const SequenceTensors in = upload_micro_batch(be, buf, exp, micro);
        Tensor row_scale;
        if (!w.row.empty()) {
          row_scale = buf.mb_row_scale.slice0(0, n);
          be.from_host(row_scale, std::vector<float>(w.row.begin() + start, w.row.begin() + start + n));
        }
        Tensor loss_mask = buf.mb_loss_mask.slice0(0, n), logp = buf.mb_logp.slice0(0, n);
        Tensor entropy = buf.mb_entropy.slice0(0, n), dlogp = buf.mb_dlogp.slice0(0, n);
        Tensor values = buf.mb_values.slice0(0, n), dvalues = buf.mb_dvalues.slice0(0, n);

        // policy: clipped surrogate (+ KL loss) (+ entropy bonus)
        policy.forward(in.tokens, in.pos, in.mask);
        policy.lm_logprobs(in.targets, inv_t, logp, entropy, P - 1);  // response positions only
        const PolicyLossSums pl = be.ppo_policy_loss(dlogp, logp, buf.mb_old_logp.slice0(0, n),
                                                     buf.mb_advantages.slice0(0, n), loss_mask, cfg.clip_eps,
                                                     cfg.dual_clip, policy_weight);
        if (!cfg.kl_in_reward)
          be.kl_penalty_backward(dlogp, logp, buf.mb_ref_logp.slice0(0, n), loss_mask, cfg.kl_estimator,
                                 float(kl_coef) * policy_weight);
        const MaskedMoments ent = be.masked_moments(entropy, loss_mask);
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
        ValueLossSums vl;
        if (value || !critic) policy.backward();
        if (critic) {
          if (value) value->forward(in.tokens, in.pos, in.mask);
          critic->scalar(values);
          vl = be.ppo_value_loss(dvalues, values, buf.mb_old_values.slice0(0, n), buf.mb_returns.slice0(0, n),
                                 loss_mask, cfg.clip_value, value_weight);
          if (!row_scale.empty()) be.scale_rows(dvalues, row_scale);
          critic->scalar_backward(dvalues);
          critic->backward();
        }

        ok = ok && finite(pl.loss) && finite(pl.ratio) && finite(vl.loss) && finite(ent.mean);
        st.policy_loss += pl.loss, st.clipped += pl.clipped, st.approx_kl += pl.approx_kl, st.ratio += pl.ratio;
        st.entropy += ent.mean * ent.count, st.tokens += pl.count;
        st.value_loss += vl.loss, st.value_clipped += vl.clipped;
        if (traced) {
          traced_pl += pl.loss, traced_vl += vl.loss, traced_tokens += pl.count;
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

      if (traced) {
        if (epoch == 0) {
          trace->minibatch_indices = rows;
          trace->new_logp = traced_logp;
          trace->ratio = traced_ratio;
          trace->policy_loss = traced_pl / traced_tokens;
          trace->value_loss = traced_vl / traced_tokens;
        }
        trace->epoch_indices.push_back(rows);
        trace->epoch_new_logp.push_back(traced_logp);
        trace->epoch_ratio.push_back(traced_ratio);
      }

      // NaN/Inf anywhere: no optimizer step from here on (weights untouched), reported. Ranks meet:
      // the decision is every rank's; the gradients are summed into each rank's shard (ZeRO-1)
      ok = ranks.host_all(ok);
      if (ok) {
        policy.reduce_gradients();
        if (value) value->reduce_gradients();
        st.policy_grad_norm = policy.grad_norm();
        st.value_grad_norm = value ? value->grad_norm() : 0.0;
        ok = finite(st.policy_grad_norm) && finite(st.value_grad_norm);
      }
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

void sum_over_ranks(const Communicator& ranks, UpdateStats& st) {
  double sums[] = {st.policy_loss, st.clipped, st.approx_kl,  st.ratio,
                   st.entropy,     st.tokens,  st.value_loss, st.value_clipped};
  ranks.host_sum(sums, std::size(sums));
  st.policy_loss = sums[0], st.clipped = sums[1], st.approx_kl = sums[2], st.ratio = sums[3];
  st.entropy = sums[4], st.tokens = sums[5], st.value_loss = sums[6], st.value_clipped = sums[7];
}

}  // namespace ppo
