// Bradley-Terry reward-model training: the gradient of the pair loss (finite differences through
// the score head and a trunk weight), reward read at each response's last real token, held-out
// accuracy on the demo task's noisy pairs well above chance, and JSONL pairs + a tokenizer.
#include <doctest/doctest.h>

#include <cmath>
#include "../io/temp_files.h"
#include "helpers.h"
#include "ppo/demo_pipeline.h"
#include "ppo/reward_training.h"

using namespace ppo;

namespace {

ModelConfig tiny_reward(int64_t vocab = DemoTask::vocab_size(), int64_t max_seq_len = 16) {
  nlohmann::json j = demo_policy_config();
  j["d_model"] = 32;
  j["d_ff"] = 128;
  j["n_head"] = 2;
  j["vocab_size"] = vocab;
  j["max_seq_len"] = max_seq_len;
  return ModelConfig::from_json(j, "test reward model");
}

ModelSpec scalar_spec(const ModelConfig& c) { return {c, Heads::Scalar, Training::Trained, Generation::None}; }

RewardTrainingConfig rm_config(int64_t micro) {
  RewardTrainingConfig r;
  r.batch_size = 32;
  r.micro_batch_size = micro;
  r.learning_rate = 1e-3f;
  return r;
}

}  // namespace

TEST_CASE("the pair loss gradient matches finite differences; rewards sit at the last real token") {
  const DemoTask task(5);
  const std::vector<PreferenceExample> pairs = demo_preference_examples(task, 0, 5, 0.1);
  SingleModel m(DeviceKind::CPU, scalar_spec(tiny_reward()), {1, 7, 8, 6});
  m.model().init_random(3);
  // Larger weights than the init's so that rewards differ by O(1) and sigmoid is not flat.
  HostWeights w = read_weights(m.model());
  for (auto& [name, v] : w)
    for (size_t i = 0; i < v.size(); ++i) v[i] += float(0.2 * std::sin(double(i) * 1.7 + double(name.size())));
  write_weights(m.model(), w, WeightCoverage::All);
  RewardTrainer trainer(m, rm_config(3));  // 5 pairs in micro-batches of 3 and 2
  const PreferenceEval before = trainer.evaluate(pairs);

  // The loss from score_responses (each row scored alone) equals the trainer's.
  std::vector<std::vector<int32_t>> prompts, responses;
  for (const PreferenceExample& e : pairs) {
    prompts.push_back(e.prompt);
    responses.push_back(e.chosen);
  }
  for (const PreferenceExample& e : pairs) {
    prompts.push_back(e.prompt);
    responses.push_back(e.rejected);
  }
  const std::vector<double> r = score_responses(m, prompts, responses, DemoTask::kPad);
  double loss = 0;
  for (size_t i = 0; i < pairs.size(); ++i) loss += std::log1p(std::exp(-(r[i] - r[i + pairs.size()])));
  CHECK(before.loss == doctest::Approx(loss / double(pairs.size())).epsilon(1e-5));

  trainer.train_step(pairs);  // gradients at w stay in the model until the next step
  const std::vector<float> g_score = m.backend().to_host(m.model().gradient("score.weight"));
  const std::vector<float> g_fc = m.backend().to_host(m.model().gradient("h.1.mlp.c_fc.weight"));
  write_weights(m.model(), w, WeightCoverage::All);
  // f32 forward: central differences with h = 1e-2 on weights of size ~0.2 have truncation error
  // ~h^2 |L'''| ~ 1e-5 and rounding error ~1e-7 / h ~ 1e-5; gradients are O(1e-2..1e-1).
  const double h = 1e-2;
  auto fd = [&](const std::string& name, size_t i) {
    HostWeights p = w;
    p[name][i] += float(h);
    write_weights(m.model(), p, WeightCoverage::All);
    const double up = trainer.evaluate(pairs).loss;
    p[name][i] -= float(2 * h);
    write_weights(m.model(), p, WeightCoverage::All);
    const double down = trainer.evaluate(pairs).loss;
    write_weights(m.model(), w, WeightCoverage::All);
    return (up - down) / (2 * h);
  };
  for (size_t i : {size_t(0), size_t(7), size_t(31)})
    CHECK(g_score[i] == doctest::Approx(fd("score.weight", i)).epsilon(2e-2).scale(1e-3));
  for (size_t i : {size_t(3), size_t(500), size_t(4000)})
    CHECK(g_fc[i] == doctest::Approx(fd("h.1.mlp.c_fc.weight", i)).epsilon(2e-2).scale(1e-3));
}

TEST_CASE("a reward model trained on noisy demo pairs ranks held-out pairs well above chance") {
  const DemoTask task(9);
  SingleModel m(DeviceKind::CPU, scalar_spec(tiny_reward()), {1, 7, 8, 32});
  m.model().init_random(4);
  RewardTrainingConfig cfg = rm_config(16);
  cfg.epochs = 6;
  RewardTrainer trainer(m, cfg);
  const std::vector<PreferenceExample> held_out = demo_preference_examples(task, 100000, 256, 0.0);
  const PreferenceEval before = trainer.evaluate(held_out);
  const std::vector<MetricsRow> rows = trainer.train(demo_preference_examples(task, 0, 2048, 0.1));
  const PreferenceEval after = trainer.evaluate(held_out);
  MESSAGE("held-out accuracy (gold order) ", before.accuracy, " -> ", after.accuracy, "; loss ", before.loss, " -> ",
          after.loss);
  CHECK(rows.size() == 6 * 64);
  CHECK(rows.back().has(metric::kRmAccuracy));
  CHECK(after.loss < before.loss - 0.1);
  CHECK(after.accuracy > 0.65);  // chance is 0.5; 256 pairs: one standard error is ~0.03
}

TEST_CASE("reward training on JSONL pairs through a tokenizer") {
  const std::string dir = test::temp_dir();
  const std::string path = test::write_text(dir + "/pairs.jsonl",
      "{\"prompt\": \"Opposite of hot:\", \"chosen\": \" cold\", \"rejected\": \" hot\"}\n"
      "{\"prompt\": \"Opposite of up:\", \"chosen\": \" down\", \"rejected\": \" up up\"}\n");
  const io::Tokenizer tok = io::Tokenizer::load(std::string(PPO_SOURCE_DIR) + "/tests/data/tokenizers/gpt2");
  const int32_t eos = *tok.token_id("<|endoftext|>");
  const std::vector<PreferenceExample> data = preference_examples(io::load_preference_pairs(path), tok, eos);
  REQUIRE(data.size() == 2);
  CHECK(data[1].rejected == std::vector<int32_t>{tok.encode(" up up")[0], tok.encode(" up up")[1], eos});
  SingleModel m(DeviceKind::CPU, scalar_spec(tiny_reward(tok.vocab_size(), 32)), {1, 8, 8, 4});
  m.model().init_random(6);
  RewardTrainingConfig cfg = rm_config(2);
  cfg.epochs = 30;
  cfg.learning_rate = 3e-3f;
  RewardTrainer trainer(m, cfg);
  trainer.train(data);
  const PreferenceEval after = trainer.evaluate(data);
  CHECK(after.accuracy == 1.0);
  CHECK(after.loss < 0.2);
}
