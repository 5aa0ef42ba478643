// Arena planning for the PPO models: every region a Transformer carves is used to its last byte
// (plan == use), region lists per role and precision, the example configs, and the reward-model
// default.
#include <doctest/doctest.h>

#include "helpers.h"
#include "models/plan.h"

using namespace ppo;

namespace {

ModelConfig config(Arch arch, int64_t vocab) {
  ModelConfig c;
  c.arch = arch;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == Arch::GPT2 ? 4 : 2;
  c.d_model = 24;
  c.d_ff = 20;
  c.vocab_size = vocab;
  c.max_seq_len = 16;
  c.tied_embeddings = arch == Arch::GPT2;
  c.qkv_bias = true;
  return c;
}

}  // namespace

TEST_CASE("plan == use: each model carves exactly its planned regions") {
  const RunShape shape{3, 5, 4, 2};
  for (ValueModelKind vk : {ValueModelKind::Separate, ValueModelKind::PolicyHead}) {
    const std::vector<PlannedModel> models =
        ppo_models(config(Arch::Llama, 37), config(Arch::GPT2, 41), vk, ValueInit::Reward);
    CHECK(models.size() == (vk == ValueModelKind::Separate ? 4u : 3u));
    const ArenaPlan plan = ArenaPlan::make(ppo_regions(models, shape, Precision::F32));
    Arena arena(plan, DeviceKind::CPU, size_t(1) << 30);
    Backend backend(DeviceKind::CPU, Precision::F32);
    backend.set_scratch(arena.carver("run", "scratch"));
    for (const PlannedModel& m : models) {
      Transformer t(backend, m.spec, shape, arena, m.owner);
      int regions = 0;
      for (const Region& r : plan.regions) {
        if (r.spec.owner != m.owner) continue;
        ++regions;
        CHECK_MESSAGE(t.carved_bytes(r.spec.name) == r.spec.bytes, m.owner, "/", r.spec.name);
      }
      const bool trained = m.spec.training == Training::Trained, generates = m.spec.generation == Generation::KVCache;
      CHECK(regions == 2 + (trained ? 3 : 0) + (generates ? 2 : 0));
    }
    // roles
    CHECK(plan.find("policy", "kv_cache") != nullptr);
    CHECK(plan.find("reference", "grads") == nullptr);
    CHECK(plan.find("reward", "adam_m") == nullptr);
    CHECK((plan.find("value", "grads") != nullptr) == (vk == ValueModelKind::Separate));
    CHECK(plan.find("policy", "master") == nullptr);  // f32: no master copy
  }
}

TEST_CASE("bf16 plan: master copy for trained models, weights at half the f32 bytes") {
  const RunShape shape{4, 8, 8, 2};
  const std::vector<PlannedModel> models =
      ppo_models(config(Arch::GPT2, 37), config(Arch::GPT2, 37), ValueModelKind::Separate, ValueInit::Policy);
  const ArenaPlan f32 = ArenaPlan::make(ppo_regions(models, shape, Precision::F32));
  const ArenaPlan bf16 = ArenaPlan::make(ppo_regions(models, shape, Precision::BF16));
  for (const char* owner : {"policy", "value"}) {
    REQUIRE(bf16.find(owner, "master") != nullptr);
    CHECK(bf16.find(owner, "master")->spec.bytes == f32.find(owner, "weights")->spec.bytes);
    CHECK(bf16.find(owner, "grads")->spec.bytes == f32.find(owner, "grads")->spec.bytes);  // f32 grads
  }
  CHECK(bf16.find("reference", "master") == nullptr);
  // parameter count of the tiny gpt2: every tensor padded to 256 bytes, so compare element counts
  int64_t params = 0;
  for (const TensorSpec& t : parameter_specs(models[0].spec, DType::BF16)) params += int64_t(t.bytes() / 2);
  const int64_t C = 24, F = 20, V = 37, P = 16, L = 2;
  CHECK(params == V * C + P * C + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + F * C + F + C * F + C) + 2 * C);
}

TEST_CASE("plan errors: sequence longer than the model's positions; reward defaults to the policy") {
  const std::vector<PlannedModel> models =
      ppo_models(config(Arch::GPT2, 37), config(Arch::GPT2, 37), ValueModelKind::Separate, ValueInit::Reward);
  CHECK_THROWS_WITH_AS(ppo_regions(models, RunShape{2, 10, 10, 2}, Precision::F32),
                       doctest::Contains("exceeds the model's max_seq_len 16"), Error);

  const PpoConfig cfg = load_config(PPO_SOURCE_DIR "/bench/configs/gpt2-124m.json", {});
  const std::vector<PlannedModel> run = ppo_models(cfg, "gpt2-124m.json");
  REQUIRE(run.size() == 4);
  CHECK(run[2].owner == "reward");
  CHECK(run[2].spec.config.to_json() == run[0].spec.config.to_json());
  const RunShape shape = run_shape(cfg);
  CHECK(shape.rollout_batch == 64);
  CHECK(shape.seq_len() == 192);
  CHECK(shape.micro_batch == 8);
  // GPT-2 small: 124,439,808 parameters (tied LM head), bf16 weights
  int64_t params = 0;
  for (const TensorSpec& t : parameter_specs(run[0].spec, DType::F32)) params += int64_t(t.bytes() / 4);
  CHECK(params == 124439808);
}
