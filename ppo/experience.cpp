#include "ppo/experience.h"

#include <cmath>

#include "engine/error.h"
#include "models/plan.h"
#include "models/transformer.h"

namespace ppo {

namespace {


bool all_finite(const std::vector<float>& x) {
  for (float v : x)
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

bool Experience::finite() const {
  return reward_stats.finite && advantage_stats.finite && all_finite(old_logp) && all_finite(ref_logp) &&
         all_finite(values) && all_finite(scores) && all_finite(entropy);
}

std::vector<int32_t> Experience::response(int64_t b) const {
  std::vector<int32_t> r;
  for (int64_t t = 0; t < R && response_mask[size_t(b * R + t)]; ++t) r.push_back(response_ids[size_t(b * R + t)]);
  return r;
}

// ---- buffers ----------------------------------------------------------------------------------------

std::vector<TensorSpec> ExperienceBuffers::specs(const PpoConfig& c, Precision p, int64_t ranks) {
  const DType stat = grad_dtype_of(p), ids = DType::I32;
  const int64_t B = c.rollout_batch_size, P = c.prompt_length, R = c.response_length, T = P + R, M = c.micro_batch_size;
  std::vector<TensorSpec> t = GenerationBuffers::specs(run_shape(c, ranks).rollout_batch, P, T, p);
  for (const char* n : {"seq_tokens", "seq_pos", "seq_mask", "seq_targets"}) t.push_back({n, ids, {B, T}});
  t.push_back({"response_mask", ids, {B, R}});
  for (const char* n : {"old_logp", "ref_logp", "values", "kl", "rewards", "advantages", "returns"}) t.push_back({n, stat, {B, R}});
  t.push_back({"row_scale", stat, {B, 1}});
  t.push_back({"order", ids, {c.ppo_epochs, B}});
  t.push_back({"update_sums", DType::F64, {kUpdateSums}});
  for (const char* n : {"mb_tokens", "mb_pos", "mb_mask", "mb_targets", "mb_loss_mask"}) t.push_back({n, ids, {M, T}});
  for (const char* n : {"mb_logp", "mb_entropy", "mb_values", "mb_old_logp", "mb_ref_logp", "mb_old_values",
                        "mb_advantages", "mb_returns", "mb_dlogp", "mb_dentropy", "mb_dvalues"})
    t.push_back({n, stat, {M, T}});
  t.push_back({"mb_row_scale", stat, {M}});
  return t;
}

RegionSpec ExperienceBuffers::region(const PpoConfig& c, Precision p, int64_t ranks) {
  return {"run", "experience", packed_bytes(specs(c, p, ranks)), Phase::Always};
}

ExperienceBuffers::ExperienceBuffers(const PpoConfig& c, Precision p, const Arena& arena, int64_t ranks) {
  Carver carver = arena.carver("run", "experience");
  gen = GenerationBuffers::carve(carver, run_shape(c, ranks).rollout_batch, c.prompt_length, c.sequence_length, p);
  Tensor* slots[] = {&seq.tokens, &seq.pos,     &seq.mask,    &seq.targets, &response_mask, &old_logp,      &ref_logp,
                     &values,     &kl,          &rewards,     &advantages,  &returns,       &row_scale,     &order,
                     &sums,       &mb.tokens,   &mb.pos,      &mb.mask,     &mb.targets,    &mb_loss_mask,  &mb_logp,
                     &mb_entropy, &mb_values,   &mb_old_logp, &mb_ref_logp, &mb_old_values, &mb_advantages, &mb_returns,
                     &mb_dlogp,   &mb_dentropy, &mb_dvalues,  &mb_row_scale};
  static const std::vector<TensorSpec> names = specs(PpoConfig{}, Precision::F32);  // names outlive the views
  const std::vector<TensorSpec> table = specs(c, p, ranks);
  const size_t first = table.size() - std::size(slots);  // after the generation buffers
  for (size_t i = first; i < table.size(); ++i) *slots[i - first] = carver.take(table[i], names[i].name.c_str());
  PPO_ASSERT(carver.used() == carver.capacity(), "run/experience: carved ", carver.used(), " of ", carver.capacity(), " bytes");
}

// ---- the rollout batch ------------------------------------------------------------------------------

Experience experience_of(const std::vector<std::vector<int32_t>>& prompts, const SampledResponses& g, int64_t P, int64_t R,
                         const std::vector<int32_t>& stop_token_ids, int64_t vocab) {
  PPO_ASSERT(!prompts.empty(), "rollout: no prompts");
  PPO_ASSERT(g.responses.size() == prompts.size() && (g.logp.empty() || g.logp.size() == prompts.size()), "rollout: ",
             g.responses.size(), " responses for ", prompts.size(), " prompts");
  const int64_t B = int64_t(prompts.size());
  const int32_t eos = stop_token_ids.at(0);
  Experience exp;
  exp.B = B, exp.P = P, exp.R = R;
  exp.prompts = prompts;
  exp.response_ids.assign(size_t(B * R), eos);
  exp.response_mask.assign(size_t(B * R), 0);
  exp.sampler_logp.assign(size_t(B * R), 0.0f);
  exp.ended_with_eos.assign(size_t(B), 0);
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t>&p = prompts[size_t(b)], &r = g.responses[size_t(b)];
    for (size_t i = 0; i < p.size(); ++i)
      PPO_ASSERT(p[i] >= 0 && p[i] < vocab, "prompt ", b, " of the batch: token id ", p[i], " at index ", i,
                 " is outside the vocabulary [0,", vocab, ")");
    PPO_ASSERT(!r.empty() && int64_t(r.size()) <= R, "response ", b, " has ", r.size(), " tokens; 1 to response_length = ",
               R, " expected");
    for (size_t t = 0; t < r.size(); ++t) {
      PPO_ASSERT(r[t] >= 0 && r[t] < vocab, "response ", b, ": token id ", r[t], " is outside the vocabulary");
      PPO_ASSERT(!is_stop_token(stop_token_ids, r[t]) || t + 1 == r.size(), "response ", b,
                 " continues after stop token ", r[t]);
      exp.response_ids[size_t(b * R) + t] = r[t];
      exp.response_mask[size_t(b * R) + t] = 1;
      if (!g.logp.empty()) exp.sampler_logp[size_t(b * R) + t] = g.logp[size_t(b)].at(t);
    }
    exp.ended_with_eos[size_t(b)] = is_stop_token(stop_token_ids, r.back());
  }
  exp.seq = pack_sequences(prompts, g.responses, P, R, eos);
  return exp;
}

// ---- scoring ----------------------------------------------------------------------------------------

void score_experience(Backend& be, const PpoConfig& cfg, const ScoringModels& models, ExperienceBuffers& buf,
                      Experience& exp, Share rows, PhaseCost* old_logp_s, PhaseCost* reference_s, PhaseCost* reward_s,
                      PhaseCost* value_s) {
  const int64_t B = exp.B, P = exp.P, R = exp.R, T = exp.T(), M = cfg.micro_batch_size;
  PPO_ASSERT(rows.begin >= 0 && rows.begin <= rows.end && rows.end <= B, "score: rows [", rows.begin, ",", rows.end,
             ") of ", B);
  PPO_ASSERT(B <= buf.old_logp.dim(0), "score: ", B, " rows exceed the planned rollout batch ", buf.old_logp.dim(0));
  const float inv_t = 1.0f / cfg.temperature;
  Tensor mask = buf.response_mask.slice0(0, B);
  be.from_host_ids(mask, exp.response_mask);
  const bool value_on_policy = models.value == models.policy;
  // every row's sequences, once (the update reads them too); this rank scores `rows`
  const SequenceTensors seq = upload_sequences(be, exp.seq, row_range(0, B), buf.seq);
  // One pass of `model` over the micro-batches of `rows`; `per_rows(start, n)` reads its heads.
  auto pass = [&](Transformer& model, auto&& per_rows) {
    for (int64_t start = rows.begin; start < rows.end; start += M) {
      const int64_t n = std::min(M, rows.end - start);
      model.forward(seq.tokens.slice0(start, start + n), seq.pos.slice0(start, start + n),
                    seq.mask.slice0(start, start + n));
      per_rows(seq.targets.slice0(start, start + n), start, n);
    }
  };
  auto response_columns = [&](Tensor dst, Tensor src_T, int64_t start, int64_t n) {
    be.copy_columns(dst.slice0(start, start + n), 0, src_T.slice0(0, n), P - 1, R);
  };

  exp.entropy.assign(size_t(B), 0.0f);
  timed(be, old_logp_s, [&] {
    pass(*models.policy, [&](Tensor targets, int64_t start, int64_t n) {
      models.policy->lm_logprobs(targets, inv_t, buf.mb_logp.slice0(0, n), buf.mb_entropy.slice0(0, n),
                                 P - 1);  // the response positions only
      response_columns(buf.old_logp, buf.mb_logp, start, n);
      const std::vector<float> ent = be.to_host(buf.mb_entropy.slice0(0, n));
      for (int64_t b = 0; b < n; ++b)
        for (int64_t t = 0; t < R; ++t)
          if (exp.response_mask[size_t((start + b) * R + t)]) exp.entropy[size_t(start + b)] += ent[size_t(b * T + P - 1 + t)];
      if (value_on_policy) {
        models.policy->scalar(buf.mb_values.slice0(0, n));
        response_columns(buf.values, buf.mb_values, start, n);
      }
    });
  });
  timed(be, reference_s, [&] {
    pass(*models.reference, [&](Tensor targets, int64_t start, int64_t n) {
      models.reference->lm_logprobs(targets, inv_t, buf.mb_logp.slice0(0, n), Tensor{}, P - 1);
      response_columns(buf.ref_logp, buf.mb_logp, start, n);
    });
  });
  if (models.reward) {
    exp.scores.assign(size_t(B), 0.0f);
    timed(be, reward_s, [&] {
      pass(*models.reward, [&](Tensor, int64_t start, int64_t n) {
        models.reward->scalar(buf.mb_values.slice0(0, n));
        const std::vector<float> v = be.to_host(buf.mb_values.slice0(0, n));
        for (int64_t b = 0; b < n; ++b)  // the last real response token
          exp.scores[size_t(start + b)] = v[size_t(b * T + exp.seq.last_column(start + b))];
      });
    });
  }
  if (!models.value) {
    be.zero(buf.values.slice0(0, B));  // no critic: the estimator reads no values
  } else if (!value_on_policy) {
    timed(be, value_s, [&] {
      pass(*models.value, [&](Tensor, int64_t start, int64_t n) {
        models.value->scalar(buf.mb_values.slice0(0, n));
        response_columns(buf.values, buf.mb_values, start, n);
      });
    });
  }  // else: computed with the old log-probs
  // 0 on padding, as the trace and the peer
  for (Tensor t : {buf.old_logp, buf.ref_logp, buf.values})
    be.masked_affine(t.slice0(rows.begin, rows.end), mask.slice0(rows.begin, rows.end), 0.0f, 1.0f);
}

void gather_scored(Communicator& ranks, Backend& be, ExperienceBuffers& buf, Experience& exp) {
  const int64_t B = exp.B;
  PPO_ASSERT(B % ranks.size() == 0, "score: ", B, " rows do not split evenly over ", ranks.size(), " ranks");
  const Share mine = ranks.share(B);
  for (Tensor t : {buf.old_logp, buf.ref_logp, buf.values}) ranks.all_gather(t.slice0(0, B));
  auto rows_of = [&](const std::vector<float>& v) {
    return ranks.host_gather(std::vector<float>(v.begin() + mine.begin, v.begin() + mine.end));
  };
  exp.entropy = rows_of(exp.entropy);
  if (!exp.scores.empty()) exp.scores = rows_of(exp.scores);
  exp.old_logp = be.to_host(buf.old_logp.slice0(0, B));
  exp.ref_logp = be.to_host(buf.ref_logp.slice0(0, B));
  exp.values = be.to_host(buf.values.slice0(0, B));
}

SampledResponses gather_sampled(const Communicator& ranks, const SampledResponses& mine) {
  if (ranks.size() == 1) return mine;
  // flat: per row its length, then the tokens and log-probs of every row
  std::vector<int32_t> lengths, ids;
  std::vector<float> logp;
  for (size_t b = 0; b < mine.responses.size(); ++b) {
    lengths.push_back(int32_t(mine.responses[b].size()));
    ids.insert(ids.end(), mine.responses[b].begin(), mine.responses[b].end());
    if (!mine.logp.empty()) logp.insert(logp.end(), mine.logp[b].begin(), mine.logp[b].end());
  }
  const std::vector<int32_t> all_lengths = ranks.host_gather(lengths), all_ids = ranks.host_gather(ids);
  const std::vector<float> all_logp = ranks.host_gather(logp);
  SampledResponses all;
  size_t at = 0;
  for (int32_t n : all_lengths) {
    all.responses.emplace_back(all_ids.begin() + at, all_ids.begin() + at + size_t(n));
    if (!all_logp.empty()) all.logp.emplace_back(all_logp.begin() + at, all_logp.begin() + at + size_t(n));
    at += size_t(n);
  }
  return all;
}

void reward_experience(Backend& be, const RewardSettings& settings, ExperienceBuffers& buf, Experience& exp) {
  const int64_t B = exp.B;
  PPO_ASSERT(int64_t(exp.scores.size()) == B, "rewards: ", exp.scores.size(), " scores for ", B, " rows");
  const RewardInputs in{buf.old_logp.slice0(0, B), buf.ref_logp.slice0(0, B), buf.response_mask.slice0(0, B),
                        exp.scores, exp.ended_with_eos};
  RewardsOnHost host;
  exp.reward_stats = compute_rewards(be, settings, in, buf.kl.slice0(0, B), buf.rewards.slice0(0, B), &host);
  exp.kl = std::move(host.kl);
  exp.rewards = std::move(host.rewards);
}

void advantage_experience(Backend& be, const AdvantageSettings& settings, ExperienceBuffers& buf, Experience& exp) {
  const int64_t B = exp.B;
  const Tensor advantages = buf.advantages.slice0(0, B), returns = buf.returns.slice0(0, B);
  exp.advantage_stats = estimate_advantages(be, settings, buf.rewards.slice0(0, B), buf.values.slice0(0, B),
                                            buf.response_mask.slice0(0, B), advantages, returns);
  exp.advantages = be.to_host(advantages);
  exp.returns = be.to_host(returns);
}

}  // namespace ppo
