// The GPU step's host round trips, counted on the emulated device (engine/device_memory.h
// counters, per phase: PhaseCost): no device allocation once the arena is built; at most one
// synchronization per kStopCheckTokens decoded tokens and one launch per token (the decode step's
// CUDA graph); one synchronization per minibatch of the update (its loss sums and gradient norms,
// read once), whatever the micro-batches and the parameter tensors; none in the reference and
// value passes; six in rewards and advantages. A GPU build counts nothing: these cases then skip.
#include <doctest/doctest.h>

#include <cstdio>
#include "engine/device_memory.h"
#include "helpers.h"
#include "ppo/generate.h"
#include "ppo/single_model.h"
#include "ppo/trainer.h"

using namespace ppo;

namespace {

bool counted() {
  if (cuda_emulated()) return true;
  std::printf("SKIP device budget cases: the counters need the emulated device\n");
  return false;
}

// A tiny PPO run on the CUDA device, every response R tokens long.
PpoConfig budget_config(int64_t n_layer, int64_t response_length, int64_t micro_batch_size) {
  PpoConfig c;
  c.device = DeviceChoice::CUDA;
  c.policy = {{"arch", "gpt2"}, {"n_layer", n_layer}, {"n_head", 2}, {"d_model", 32}, {"d_ff", 64},
              {"vocab_size", 48}, {"max_seq_len", 80}};
  c.rollout_batch_size = 4;
  c.prompt_length = 8;  // the demo task's prompts: up to 7 tokens
  c.response_length = response_length;
  c.micro_batch_size = micro_batch_size;
  c.ppo_epochs = 1;
  c.num_minibatches = 2;
  c.total_steps = 4;
  c.derive();
  return c;
}

// The cost of one step's phases (after a first step: shapes seen, plans cached).
PhaseTimes second_step(int64_t n_layer, int64_t response_length, int64_t micro_batch_size = 2) {
  TrainerOptions o;
  o.print_plan = false;
  o.fixed_response_length = true;
  PpoTrainer trainer(budget_config(n_layer, response_length, micro_batch_size), o);
  trainer.step();
  reset_cuda_counters();
  trainer.step();
  CHECK_MESSAGE(cuda_counters().allocations == 0, "device allocations in a step after the arena was built");
  return trainer.last_phase_times();
}

}  // namespace

TEST_CASE(
    "device budget: no allocation in a step; decode syncs once per chunk of tokens and launches once per token; the "
    "update syncs once per minibatch, whatever the micro-batches and the tensor count; scoring never") {
  if (!cuda_compiled() || cuda_device_count() == 0 || !counted()) return;
  // Both caches (8 + 16, 8 + 48 positions) short enough for one split of the decode attention: the
  // decode step is the same launches in both.
  const PhaseTimes short_run = second_step(2, kStopCheckTokens), long_run = second_step(2, 3 * kStopCheckTokens);
  // Two more chunks of kStopCheckTokens tokens: two more looks at the done flags, nothing per token.
  const int64_t decode_syncs = long_run.sampling.work.syncs - short_run.sampling.work.syncs;
  CHECK(decode_syncs == 2);
  CHECK(long_run.sampling.work.d2h_copies - short_run.sampling.work.d2h_copies == 2);
  // A token is one launch: the decode step's graph (embedding, every layer, LM head, sampling).
  CHECK(long_run.sampling.work.launches - short_run.sampling.work.launches == 2 * kStopCheckTokens);
  // One read per minibatch (its loss sums and gradient norms), with one or two micro-batches each,
  // and with twice the layers (twice the parameter tensors).
  const PpoConfig c = budget_config(2, kStopCheckTokens, 2);
  const int64_t minibatches = c.ppo_epochs * c.num_minibatches;
  const PhaseTimes two_micro = second_step(2, kStopCheckTokens, 1), deeper = second_step(4, kStopCheckTokens);
  CHECK(short_run.train.work.syncs == minibatches);
  CHECK(two_micro.train.work.syncs == minibatches);
  CHECK(two_micro.train.work.launches > short_run.train.work.launches);  // twice the micro-batches did run
  CHECK(deeper.train.work.syncs == minibatches);
  // The reference and value passes leave their results on the device.
  CHECK(short_run.reference.work.syncs == 0);
  CHECK(short_run.value.work.syncs == 0);
  // Rewards and advantages: the mask and KL for the host's reward shaping, the two moments of the
  // advantages and returns (whitening, explained variance), and the Experience's copies of both.
  CHECK(short_run.advantages.work.syncs <= 6);
  MESSAGE("per step, R = 16: sampling ", short_run.sampling.work.syncs, " syncs, ", short_run.sampling.work.launches,
          " launches; train ", short_run.train.work.syncs, " syncs, ", short_run.train.work.launches, " launches");
}

TEST_CASE("device budget at gpt2-124m shapes (one layer): decode syncs once per chunk of tokens, launches once per "
          "token, allocates nothing") {
  if (!cuda_compiled() || cuda_device_count() == 0 || !counted()) return;
  ModelSpec spec;
  spec.config = ModelConfig::from_json({{"arch", "gpt2"}, {"n_layer", 1}, {"n_head", 12}, {"d_model", 768},
                                        {"d_ff", 3072}, {"vocab_size", 50257}, {"max_seq_len", 1024}},
                                       "gpt2-124m shapes");
  spec.generation = Generation::KVCache;
  SingleModel m(DeviceKind::CUDA, spec, RunShape{2, 8, 2 * kStopCheckTokens, 1});
  const std::vector<std::vector<int32_t>> prompts = {{464, 2068, 7586, 21831}, {40, 1842}};
  SamplingSettings s;
  s.stop_token_ids = {50256};
  auto cost = [&](int64_t R) {
    s.max_new_tokens = s.min_new_tokens = R;  // no early stop
    m.backend().synchronize();                 // the set-up's work is not the call's
    reset_cuda_counters();
    m.generate(prompts, s, 50256);
    return cuda_counters();
  };
  const DeviceCounters one = cost(kStopCheckTokens), two = cost(2 * kStopCheckTokens);
  CHECK(two.allocations == 0);
  CHECK(two.syncs - one.syncs == 1);  // one more look at the done flags
  CHECK(two.launches - one.launches == kStopCheckTokens);  // one graph launch per token
  MESSAGE("gpt2-124m shapes, one layer, 16 tokens: ", one.launches, " launches, ", one.syncs, " syncs");
}
