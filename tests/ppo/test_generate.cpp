// generate(): its recorded decode step (Backend::record; a CUDA graph on the GPU) samples exactly
// what the same ops give when called token by token with host values (the step t, the cache length
// P+t+1, the Philox stream); min_new_tokens holds back the stop tokens; on the emulated device a
// decoded token costs one launch (the graph's). CPU, and CUDA against its own token-by-token run.
#include <doctest/doctest.h>

#include "engine/device_memory.h"
#include "helpers.h"
#include "models/transformer.h"
#include "ppo/generate.h"
#include "ppo/trainer.h"

using namespace ppo;
using namespace ppo::test;

namespace {

constexpr int32_t kPad = 2;  // the tiny run's EOS
const std::vector<std::vector<int32_t>> kPrompts = {{1, 8, 9, 3}, {1, 12, 3}, {1, 4, 5, 6, 7, 3}, {1, 20, 3}};

PpoTrainer make_trainer(DeviceChoice device) {
  PpoConfig c = tiny_ppo_config(48);
  c.device = device;
  c.response_length = 9;  // 8 decode steps after the first sample
  c.derive();
  TrainerOptions o;
  o.print_plan = false;
  return PpoTrainer(c, o);
}

SamplingSettings settings(int64_t R, int64_t min_new_tokens) {
  SamplingSettings s;
  s.max_new_tokens = R;
  s.min_new_tokens = min_new_tokens;
  s.temperature = 0.7f;
  s.top_k = 12;
  s.top_p = 0.95f;
  s.stop_token_ids = {kPad, 5};
  s.seed = 31;
  s.stream = 4;
  return s;
}

// The (B,R) tokens and log-probs of the decode loop written out, one call per op with host values.
std::pair<std::vector<int32_t>, std::vector<float>> token_by_token(Backend& be, Transformer& policy,
                                                                   const GenerationBuffers& buf,
                                                                   const SamplingSettings& s) {
  const int64_t B = int64_t(kPrompts.size()), P = buf.prompt_tokens.dim(1);
  const int64_t R = s.max_new_tokens, G = buf.prompt_tokens.dim(0);
  const Tensor tokens = buf.prompt_tokens.slice0(0, B), positions = buf.prompt_pos.slice0(0, B);
  const Tensor gen_mask = buf.mask.slice0(0, B), done = buf.done.slice0(0, B);
  const Tensor step_tokens = buf.step_tokens.slice0(0, B), step_pos = buf.step_pos.slice0(0, B);
  const Tensor step_logp = buf.step_logp.slice0(0, B);
  const Tensor sampled = buf.tokens.slice0(0, B), sampled_logp = buf.logp.slice0(0, B);
  start_chunk(be, buf, kPrompts, kPad);
  be.fill(sampled, -1.0f);
  Tensor logits = policy.prefill(tokens, positions, gen_mask);
  for (int64_t t = 0; t < R; ++t) {
    if (t > 0) logits = policy.decode(step_tokens, step_pos, gen_mask, P + t);
    if (t < s.min_new_tokens) be.mask_token_logits(logits, s.stop_token_ids);
    be.sample_tokens(step_tokens, step_logp, logits, 1.0f / s.temperature, int(s.top_k), s.top_p, s.seed,
                     (s.stream + uint64_t(t)) * uint64_t(G));
    be.append_sampled(sampled, sampled_logp, done, step_pos, step_tokens, step_logp, buf.step, s.stop_token_ids, kPad);
  }
  return {be.to_host_ids(sampled), be.to_host(sampled_logp)};
}

// generate()'s responses against the token-by-token run's rows: each the row up to and including
// its first stop token. Returns how many responses stopped early.
int check_against_token_by_token(DeviceChoice device, int64_t min_new_tokens) {
  PpoTrainer t = make_trainer(device);
  Backend& be = t.backend();
  const GenerationBuffers& buf = t.buffers().gen;
  const SamplingSettings s = settings(t.config().response_length, min_new_tokens);
  const SampledResponses got = generate(be, t.policy(), buf, kPrompts, kPad, s);
  const auto [ids, logp] = token_by_token(be, t.policy(), buf, s);
  const int64_t R = s.max_new_tokens, W = buf.tokens.dim(1);
  int stopped = 0;
  REQUIRE(got.responses.size() == kPrompts.size());
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    CAPTURE(b);
    std::vector<int32_t> want;
    std::vector<float> want_logp;
    for (int64_t c = 0; c < R; ++c) {
      want.push_back(ids[b * size_t(W) + size_t(c)]);
      want_logp.push_back(logp[b * size_t(W) + size_t(c)]);
      if (is_stop_token(s.stop_token_ids, want.back())) break;
    }
    CHECK(got.responses[b] == want);
    CHECK(got.logp[b] == want_logp);
    CHECK(int64_t(want.size()) >= std::min(min_new_tokens + 1, R));  // no stop token before min_new_tokens
    stopped += int64_t(want.size()) < R;
  }
  return stopped;
}

}  // namespace

TEST_CASE("generate: the recorded decode step samples what the ops give token by token with host values (CPU)") {
  // Some responses stop early (the test would not see a wrong stop otherwise), and none before
  // min_new_tokens when it is set.
  CHECK(check_against_token_by_token(DeviceChoice::CPU, 0) > 0);
  check_against_token_by_token(DeviceChoice::CPU, 4);
}

TEST_CASE("generate on CUDA: the decode graph samples what the ops give token by token; one launch per token") {
  if (!cuda_backend_or_skip()) return;
  CHECK(check_against_token_by_token(DeviceChoice::CUDA, 0) > 0);
  check_against_token_by_token(DeviceChoice::CUDA, 4);
  if (!cuda_emulated()) return;  // the counters are the emulated device's
  PpoTrainer t = make_trainer(DeviceChoice::CUDA);
  SamplingSettings s = settings(t.config().response_length, 0);
  s.min_new_tokens = s.max_new_tokens;                                    // no early stop: every row decodes R tokens
  generate(t.backend(), t.policy(), t.buffers().gen, kPrompts, kPad, s);  // the shapes' plans cached
  auto launches = [&](int64_t R) {
    s.max_new_tokens = s.min_new_tokens = R;
    reset_cuda_counters();
    generate(t.backend(), t.policy(), t.buffers().gen, kPrompts, kPad, s);
    return cuda_counters().launches;
  };
  CHECK(launches(9) - launches(5) == 4);  // four more tokens, four more graph launches
}
