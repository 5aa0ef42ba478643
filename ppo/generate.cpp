#include "ppo/generate.h"

#include <algorithm>

#include "engine/error.h"
#include "models/transformer.h"
#include "ppo/config.h"
#include "ppo/sequences.h"

namespace ppo {

SamplingSettings SamplingSettings::from_config(const PpoConfig& c, std::vector<int32_t> stop_token_ids, uint64_t stream,
                                               bool fixed_response_length) {
  SamplingSettings s;
  s.max_new_tokens = c.response_length;
  s.min_new_tokens = fixed_response_length ? c.response_length : c.min_new_tokens;
  s.temperature = c.temperature;
  s.top_k = c.top_k;
  s.top_p = c.top_p;
  s.stop_token_ids = std::move(stop_token_ids);
  s.seed = c.seed;
  s.stream = stream;
  return s;
}

namespace {
// Names outlive the views (Tensor::name points at them).
constexpr const char* kNames[] = {"prompt_tokens", "prompt_pos", "gen_mask", "step_tokens", "step_pos",
                                  "step_logp",     "gen_tokens", "gen_logp", "gen_done",    "gen_step"};
}  // namespace

std::vector<TensorSpec> GenerationBuffers::specs(int64_t G, int64_t P, int64_t T, Precision p) {
  const DType ids = DType::I32, stat = grad_dtype_of(p);
  const int64_t R = T - P;
  return {{kNames[0], ids, {G, P}}, {kNames[1], ids, {G, P}}, {kNames[2], ids, {G, T}}, {kNames[3], ids, {G}},
          {kNames[4], ids, {G}},    {kNames[5], stat, {G}},   {kNames[6], ids, {G, R}}, {kNames[7], stat, {G, R}},
          {kNames[8], ids, {G}},    {kNames[9], ids, {1}}};
}

GenerationBuffers GenerationBuffers::carve(Carver& carver, int64_t G, int64_t P, int64_t T, Precision p) {
  GenerationBuffers b;
  Tensor* slots[] = {&b.prompt_tokens, &b.prompt_pos, &b.mask, &b.step_tokens, &b.step_pos,
                     &b.step_logp,     &b.tokens,     &b.logp, &b.done,        &b.step};
  const std::vector<TensorSpec> table = specs(G, P, T, p);
  for (size_t i = 0; i < table.size(); ++i) *slots[i] = carver.take(table[i], kNames[i]);
  return b;
}

void start_chunk(Backend& be, const GenerationBuffers& buf, const std::vector<std::vector<int32_t>>& prompts,
                 int32_t pad) {
  const int64_t n = int64_t(prompts.size()), P = buf.prompt_tokens.dim(1), T = buf.mask.dim(1);
  PPO_ASSERT(n >= 1 && n <= buf.prompt_tokens.dim(0), "generate: ", n, " prompts for ", buf.prompt_tokens.dim(0),
             " rows");
  const SequenceBatch rows = pack_sequences(prompts, std::vector<std::vector<int32_t>>(size_t(n)), P, T - P, pad);
  // the prompt columns [0,P); the mask covers prompt + response
  std::vector<int32_t> tok, pos, mask(size_t(n * T), 1);
  for (int64_t b = 0; b < n; ++b) {
    tok.insert(tok.end(), rows.tokens.begin() + b * T, rows.tokens.begin() + b * T + P);
    pos.insert(pos.end(), rows.pos.begin() + b * T, rows.pos.begin() + b * T + P);
    std::copy(rows.mask.begin() + b * T, rows.mask.begin() + b * T + P, mask.begin() + b * T);
  }
  be.from_host_ids(buf.prompt_tokens.slice0(0, n), tok);
  be.from_host_ids(buf.prompt_pos.slice0(0, n), pos);
  be.from_host_ids(buf.mask.slice0(0, n), mask);
  std::vector<int32_t> before_first(static_cast<size_t>(n));  // append_sampled advances it to prompt length + t
  for (int64_t b = 0; b < n; ++b) before_first[size_t(b)] = int32_t(rows.prompt_len[size_t(b)] - 1);
  be.from_host_ids(buf.step_pos.slice0(0, n), before_first);
  be.fill(buf.done.slice0(0, n), 0.0f);
  be.fill(buf.step, 0.0f);
}

SampledResponses generate(Backend& be, Transformer& policy, const GenerationBuffers& buf,
                    const std::vector<std::vector<int32_t>>& prompts, int32_t pad, const SamplingSettings& s) {
  const int64_t G = buf.prompt_tokens.dim(0), P = buf.prompt_tokens.dim(1), T = buf.mask.dim(1);
  const int64_t R = s.max_new_tokens, V = policy.config().vocab_size;
  PPO_ASSERT(R >= 1 && P + R <= T, "generate: ", R, " new tokens after ", P, " prompt columns exceed the buffers' ", T);
  PPO_ASSERT(s.temperature > 0, "generate: the sampling temperature must be positive");
  PPO_ASSERT(!s.stop_token_ids.empty(), "generate: no EOS id");
  for (int32_t id : s.stop_token_ids)
    PPO_ASSERT(id >= 0 && id < V, "generate: stop token id ", id, " outside the vocabulary [0,", V, ")");

  SampledResponses out;
  for (int64_t first = 0, chunk = 0; first < int64_t(prompts.size()); first += G, ++chunk) {
    const int64_t n = std::min<int64_t>(G, int64_t(prompts.size()) - first);
    start_chunk(be, buf, std::vector<std::vector<int32_t>>(prompts.begin() + first, prompts.begin() + first + n), pad);
    const Tensor tokens = buf.prompt_tokens.slice0(0, n), positions = buf.prompt_pos.slice0(0, n);
    const Tensor gen_mask = buf.mask.slice0(0, n);
    const Tensor step_tokens = buf.step_tokens.slice0(0, n), step_pos = buf.step_pos.slice0(0, n);
    const Tensor step_logp = buf.step_logp.slice0(0, n), done = buf.done.slice0(0, n);
    const Tensor sampled = buf.tokens.slice0(0, n), sampled_logp = buf.logp.slice0(0, n);

    // One token: sample from `logits` at step t = step[0] and append it (step becomes t + 1). Row
    // b draws from Philox stream (stream + c*R + t)*stride + first_row + b.
    const uint64_t stride = s.row_stride ? s.row_stride : uint64_t(G);
    const uint64_t first_stream = (s.stream + uint64_t(chunk * R)) * stride + s.first_row;
    auto sample = [&](Tensor logits) {
      if (s.min_new_tokens > 0) be.mask_token_logits(logits, s.stop_token_ids, buf.step, s.min_new_tokens);
      be.sample_tokens(step_tokens, step_logp, logits, 1.0f / s.temperature, int(s.top_k), s.top_p, s.seed,
                       first_stream, buf.step, stride);
      be.append_sampled(sampled, sampled_logp, done, step_pos, step_tokens, step_logp, buf.step, s.stop_token_ids, pad);
    };
    sample(policy.prefill(tokens, positions, gen_mask));
    // Every later token: decode the last one (cache position P+t-1, so the cache length is P +
    // step[0]) and sample. The same calls for every t: the second token runs them as they are (its
    // launches load every kernel and make every matmul plan first, as a capture wants), the rest
    // replay them as recorded then (on CUDA a graph, one launch per token).
    auto decode_and_sample = [&] { sample(policy.decode(step_tokens, step_pos, gen_mask, DeviceIndex(buf.step, P))); };
    RecordedOps decode_step;
    int64_t steps = 1;  // tokens sampled
    for (; steps < R; ++steps) {
      if (steps % kStopCheckTokens == 0) {
        const std::vector<int32_t> d = be.to_host_ids(done);
        if (std::all_of(d.begin(), d.end(), [](int32_t x) { return x != 0; })) break;
      }
      if (steps == 1) {
        decode_and_sample();
        if (R > 2) decode_step = be.record(decode_and_sample);
      } else {
        decode_step.run();
      }
    }
    // One read of the chunk's samples (rows of W >= R columns): each row up to and including its stop token.
    const int64_t W = sampled.dim(1);
    const std::vector<int32_t> ids = be.to_host_ids(sampled);
    const std::vector<float> lp = be.to_host(sampled_logp);
    for (int64_t b = 0; b < n; ++b) {
      std::vector<int32_t> response;
      std::vector<float> response_logp;
      for (int64_t t = 0; t < steps; ++t) {
        const int32_t id = ids[size_t(b * W + t)];
        response.push_back(id);
        response_logp.push_back(lp[size_t(b * W + t)]);
        if (is_stop_token(s.stop_token_ids, id)) break;
      }
      out.responses.push_back(std::move(response));
      out.logp.push_back(std::move(response_logp));
    }
  }
  return out;
}

}  // namespace ppo
