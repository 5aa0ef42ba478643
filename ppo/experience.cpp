#include "ppo/experience.h"

#include <chrono>
#include <cmath>
#include "engine/error.h"
#include "models/transformer.h"
#include "ppo/kl_controller.h"

namespace ppo {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Rows [start, start+n) of a row-major host array with `width` columns.
template <class V>
V host_rows(const V& all, int64_t width, int64_t start, int64_t n) {
  return V(all.begin() + start * width, all.begin() + (start + n) * width);
}

bool all_finite(const std::vector<float>& x) {
  for (float v : x)
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

std::vector<int32_t> Experience::response(int64_t b) const {
  std::vector<int32_t> r;
  for (int64_t t = 0; t < R && response_mask[size_t(b * R + t)]; ++t) r.push_back(response_ids[size_t(b * R + t)]);
  return r;
}

// ---- buffers ----------------------------------------------------------------------------------------

std::vector<TensorSpec> ExperienceBuffers::specs(const PpoConfig& c, Precision p) {
  const DType stat = grad_dtype_of(p), ids = DType::I32;
  const int64_t B = c.rollout_batch_size, P = c.prompt_length, R = c.response_length, T = P + R, M = c.micro_batch_size;
  std::vector<TensorSpec> t = {
      {"prompt_tokens", ids, {B, P}}, {"prompt_pos", ids, {B, P}}, {"gen_mask", ids, {B, T}},
      {"step_tokens", ids, {B}}, {"step_pos", ids, {B}}, {"step_logp", stat, {B}},
      {"response_mask", ids, {B, R}}};
  for (const char* n : {"old_logp", "ref_logp", "values", "kl", "rewards", "advantages", "returns"}) t.push_back({n, stat, {B, R}});
  for (const char* n : {"mb_tokens", "mb_pos", "mb_mask", "mb_targets", "mb_loss_mask"}) t.push_back({n, ids, {M, T}});
  for (const char* n : {"mb_logp", "mb_entropy", "mb_values", "mb_old_logp", "mb_ref_logp", "mb_old_values",
                        "mb_advantages", "mb_returns", "mb_dlogp", "mb_dentropy", "mb_dvalues"})
    t.push_back({n, stat, {M, T}});
  return t;
}

RegionSpec ExperienceBuffers::region(const PpoConfig& c, Precision p) {
  return {"run", "experience", packed_bytes(specs(c, p)), Phase::Always};
}

ExperienceBuffers::ExperienceBuffers(const PpoConfig& c, Precision p, const Arena& arena) {
  Carver carver = arena.carver("run", "experience");
  Tensor* slots[] = {&prompt_tokens, &prompt_pos, &gen_mask, &step_tokens, &step_pos, &step_logp, &response_mask,
                     &old_logp, &ref_logp, &values, &kl, &rewards, &advantages, &returns,
                     &mb_tokens, &mb_pos, &mb_mask, &mb_targets, &mb_loss_mask,
                     &mb_logp, &mb_entropy, &mb_values, &mb_old_logp, &mb_ref_logp, &mb_old_values,
                     &mb_advantages, &mb_returns, &mb_dlogp, &mb_dentropy, &mb_dvalues};
  static const std::vector<TensorSpec> names = specs(PpoConfig{}, Precision::F32);  // names outlive the views
  const std::vector<TensorSpec> table = specs(c, p);
  PPO_ASSERT(table.size() == std::size(slots), "ExperienceBuffers: table and slots differ");
  for (size_t i = 0; i < table.size(); ++i) *slots[i] = carver.take(table[i], names[i].name.c_str());
  PPO_ASSERT(carver.used() == carver.capacity(), "run/experience: carved ", carver.used(), " of ", carver.capacity(), " bytes");
}

// ---- layout -----------------------------------------------------------------------------------------

void layout_prompts(Experience& exp, const std::vector<std::vector<int32_t>>& prompts, int64_t P, int64_t R,
                    int32_t pad_id, int64_t vocab) {
  PPO_ASSERT(!prompts.empty(), "rollout: no prompts");
  const int64_t B = int64_t(prompts.size());
  exp.B = B, exp.P = P, exp.R = R;
  exp.prompts = prompts;
  exp.prompt_ids.assign(size_t(B * P), pad_id);
  exp.prompt_mask.assign(size_t(B * P), 0);
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t>& p = prompts[size_t(b)];
    const int64_t n = int64_t(p.size());
    PPO_ASSERT(n >= 1, "prompt ", b, " of the batch is empty");
    PPO_ASSERT(n <= P, "prompt ", b, " of the batch has ", n, " tokens, more than prompt_length = ", P);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = p[size_t(i)];
      PPO_ASSERT(id >= 0 && id < vocab, "prompt ", b, " of the batch: token id ", id, " at index ", i,
                 " is outside the vocabulary [0,", vocab, ")");
      exp.prompt_ids[size_t(b * P + P - n + i)] = id;
      exp.prompt_mask[size_t(b * P + P - n + i)] = 1;
    }
  }
}

