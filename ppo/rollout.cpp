#include "ppo/rollout.h"

#include <cmath>
#include "engine/error.h"
#include "models/transformer.h"

namespace ppo {

RolloutSettings RolloutSettings::from_config(const PpoConfig& c, std::vector<int32_t> stop_token_ids, int64_t step,
                                             bool fixed_response_length) {
  RolloutSettings s;
  s.response_length = c.response_length;
  s.min_new_tokens = fixed_response_length ? c.response_length : c.min_new_tokens;
  s.temperature = c.temperature;
  s.top_k = c.top_k;
  s.top_p = c.top_p;
  s.stop_token_ids = std::move(stop_token_ids);
  s.seed = c.seed;
  s.step = step;
  return s;
}

void generate(Backend& be, Transformer& policy, ExperienceBuffers& buf, const RolloutSettings& s, Experience& exp) {
  const int64_t B = exp.B, P = exp.P, R = exp.R, T = exp.T(), V = policy.config().vocab_size;
  PPO_ASSERT(R == s.response_length, "generate: response length ", R, " vs ", s.response_length);
  PPO_ASSERT(!s.stop_token_ids.empty(), "generate: no EOS id");
  for (int32_t id : s.stop_token_ids)
    PPO_ASSERT(id >= 0 && id < V, "generate: stop token id ", id, " outside the vocabulary [0,", V, ")");
  const int32_t eos = s.stop_token_ids[0];

  // prompt positions count from each row's first real token; the mask covers prompt + response
  std::vector<int32_t> prompt_pos(size_t(B * P), 0), gen_mask(size_t(B * T), 1), prompt_len(size_t(B), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < P; ++j) {
      const int32_t m = exp.prompt_mask[size_t(b * P + j)];
      gen_mask[size_t(b * T + j)] = m;
      if (m) prompt_pos[size_t(b * P + j)] = prompt_len[size_t(b)]++;
    }
  Tensor tokens = buf.prompt_tokens.slice0(0, B), pos = buf.prompt_pos.slice0(0, B), mask = buf.gen_mask.slice0(0, B);
  Tensor step_tokens = buf.step_tokens.slice0(0, B), step_pos = buf.step_pos.slice0(0, B);
  Tensor step_logp = buf.step_logp.slice0(0, B);
  be.from_host_ids(tokens, exp.prompt_ids);
  be.from_host_ids(pos, prompt_pos);
  be.from_host_ids(mask, gen_mask);

  exp.response_ids.assign(size_t(B * R), eos);  // padding after the end holds the EOS id
  exp.response_mask.assign(size_t(B * R), 0);
  exp.sampler_logp.assign(size_t(B * R), 0.0f);
  exp.ended_with_eos.assign(size_t(B), 0);
  int64_t running = B;

  Tensor logits = policy.prefill(tokens, pos, mask);
  for (int64_t t = 0; t < R && running > 0; ++t) {
    if (t < s.min_new_tokens) be.mask_token_logits(logits, s.stop_token_ids);
    be.sample_tokens(step_tokens, step_logp, logits, 1.0f / s.temperature, int(s.top_k), s.top_p, s.seed,
                     uint64_t(s.step * R + t) * uint64_t(B));
    const std::vector<int32_t> ids = be.to_host_ids(step_tokens);
    const std::vector<float> lp = be.to_host(step_logp);
    std::vector<int32_t> next_pos(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      next_pos[size_t(b)] = prompt_len[size_t(b)] + int32_t(t);
      if (exp.ended_with_eos[size_t(b)]) continue;
      const size_t i = size_t(b * R + t);
      exp.response_ids[i] = ids[size_t(b)];
      exp.response_mask[i] = 1;
      exp.sampler_logp[i] = lp[size_t(b)];
      if (is_stop_token(s.stop_token_ids, ids[size_t(b)])) {
        exp.ended_with_eos[size_t(b)] = 1;
        --running;
      }
    }
    if (t + 1 < R && running > 0) {
      be.from_host_ids(step_pos, next_pos);
      logits = policy.decode(step_tokens, step_pos, mask, P + t + 1);  // the token sits at cache position P+t
    }
  }
  layout_sequences(exp);
}

}  // namespace ppo
