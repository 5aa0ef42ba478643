// The PPO loop end to end on tiny models (CPU): the traps of DESIGN.md "The PPO step" (policy ==
// reference gives ratio 1, KL 0, clipfrac 0; left padding; the reward on the last real token;
// NaN skips the step with weights untouched), determinism, rollout/scoring alignment, the trace,
// bad input, and CUDA against CPU (skips without a GPU).
#include "helpers.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include "io/safetensors.h"
#include "ppo/demo_task.h"
#include "ppo/experience.h"
#include "ppo/trainer.h"
#include "ppo/update.h"

using namespace ppo;
using namespace ppo::test;

namespace {

PpoConfig tiny_config(int64_t prompt_length = 7) {
  PpoConfig c = test::tiny_ppo_config(44);
  c.prompt_length = prompt_length;
  c.total_steps = 10;
  c.derive();
  return c;
}

TrainerOptions quiet() {
  TrainerOptions o;
  o.print_plan = false;
  return o;
}

// Every parameter of a model, concatenated.
std::vector<float> all_weights(Transformer& m) {
  std::vector<float> w;
  for (const auto& [name, v] : read_weights(m)) w.insert(w.end(), v.begin(), v.end());
  return w;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// The reference and old log-probs come from one pass over the batch in the same arrangement, so KL
// is exactly 0. The update's pass sees the rows shuffled into other micro-batch positions, and BLAS
// may round a row differently by its position in the tile (OpenBLAS's AVX-512 kernels do): the
// ratio is 1 to float rounding, not bitwise.
TEST_CASE("policy == reference before any update: KL == 0, clipfrac == 0 exactly, ratio == 1 to rounding") {
  PpoConfig c = tiny_config();
  c.ppo_epochs = 1;
  c.num_minibatches = 1;  // the one minibatch is trained before any optimizer step
  c.derive();
  const std::string dir = std::filesystem::temp_directory_path() / "ppo_trainer_trace_test";
  std::filesystem::remove_all(dir);
  TrainerOptions o = quiet();
  o.trace_dir = dir;
  PpoTrainer trainer(c, o);
  const MetricsRow row = trainer.step();
  CHECK(row.get(metric::kKl) == 0.0);
  CHECK(row.get(metric::kPolicyClipfrac) == 0.0);
  CHECK(std::abs(row.get(metric::kRatio) - 1.0) <= 1e-6);
  CHECK(row.get(metric::kApproxKl) <= 1e-12);
  CHECK(row.get(metric::kSkipped) == 0.0);

  // the trace holds the peer's names; ratio is 1 on valid tokens (to rounding), KL exactly 0
  io::SafetensorsFile f(dir + "/trace.safetensors");
  for (const char* name : {"prompt_ids", "prompt_mask", "response_ids", "response_mask", "old_logp", "ref_logp",
                           "values", "scores", "kl", "rewards", "advantages", "returns", "epoch0/minibatch_indices",
                           "epoch0/new_logp", "epoch0/ratio", "epoch0/policy_loss", "epoch0/value_loss"})
    CHECK_MESSAGE(f.contains(name), name);
  io::HostTensor ratio = f.load("epoch0/ratio"), kl = f.load("kl"), mask = f.load("response_mask");
  io::HostTensor idx = f.load("epoch0/minibatch_indices");
  const float* r = reinterpret_cast<const float*>(ratio.bytes.data());
  const int32_t* m = reinterpret_cast<const int32_t*>(mask.bytes.data());
  const int32_t* rows = reinterpret_cast<const int32_t*>(idx.bytes.data());
  const int64_t R = c.response_length;
  int64_t valid = 0;
  for (int64_t i = 0; i < idx.numel(); ++i)
    for (int64_t t = 0; t < R; ++t)
      if (m[rows[i] * R + t]) {
        CHECK(std::abs(r[i * R + t] - 1.0f) <= 1e-6f);
        ++valid;
      }
  CHECK(valid > 0);
  const float* k = reinterpret_cast<const float*>(kl.bytes.data());
  for (int64_t i = 0; i < kl.numel(); ++i) CHECK(k[i] == 0.0f);
  CHECK(std::filesystem::exists(dir + "/config.json"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("rollout and scoring agree: the sampler's log-probs equal the teacher-forced old log-probs") {
  // Full vocabulary at the same temperature, over the KV cache vs the training forward: the same
  // distribution, so only f32 rounding differs (1e-4). A misaligned column or position fails by O(1).
  PpoTrainer trainer(tiny_config(), quiet());
  std::vector<std::vector<int32_t>> prompts;
  DemoTask task(3);
  for (int b = 0; b < 4; ++b) prompts.push_back(task.prompt(uint64_t(b)));
  const Experience exp = trainer.make_experience(prompts);
  int64_t valid = 0;
  for (size_t i = 0; i < exp.response_mask.size(); ++i)
    if (exp.response_mask[i]) {
      CHECK(std::fabs(exp.sampler_logp[i] - exp.old_logp[i]) < 1e-4);
      ++valid;
    } else {
      CHECK(exp.old_logp[i] == 0.0f);
      CHECK(exp.values[i] == 0.0f);
    }
  CHECK(valid > 0);
}

TEST_CASE("left padding: a left-padded prompt + response gives the unpadded log-probs, values and score") {
  const std::vector<std::vector<int32_t>> prompts = {{1, 8, 9, 3}, {1, 12, 3, 5}};
  const std::vector<std::vector<int32_t>> responses = {{9, 8, 2}, {13, 6, 7, 4, 10, 11}};
  TrainerOptions o = quiet();
  o.prompts = PromptSource::token_ids(prompts);
  PpoTrainer padded(tiny_config(7), o);    // 3 pad columns before each prompt
  PpoTrainer unpadded(tiny_config(4), o);  // none; the same weights (same seed and models)
  const Experience a = padded.make_experience(prompts, &responses);
  const Experience b = unpadded.make_experience(prompts, &responses);
  // Different matmul shapes (T = 13 vs 10) only reorder f32 sums: 1e-5.
  check_close(a.old_logp, b.old_logp, 1e-5, 1e-5, "old_logp");
  check_close(a.ref_logp, b.ref_logp, 1e-5, 1e-5, "ref_logp");
  check_close(a.values, b.values, 1e-5, 1e-5, "values");
  check_close(a.scores, b.scores, 1e-5, 1e-5, "scores");
}

TEST_CASE("the score lands on the last real response token; rewards are 0 past it") {
  PpoConfig c = tiny_config();
  c.kl_coef = 0.0f;
  c.derive();
  TrainerOptions o = quiet();
  o.reward = [](const std::vector<int32_t>&, const std::vector<int32_t>& response, const std::string& text) {
    CHECK(!text.empty());
    return double(response.size());
  };
  PpoTrainer trainer(c, o);
  const std::vector<std::vector<int32_t>> prompts = {{1, 8, 3}, {1, 9, 10, 3}, {1, 4, 3}, {1, 5, 6, 7, 3}};
  const std::vector<std::vector<int32_t>> responses = {{9, 2}, {11, 12, 13, 14, 15, 16}, {5}, {4, 4, 2}};
  const Experience e = trainer.make_experience(prompts, &responses);
  const int64_t R = c.response_length;
  for (int64_t b = 0; b < 4; ++b) {
    const int64_t len = int64_t(responses[size_t(b)].size());
    CHECK(e.scores[size_t(b)] == float(len));
    for (int64_t t = 0; t < R; ++t) CHECK(e.rewards[size_t(b * R + t)] == (t == len - 1 ? float(len) : 0.0f));
  }
  CHECK(e.ended_with_eos == std::vector<uint8_t>{1, 0, 0, 1});

  // a callback scores: no reward model is allocated (its bytes are not in the arena)
  CHECK(!trainer.has_reward_model());
  CHECK_THROWS_WITH_AS(trainer.reward_model(), doctest::Contains("reward callback"), Error);
  PpoTrainer with_model(c, quiet());
  CHECK(with_model.has_reward_model());
  CHECK(trainer.arena().plan().total_bytes < with_model.arena().plan().total_bytes);
}

TEST_CASE("stop_token_ids end responses like the EOS; min_new_tokens holds all of them back") {
  PpoConfig c = tiny_config();
  c.eos_token_id = 2;
  for (int64_t id = 29; id < 44; ++id) c.stop_token_ids.push_back(id);  // 16 of 44 ids stop (the most)
  c.min_new_tokens = 2;
  c.derive();
  PpoTrainer trainer(c, quiet());
  CHECK(trainer.stop_token_ids().front() == 2);
  CHECK(trainer.stop_token_ids().size() == 16);
  const Experience e = trainer.make_experience({{1, 8, 3}, {1, 9, 3}, {1, 4, 5, 3}, {1, 6, 3}});
  const int64_t R = c.response_length;
  int64_t stopped = 0;
  for (int64_t b = 0; b < e.B; ++b) {
    int64_t length = 0;
    while (length < R && e.response_mask[size_t(b * R + length)]) ++length;
    for (int64_t t = 0; t < length; ++t) {
      const int32_t id = e.response_ids[size_t(b * R + t)];
      CHECK_MESSAGE(!(t < 2 && trainer.is_stop(id)), "stop token ", id, " before min_new_tokens at ", t);
      CHECK_MESSAGE(!(t + 1 < length && trainer.is_stop(id)), "response ", b, " runs past stop token ", id);
    }
    const bool ended = length > 0 && trainer.is_stop(e.response_ids[size_t(b * R + length - 1)]);
    CHECK(bool(e.ended_with_eos[size_t(b)]) == ended);
    stopped += ended;
  }
  CHECK(stopped >= 1);
  c.stop_token_ids.push_back(28);  // 17 with the EOS: too many to mask in one launch
  CHECK_THROWS_WITH_AS(PpoTrainer(c, quiet()), doctest::Contains("at most 16"), Error);
  // forced responses: any stop token ends one
  const std::vector<std::vector<int32_t>> forced = {{5, 30}, {5, 6}};
  const Experience f = trainer.make_experience({{1, 8, 3}, {1, 9, 3}}, &forced);
  CHECK(f.ended_with_eos == std::vector<uint8_t>{1, 0});
  const std::vector<std::vector<int32_t>> bad = {{30, 5}, {5}};
  CHECK_THROWS_WITH_AS(trainer.make_experience({{1, 8, 3}, {1, 9, 3}}, &bad), doctest::Contains("continues after stop token 30"),
                       Error);
}

TEST_CASE("normalize_scores: each batch joins the running moments; a non-finite batch leaves them") {
  PpoConfig c = tiny_config();
  c.eos_token_id = 2;
  c.normalize_scores = true;
  c.kl_in_reward = false;  // the reward of the last token is the normalized score alone
  c.reward_clip = 0;
  c.derive();
  double offset = 0;  // the scores of a batch: prompt[1] + offset (NaN offset: a bad batch)
  TrainerOptions o = quiet();
  o.reward = [&](const std::vector<int32_t>& prompt, const std::vector<int32_t>&, const std::string&) {
    return prompt[1] + offset;
  };
  PpoTrainer trainer(c, o);
  const std::vector<std::vector<int32_t>> prompts = {{1, 8, 3}, {1, 9, 3}, {1, 4, 3}, {1, 6, 3}};
  const std::vector<std::vector<int32_t>> responses(4, {5, 2});
  std::vector<double> seen;  // every finite score so far
  for (double batch_offset : {0.0, 10.0, double(NAN), 20.0}) {
    offset = batch_offset;
    const Experience e = trainer.make_experience(prompts, &responses);
    if (std::isnan(batch_offset)) {
      CHECK_FALSE(e.finite());
      continue;
    }
    for (const auto& p : prompts) seen.push_back(p[1] + batch_offset);
    double mean = 0, var = 0;
    for (double x : seen) mean += x / double(seen.size());
    for (double x : seen) var += (x - mean) * (x - mean) / double(seen.size());
    for (int64_t b = 0; b < e.B; ++b)
      CHECK(e.rewards[size_t(b * c.response_length + 1)] ==
            doctest::Approx((prompts[size_t(b)][1] + batch_offset - mean) / std::sqrt(var + 1e-8)).epsilon(1e-6));
  }
}

TEST_CASE("two CPU runs with one seed give identical metrics; fixed response length turns EOS off") {
  for (bool fixed : {false, true}) {
    std::vector<MetricsRow> rows[2];
    for (auto& r : rows) {
      TrainerOptions o = quiet();
      o.fixed_response_length = fixed;
      PpoTrainer trainer(tiny_config(), o);
      r.push_back(trainer.step());
      r.push_back(trainer.step());
    }
    for (size_t s = 0; s < 2; ++s) {
      for (const auto& item : rows[0][s].items()) {  // no structured binding: doctest's messages capture it in lambdas
        const std::string& name = item.first;
        const double value = item.second;
        if (name.rfind("time/", 0) == 0) continue;
        const double other = rows[1][s].get(name);
        CHECK_MESSAGE((value == other || (std::isnan(value) && std::isnan(other))), name, ": ", value, " vs ", other);
      }
      CHECK(rows[0][s].get(metric::kSkipped) == 0.0);
      CHECK(std::isfinite(rows[0][s].get(metric::kPolicyLoss)));
      if (fixed) {
        CHECK(rows[0][s].get(metric::kResponseLength) == 6.0);
        CHECK(rows[0][s].get(metric::kNumEos) == 0.0);
      }
    }
    CHECK(rows[0][1].get(metric::kRatio) != 1.0);  // the second step trains a changed policy
  }
}

TEST_CASE("the options run: KL as a loss term, value head on the policy, dual clip, entropy bonus, value from the policy") {
  PpoConfig c = tiny_config();
  c.kl_in_reward = false;
  c.kl_estimator = KLEstimator::K3;
  c.value_model = ValueModelKind::PolicyHead;
  c.dual_clip = 3.0f;
  c.entropy_coef = 0.01f;
  c.adaptive_kl = true;
  c.min_new_tokens = 2;
  c.top_k = 10;
  c.top_p = 0.9f;
  c.derive();
  PpoTrainer trainer(c, quiet());
  CHECK(!trainer.has_separate_value_model());
  const std::vector<float> before = all_weights(trainer.policy());
  for (int i = 0; i < 2; ++i) {
    const MetricsRow row = trainer.step();
    CHECK(row.get(metric::kSkipped) == 0.0);
    CHECK(std::isfinite(row.get(metric::kValueLoss)));
    CHECK(row.get(metric::kResponseLength) >= 2.0);
  }
  CHECK(!same_bits(before, all_weights(trainer.policy())));

  c = tiny_config();
  c.value_init = ValueInit::Policy;
  c.derive();
  PpoTrainer from_policy(c, quiet());
  CHECK(from_policy.value_model().get_parameter("h.0.attn.c_attn.weight") ==
        from_policy.policy().get_parameter("h.0.attn.c_attn.weight"));
  CHECK(from_policy.step().get(metric::kSkipped) == 0.0);
}

TEST_CASE("NaN: a NaN score skips the step and is reported; a NaN in a loss leaves the weights untouched") {
  TrainerOptions o = quiet();
  o.reward = [](const std::vector<int32_t>&, const std::vector<int32_t>&, const std::string&) { return double(NAN); };
  PpoTrainer trainer(tiny_config(), o);
  const std::vector<float> policy = all_weights(trainer.policy()), value = all_weights(trainer.value_model());
  const double beta = trainer.kl_controller().coef();
  CHECK(trainer.step().get(metric::kSkipped) == 1.0);
  CHECK(same_bits(policy, all_weights(trainer.policy())));
  CHECK(same_bits(value, all_weights(trainer.value_model())));
  CHECK(trainer.kl_controller().coef() == beta);
  CHECK(trainer.optimizer_steps_done() == 0);

  // Straight into the update: one NaN advantage of a valid token makes the policy loss NaN.
  PpoTrainer clean(tiny_config(), quiet());
  DemoTask task(5);
  std::vector<std::vector<int32_t>> prompts;
  for (int b = 0; b < 4; ++b) prompts.push_back(task.prompt(uint64_t(b)));
  Experience e = clean.make_experience(prompts);
  e.advantages[2 * size_t(e.R)] = NAN;  // row 2, its first response token (always valid)
  const auto row2 = e.advantages.begin() + 2 * e.R;
  clean.backend().from_host(clean.buffers().advantages.slice0(2, 3), std::vector<float>(row2, row2 + e.R));
  const std::vector<float> p0 = all_weights(clean.policy()), v0 = all_weights(clean.value_model());
  int64_t opt_step = 0;
  const UpdateStats st = ppo_update(clean.backend(), clean.config(), {&clean.policy(), &clean.value_model()},
                                    clean.buffers(), e, 0, 0.05, opt_step, nullptr, clean.ranks());
  CHECK(st.skipped);
  CHECK(opt_step == 0);
  CHECK(same_bits(p0, all_weights(clean.policy())));
  CHECK(same_bits(v0, all_weights(clean.value_model())));
}

TEST_CASE("bad input is an error naming what is wrong") {
  CHECK_THROWS_WITH_AS(PromptSource::token_ids({}), doctest::Contains("empty"), Error);
  TrainerOptions o = quiet();
  o.prompts = PromptSource::token_ids({{1, 2, 3}, {}});
  CHECK_THROWS_WITH_AS(PpoTrainer(tiny_config(), o), doctest::Contains("prompt 1 is empty"), Error);
  o.prompts = PromptSource::token_ids({{1, 2, 3}, {1, 2, 3, 4, 5, 6, 7, 8}});
  CHECK_THROWS_WITH_AS(PpoTrainer(tiny_config(), o), doctest::Contains("more than prompt_length"), Error);
  o.prompts = PromptSource::token_ids({{1, 2, 44}});
  CHECK_THROWS_WITH_AS(PpoTrainer(tiny_config(), o), doctest::Contains("outside the vocabulary"), Error);
  // prompt + response longer than the model's context
  PpoConfig c = tiny_config();
  c.response_length = 10;
  c.derive();
  CHECK_THROWS_WITH_AS(PpoTrainer(c, quiet()), doctest::Contains("max_seq_len"), Error);
  // a batch the minibatches do not divide
  c = tiny_config();
  c.num_minibatches = 3;
  CHECK_THROWS_WITH_AS(c.derive(), doctest::Contains("num_minibatches"), Error);
  // a device too small stops before any work, with the plan
  o = quiet();
  o.device_memory = 1000;
  CHECK_THROWS_WITH_AS(PpoTrainer(tiny_config(), o), doctest::Contains("too small"), Error);
  // forced responses out of range
  PpoTrainer t(tiny_config(), quiet());
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 3}}, bad = {{99}};
  CHECK_THROWS_WITH_AS(t.make_experience(prompts, &bad), doctest::Contains("outside the vocabulary"), Error);
}

TEST_CASE("a finite prompt set is walked in a seeded permutation per pass") {
  std::vector<std::vector<int32_t>> set;
  for (int32_t i = 0; i < 5; ++i) set.push_back({1, 4 + i, 3});
  const PromptSource s = PromptSource::token_ids(set);
  std::vector<int> seen(5, 0);
  for (uint64_t i = 0; i < 5; ++i) seen[size_t(s.prompt(i)[1] - 4)]++;
  CHECK(seen == std::vector<int>(5, 1));
  CHECK(s.prompt(7) == PromptSource::token_ids(set).prompt(7));
}

TEST_CASE("CUDA and CPU PPO steps agree on one forced batch") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  gpu.reset();
  const std::vector<std::vector<int32_t>> prompts = {{1, 8, 9, 3}, {1, 12, 3}, {1, 4, 5, 6, 7, 3}, {1, 20, 3}};
  const std::vector<std::vector<int32_t>> responses = {{9, 8, 2}, {13, 6, 7, 4, 10, 11}, {5}, {21, 2}};
  Experience e[2];
  std::vector<float> w[2];
  int i = 0;
  for (DeviceChoice d : {DeviceChoice::CPU, DeviceChoice::CUDA}) {
    PpoConfig c = tiny_config();
    c.device = d;
    c.derive();
    PpoTrainer t(c, quiet());
    e[i] = t.make_experience(prompts, &responses);
    int64_t step = 0;
    ppo_update(t.backend(), t.config(), {&t.policy(), &t.value_model()}, t.buffers(), e[i], 0, t.kl_controller().coef(),
               step, nullptr, t.ranks());
    w[i] = all_weights(t.policy());
    ++i;
  }
  CHECK(rel_l2(e[1].old_logp, e[0].old_logp) < 1e-2);
  CHECK(rel_l2(e[1].ref_logp, e[0].ref_logp) < 1e-2);
  CHECK(rel_l2(e[1].values, e[0].values) < 3e-2);
  CHECK(rel_l2(e[1].advantages, e[0].advantages) < 5e-2);
  CHECK(rel_l2(w[1], w[0]) < 1e-2);
}

TEST_CASE("critic-free estimators: no value model in the arena, groups of one prompt, no value metrics") {
  PpoConfig ppo_cfg = tiny_config();
  PpoTrainer with_critic(ppo_cfg, quiet());
  for (Algorithm a : {Algorithm::Grpo, Algorithm::Rloo, Algorithm::ReinforcePP}) {
    PpoConfig c = tiny_config();
    c.set_algorithm(a);
    c.samples_per_prompt = a == Algorithm::ReinforcePP ? 1 : 2;
    c.derive();
    TrainerOptions o = quiet();
    std::vector<std::vector<int32_t>> seen;  // the prompt of each row, in row order
    o.reward = [&](const std::vector<int32_t>& prompt, const std::vector<int32_t>& response, const std::string&) {
      seen.push_back(prompt);
      return double(response.size());
    };
    o.prompts = PromptSource::token_ids({{1, 5, 3}, {1, 6, 3}, {1, 7, 3}, {1, 8, 3}, {1, 9, 3}});
    PpoTrainer t(c, o);
    CHECK_FALSE(t.has_separate_value_model());
    CHECK_THROWS_WITH_AS(t.value_model(), doctest::Contains("critic-free"), Error);
    // the arena holds exactly PPO's minus the value model (the reward model: the callback's)
    size_t value_bytes = 0;
    for (const Region& r : with_critic.arena().plan().regions)
      if (r.spec.owner == "value") value_bytes += r.spec.bytes;
    TrainerOptions po = quiet();
    po.reward = o.reward;
    PpoTrainer ppo_callback(ppo_cfg, po);
    CHECK(value_bytes > 0);
    CHECK(t.arena().plan().total_bytes < ppo_callback.arena().plan().total_bytes);
    CHECK(t.arena().plan().find("value", "weights") == nullptr);
    seen.clear();
    for (int s = 0; s < 2; ++s) {
      const MetricsRow row = t.step();
      CHECK(row.get(metric::kSkipped) == 0.0);
      CHECK(std::isfinite(row.get(metric::kPolicyLoss)));
      CHECK_FALSE(row.has(metric::kValueLoss));
      CHECK_FALSE(row.has(metric::kExplainedVariance));
    }
    // rows [gG, (g+1)G) answer one prompt; the stream advanced by B / G prompts a step
    const size_t G = size_t(c.samples_per_prompt);
    REQUIRE(seen.size() == 2 * size_t(c.rollout_batch_size));
    for (size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == seen[i - i % G]);
    if (G > 1) CHECK(seen[0] != seen[G]);
    CHECK(t.optimizer_steps_done() == 2 * c.optimizer_steps_per_step);
  }
}

TEST_CASE("loss_agg_mode reaches the gradient: equal lengths agree, ragged ones do not") {
  // Adam's step does not see a common gradient scale (max_grad_norm off; up to its eps), so with
  // every response R tokens long the three modes (1/N, 1/M, 1/(M len)) move the weights alike;
  // ragged responses (16 stop tokens of 44) weigh tokens differently per mode.
  auto delta = [](LossAggMode mode, bool fixed) {
    PpoConfig c = tiny_config();
    c.eos_token_id = 2;
    for (int64_t id = 29; id < 44; ++id) c.stop_token_ids.push_back(id);
    c.max_grad_norm = 0;
    c.loss_agg_mode = mode;
    c.derive();
    TrainerOptions o = quiet();
    o.fixed_response_length = fixed;
    PpoTrainer t(c, o);
    const std::vector<float> before = all_weights(t.policy());
    t.step();
    std::vector<float> d = all_weights(t.policy());
    for (size_t i = 0; i < d.size(); ++i) d[i] -= before[i];
    return d;
  };
  const std::vector<float> equal = delta(LossAggMode::TokenMean, true);
  CHECK(rel_l2(delta(LossAggMode::SeqMeanTokenMean, true), equal) < 1e-3);
  CHECK(rel_l2(delta(LossAggMode::SeqMeanTokenSum, true), equal) < 1e-2);
  const std::vector<float> ragged = delta(LossAggMode::TokenMean, false);
  MESSAGE("ragged: token-mean vs seq-mean-token-mean ", rel_l2(delta(LossAggMode::SeqMeanTokenMean, false), ragged),
          ", vs seq-mean-token-sum ", rel_l2(delta(LossAggMode::SeqMeanTokenSum, false), ragged));
  CHECK(rel_l2(delta(LossAggMode::SeqMeanTokenMean, false), ragged) > 0.1);
  CHECK(rel_l2(delta(LossAggMode::SeqMeanTokenSum, false), ragged) > 0.1);
}