void layout_sequences(Experience& exp) {
  const int64_t B = exp.B, P = exp.P, R = exp.R, T = exp.T();
  exp.tokens.assign(size_t(B * T), 0);
  exp.pos.assign(size_t(B * T), 0);
  exp.attention.assign(size_t(B * T), 0);
  for (int64_t b = 0; b < B; ++b) {
    int32_t next = 0;  // position of the next real token
    for (int64_t j = 0; j < T; ++j) {
      const size_t i = size_t(b * T + j);
      const bool prompt = j < P;
      exp.tokens[i] = prompt ? exp.prompt_ids[size_t(b * P + j)] : exp.response_ids[size_t(b * R + j - P)];
      exp.attention[i] = prompt ? exp.prompt_mask[size_t(b * P + j)] : 1;
      exp.pos[i] = exp.attention[i] ? next++ : 0;
    }
  }
}

// ---- scoring ----------------------------------------------------------------------------------------

namespace {

// Uploads rows [start, start+n) of the sequences into the micro-batch ids (n,T); targets are the
// next tokens (the last column's target is token 0: its log-prob is never read).
void upload_rows(Backend& be, ExperienceBuffers& buf, const Experience& exp, int64_t start, int64_t n) {
  const int64_t T = exp.T();
  std::vector<int32_t> targets = host_rows(exp.tokens, T, start, n);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t j = 0; j + 1 < T; ++j) targets[size_t(b * T + j)] = targets[size_t(b * T + j + 1)];
    targets[size_t(b * T + T - 1)] = 0;
  }
  be.from_host_ids(buf.mb_tokens.slice0(0, n), host_rows(exp.tokens, T, start, n));
  be.from_host_ids(buf.mb_pos.slice0(0, n), host_rows(exp.pos, T, start, n));
  be.from_host_ids(buf.mb_mask.slice0(0, n), host_rows(exp.attention, T, start, n));
  be.from_host_ids(buf.mb_targets.slice0(0, n), targets);
}

void forward_rows(Transformer& m, ExperienceBuffers& buf, int64_t n) {
  m.forward(buf.mb_tokens.slice0(0, n), buf.mb_pos.slice0(0, n), buf.mb_mask.slice0(0, n));
}

}  // namespace

