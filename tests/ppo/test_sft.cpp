// Supervised fine-tuning: the loss is the token mean over response tokens only (independent of
// padding, batch composition and micro-batching), it falls on a tiny set, the SFT policy's gold
// reward on the demo task beats the random init's, and JSONL pairs + a tokenizer feed it.
#include <doctest/doctest.h>

#include <cmath>
#include "../io/temp_files.h"
#include "helpers.h"
#include "ppo/demo_pipeline.h"
#include "ppo/sft.h"

using namespace ppo;

namespace {

ModelConfig tiny_policy(int64_t vocab = DemoTask::vocab_size(), int64_t d = 32, int64_t max_seq_len = 16) {
  nlohmann::json j = demo_policy_config();
  j["max_seq_len"] = max_seq_len;
  j["d_model"] = d;
  j["d_ff"] = 4 * d;
  j["n_head"] = 2;
  j["vocab_size"] = vocab;
  return ModelConfig::from_json(j, "test policy");
}

ModelSpec lm_spec(const ModelConfig& c) { return {c, Heads::LM, Training::Trained, Generation::KVCache}; }

SftConfig sft_config(int64_t micro) {
  SftConfig s;
  s.batch_size = 16;
  s.micro_batch_size = micro;
  s.learning_rate = 3e-3f;
  return s;
}

}  // namespace

TEST_CASE("the SFT loss is the mean NLL of response tokens, whatever the padding and micro-batching") {
  const DemoTask task(3);
  const std::vector<SftExample> data = demo_sft_examples(task, 0, 7);  // prompts of 4-7 tokens, varied responses
  SingleModel a(DeviceKind::CPU, lm_spec(tiny_policy()), {8, 7, 8, 8});
  a.model().init_random(5);
  SftTrainer whole(a, sft_config(8));
  const double batch_loss = whole.evaluate(data);

  // One example at a time (no padding at all), weighted by its response tokens.
  SftTrainer single(a, sft_config(1));
  double sum = 0, count = 0;
  for (const SftExample& e : data) {
    sum += single.evaluate({e}) * double(e.response.size());
    count += double(e.response.size());
  }
  // f32 forward over different paddings: agreement to rounding (1e-5 relative), while a prompt
  // token counted in the loss would change it by O(1).
  CHECK(batch_loss == doctest::Approx(sum / count).epsilon(1e-5));
  CHECK(batch_loss > 0);

  // Gradients: micro-batches of 3 accumulate to the gradients of one micro-batch of 7.
  SingleModel b(DeviceKind::CPU, lm_spec(tiny_policy()), {8, 7, 8, 8});
  b.model().init_random(5);
  SftTrainer whole_b(b, sft_config(7)), split_a(a, sft_config(3));
  whole_b.train_step(data);
  split_a.train_step(data);
  for (const std::string& name : a.model().parameter_names()) {
    const std::vector<float> ga = a.backend().to_host(a.model().gradient(name));
    const std::vector<float> gb = b.backend().to_host(b.model().gradient(name));
    // f32 sums in a different order: 1e-6 absolute + 1e-4 relative.
    test::check_close(ga, gb, 1e-6, 1e-4, name);
  }
}

TEST_CASE("SFT lowers the loss on a tiny set, and the SFT policy's gold reward beats the random init's") {
  const DemoTask task(11);
  {
    const std::vector<SftExample> tiny = demo_sft_examples(task, 0, 32);
    SingleModel m(DeviceKind::CPU, lm_spec(tiny_policy()), {8, 7, 8, 16});
    m.model().init_random(1);
    SftConfig cfg = sft_config(16);
    cfg.epochs = 40;
    cfg.learning_rate = 1e-2f;
    SftTrainer trainer(m, cfg);
    const double before = trainer.evaluate(tiny);
    const std::vector<MetricsRow> rows = trainer.train(tiny);
    const double after = trainer.evaluate(tiny);
    MESSAGE("tiny set: loss ", before, " -> ", after, " in ", rows.size(), " steps");
    CHECK(rows.size() == 80);
    CHECK(rows.back().get(metric::kSftTokensPerSecond) > 0);
    CHECK(before > 3.0);          // about log(44) at the init
    CHECK(after < 0.5 * before);  // memorizing 32 examples
  }
  SingleModel m(DeviceKind::CPU, lm_spec(tiny_policy()), {64, 7, 8, 32});
  m.model().init_random(1);
  SamplingSettings sampling;
  sampling.max_new_tokens = 8;
  sampling.stop_token_ids = {DemoTask::kEos};
  sampling.seed = 1;
  const double random_gold = evaluate_heldout(m, task, kDemoEvalFirst, 128, sampling).gold;
  SftConfig cfg = sft_config(32);
  cfg.batch_size = 32;
  cfg.epochs = 4;
  SftTrainer(m, cfg).train(demo_sft_examples(task, 0, 1024));
  const double sft_gold = evaluate_heldout(m, task, kDemoEvalFirst, 128, sampling).gold;
  MESSAGE("gold reward: random init ", random_gold, ", SFT ", sft_gold);
  CHECK(random_gold < -0.3);           // random tokens, mostly no EOS
  CHECK(sft_gold > random_gold + 0.5);
}

TEST_CASE("SFT on JSONL pairs through a tokenizer") {
  const std::string dir = test::temp_dir();
  const std::string path = test::write_text(dir + "/sft.jsonl",
      "{\"prompt\": \"Opposite of hot:\", \"completion\": \" cold\"}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Opposite of up?\"}], \"completion\": \"down\"}\n");
  const io::Tokenizer tok = io::Tokenizer::load(std::string(PPO_SOURCE_DIR) + "/tests/data/tokenizers/gpt2");
  const int32_t eos = *tok.token_id("<|endoftext|>");
  const std::vector<SftExample> data = sft_examples(io::load_sft_pairs(path), tok, eos);
  REQUIRE(data.size() == 2);
  CHECK(data[0].prompt == tok.encode("Opposite of hot:"));
  CHECK(data[0].response.back() == eos);
  CHECK(tok.decode(std::vector<int32_t>(data[0].response.begin(), data[0].response.end() - 1)) == " cold");

  SingleModel m(DeviceKind::CPU, lm_spec(tiny_policy(tok.vocab_size(), 16, 64)),
                {1, max_prompt_length(data), max_response_length(data), 2});
  m.model().init_random(2);
  SftConfig cfg = sft_config(2);
  cfg.epochs = 20;
  cfg.learning_rate = 1e-2f;
  SftTrainer trainer(m, cfg);
  const double before = trainer.evaluate(data);
  trainer.train(data);
  const double after = trainer.evaluate(data);
  MESSAGE("gpt2 vocabulary: loss ", before, " -> ", after);
  CHECK(after < 0.5 * before);

  // A response longer than the planned shape is an error.
  std::vector<SftExample> too_long = data;
  too_long[1].response.resize(size_t(max_response_length(data) + 1), eos);
  CHECK(test::contains(test::error_of([&] { trainer.evaluate(too_long); }), "exceeds"));
}