void score_experience(Backend& be, const PpoConfig& cfg, const ScoringModels& models, ExperienceBuffers& buf,
                      Experience& exp, double* old_logp_s, double* reference_s, double* reward_s, double* value_s) {
  const int64_t B = exp.B, P = exp.P, R = exp.R, T = exp.T(), M = cfg.micro_batch_size;
  PPO_ASSERT(B <= buf.old_logp.dim(0), "score: ", B, " rows exceed the planned rollout batch ", buf.old_logp.dim(0));
  const float inv_t = 1.0f / cfg.temperature;
  Tensor mask = buf.response_mask.slice0(0, B);
  be.from_host_ids(mask, exp.response_mask);
  const bool value_on_policy = models.value == models.policy;
  auto timed = [&](double* out, auto&& body) {
    be.synchronize();
    const auto start = std::chrono::steady_clock::now();
    body();
    be.synchronize();
    if (out) *out = seconds_since(start);
  };
  // One pass of `model` over every micro-batch; `per_rows(start, n)` reads its heads.
  auto pass = [&](Transformer& model, auto&& per_rows) {
    for (int64_t start = 0; start < B; start += M) {
      const int64_t n = std::min(M, B - start);
      upload_rows(be, buf, exp, start, n);
      forward_rows(model, buf, n);
      per_rows(start, n);
    }
  };
  auto response_columns = [&](Tensor dst, Tensor src_T, int64_t start, int64_t n) {
    be.copy_columns(dst.slice0(start, start + n), 0, src_T.slice0(0, n), P - 1, R);
  };

  exp.entropy.assign(size_t(B), 0.0f);
  timed(old_logp_s, [&] {
    pass(*models.policy, [&](int64_t start, int64_t n) {
      models.policy->lm_logprobs(buf.mb_targets.slice0(0, n), inv_t, buf.mb_logp.slice0(0, n), buf.mb_entropy.slice0(0, n),
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
  timed(reference_s, [&] {
    pass(*models.reference, [&](int64_t start, int64_t n) {
      models.reference->lm_logprobs(buf.mb_targets.slice0(0, n), inv_t, buf.mb_logp.slice0(0, n), Tensor{}, P - 1);
      response_columns(buf.ref_logp, buf.mb_logp, start, n);
    });
  });
  if (models.reward) {
    exp.scores.assign(size_t(B), 0.0f);
    timed(reward_s, [&] {
      pass(*models.reward, [&](int64_t start, int64_t n) {
        models.reward->scalar(buf.mb_values.slice0(0, n));
        const std::vector<float> v = be.to_host(buf.mb_values.slice0(0, n));
        for (int64_t b = 0; b < n; ++b) {
          int64_t length = 0;
          while (length < R && exp.response_mask[size_t((start + b) * R + length)]) ++length;
          exp.scores[size_t(start + b)] = v[size_t(b * T + P + length - 1)];  // the last real response token
        }
      });
    });
  }
  if (!value_on_policy) {
    timed(value_s, [&] {
      pass(*models.value, [&](int64_t start, int64_t n) {
        models.value->scalar(buf.mb_values.slice0(0, n));
        response_columns(buf.values, buf.mb_values, start, n);
      });
    });
  } else if (value_s) {
    *value_s = 0;  // computed with the old log-probs
  }
  // 0 on padding, as the trace and the peer
  for (Tensor t : {buf.old_logp, buf.ref_logp, buf.values}) be.masked_affine(t.slice0(0, B), mask, 0.0f, 1.0f);
  exp.old_logp = be.to_host(buf.old_logp.slice0(0, B));
  exp.ref_logp = be.to_host(buf.ref_logp.slice0(0, B));
  exp.values = be.to_host(buf.values.slice0(0, B));
}

void finish_experience(Backend& be, const PpoConfig& cfg, KlController& kl, RunningMoments& score_moments,
                       ExperienceBuffers& buf, Experience& exp) {
  const int64_t B = exp.B;
  PPO_ASSERT(int64_t(exp.scores.size()) == B, "advantages: ", exp.scores.size(), " scores for ", B, " rows");
  exp.kl_coef = kl.coef();
  AdvantageSettings settings = AdvantageSettings::from_config(cfg, kl.coef());
  RunningMoments moments = score_moments;  // kept only when the batch is finite (a skipped step)
  if (cfg.normalize_scores) {
    moments.update(exp.scores);
    settings.score_shift = moments.mean;
    settings.score_scale = 1.0 / std::sqrt(moments.var() + 1e-8);
  }
  const AdvantageInputs in{buf.old_logp.slice0(0, B), buf.ref_logp.slice0(0, B), buf.values.slice0(0, B),
                           buf.response_mask.slice0(0, B), exp.scores, exp.ended_with_eos};
  const AdvantageOutputs out{buf.kl.slice0(0, B), buf.rewards.slice0(0, B), buf.advantages.slice0(0, B),
                             buf.returns.slice0(0, B)};
  exp.stats = compute_advantages(be, settings, in, out);
  exp.kl = be.to_host(out.kl);
  exp.rewards = be.to_host(out.rewards);
  exp.advantages = be.to_host(out.advantages);
  exp.returns = be.to_host(out.returns);
  exp.stats.finite = exp.stats.finite && all_finite(exp.old_logp) && all_finite(exp.ref_logp) &&
                     all_finite(exp.values) && all_finite(exp.scores) && all_finite(exp.entropy);
  if (!exp.stats.finite) return;  // a NaN/Inf would stay in the running statistics for good
  kl.update(exp.stats.kl, B);
  score_moments = moments;
}

}  // namespace ppo
