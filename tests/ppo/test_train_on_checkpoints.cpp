// `ppo train` on real models (ppo/train_loop.h run_on_checkpoints): a Hugging Face policy and
// reward model (tiny, random, with GPT-2's real 50257-token vocabulary and tokenizer), a JSONL
// prompt set; the files it writes, resume, and the config errors of checkpoint runs.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include "../io/temp_files.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "ppo/train_loop.h"
#include "ppo/trainer.h"

using namespace ppo;

namespace {

const std::string kTokenizer = std::string(PPO_SOURCE_DIR) + "/tests/data/tokenizers/gpt2";

// A random 1-layer GPT-2 policy and reward model with the GPT-2 vocabulary, exported as Hugging
// Face directories dir/policy and dir/reward.
void write_checkpoints(const std::string& dir) {
  PpoConfig c;
  c.device = DeviceChoice::CPU;
  c.policy = {{"arch", "gpt2"}, {"n_layer", 1}, {"n_head", 2}, {"d_model", 16}, {"d_ff", 32},
              {"vocab_size", 50257}, {"max_seq_len", 64}};
  c.rollout_batch_size = 1;
  c.prompt_length = 4;
  c.response_length = 4;
  c.micro_batch_size = 1;
  c.derive();
  TrainerOptions o;
  o.prompts = PromptSource::token_ids({{1, 2}});
  o.print_plan = false;
  PpoTrainer t(c, o);
  io::export_hf_checkpoint(dir + "/policy", t.policy(), Heads::LM);
  io::export_hf_checkpoint(dir + "/reward", t.reward_model(), Heads::Scalar);
  std::ofstream(dir + "/policy/generation_config.json") << R"({"eos_token_id": [50256, 198]})";
}

std::vector<std::string> run_settings(const std::string& dir) {
  return {"device=cpu", "policy_checkpoint=" + dir + "/policy", "reward_checkpoint=" + dir + "/reward",
          "prompts=" + dir + "/prompts.jsonl", "tokenizer=" + kTokenizer, "rollout_batch_size=4",
          "micro_batch_size=2", "prompt_length=32", "response_length=6", "learning_rate=1e-3",
          "output_dir=" + dir + "/run"};
}

}  // namespace

TEST_CASE("ppo train on Hugging Face checkpoints: files, trained policy, resume") {
  const std::string dir = test::temp_dir();
  write_checkpoints(dir);
  test::write_text(dir + "/prompts.jsonl",
                   "{\"prompt\": \"The capital of France is\"}\n{\"prompt\": \"Write a haiku about rain:\"}\n"
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi!\"}]}\n{\"prompt\": \"1 + 1 =\"}\n");
  std::vector<std::string> settings = run_settings(dir);
  settings.push_back("total_steps=2");
  const PpoConfig c = load_config("", settings);
  CHECK(c.policy.at("vocab_size") == 50257);  // from the checkpoint's config.json
  CHECK(c.reward.at("d_model") == 16);
  CHECK(c.tokenizer == kTokenizer);

  const std::vector<MetricsRow> rows = run_on_checkpoints(c, {});
  REQUIRE(rows.size() == 2);
  CHECK(std::isfinite(rows.back().get(metric::kScores)));
  for (const char* f : {"metrics.jsonl", "metrics.svg", "checkpoints/latest", "policy/config.json",
                        "policy/model.safetensors", "value/config.json", "value/model.safetensors"})
    CHECK_MESSAGE(std::filesystem::exists(c.output_dir + "/" + f), f);
  // the exported policy loads as a GPT-2 causal LM and was trained
  CHECK(io::read_hf_config(c.output_dir + "/policy").architecture == "GPT2LMHeadModel");
  const io::HostTensor before = io::SafetensorsFile(dir + "/policy/model.safetensors").load("transformer.h.0.mlp.c_fc.weight");
  const io::HostTensor after = io::SafetensorsFile(c.output_dir + "/policy/model.safetensors").load("transformer.h.0.mlp.c_fc.weight");
  CHECK(before.shape == after.shape);
  CHECK(before.bytes != after.bytes);

  // a fresh run into the same output_dir stops before any work; a resume extends the run
  CHECK(test::contains(test::error_of([&] { run_on_checkpoints(c, {}); }), "resume it"));
  settings.back() = "total_steps=3";
  settings.push_back("resume=" + c.output_dir + "/checkpoints");
  const std::vector<MetricsRow> resumed = run_on_checkpoints(load_config("", settings), {});
  REQUIRE(resumed.size() == 3);  // the two rows kept, one new
  CHECK(resumed[1].get(metric::kScores) == rows[1].get(metric::kScores));
  CHECK(read_metrics_jsonl(c.output_dir + "/metrics.jsonl").size() == 3);

  // a resume writes on in the run's own output_dir: another one is an error before any work
  settings.push_back("output_dir=" + dir + "/elsewhere");
  CHECK(test::contains(test::error_of([&] { run_on_checkpoints(load_config("", settings), {}); }),
                       "is not a checkpoint of output_dir"));
  CHECK(!std::filesystem::exists(dir + "/elsewhere"));
}

TEST_CASE("ppo train on Hugging Face checkpoints with each estimator and with DPO") {
  const std::string dir = test::temp_dir();
  write_checkpoints(dir);
  test::write_text(dir + "/prompts.jsonl", "{\"prompt\": \"The capital of France is\"}\n{\"prompt\": \"1 + 1 =\"}\n");
  for (const char* algorithm : {"grpo", "rloo", "reinforce_pp"}) {
    std::vector<std::string> settings = run_settings(dir);
    settings.back() = "output_dir=" + dir + "/" + algorithm;
    for (const std::string& kv : {std::string("total_steps=2"), std::string("samples_per_prompt=2"), std::string("algorithm=") + algorithm})
      settings.push_back(kv);
    const std::vector<MetricsRow> rows = run_on_checkpoints(load_config("", settings), {});
    REQUIRE(rows.size() == 2);
    CHECK_MESSAGE(rows.back().get(metric::kSkipped) == 0.0, algorithm);
    CHECK_MESSAGE(std::filesystem::exists(dir + "/" + algorithm + "/policy/model.safetensors"), algorithm);
    CHECK_MESSAGE(!std::filesystem::exists(dir + "/" + algorithm + "/value"), algorithm);  // critic-free
  }

  // DPO: pairs through the tokenizer, no reward model; resume extends the run
  test::write_text(dir + "/pairs.jsonl",
                   "{\"prompt\": \"Opposite of hot:\", \"chosen\": \" cold\", \"rejected\": \" warm\"}\n"
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"Opposite of up?\"}], \"chosen\": \"down\", "
                   "\"rejected\": \"up\"}\n{\"prompt\": \"2 + 2 =\", \"chosen\": \" 4\", \"rejected\": \" 5\"}\n");
  std::vector<std::string> settings = {"device=cpu", "algorithm=dpo", "policy_checkpoint=" + dir + "/policy",
                                       "preferences=" + dir + "/pairs.jsonl", "tokenizer=" + kTokenizer,
                                       "rollout_batch_size=2", "micro_batch_size=1", "prompt_length=32",
                                       "response_length=4", "learning_rate=1e-2", "output_dir=" + dir + "/dpo",
                                       "total_steps=2"};
  const std::vector<MetricsRow> rows = run_on_checkpoints(load_config("", settings), {});
  REQUIRE(rows.size() == 2);
  CHECK(rows.front().get(metric::kDpoLoss) == doctest::Approx(std::log(2.0)).epsilon(1e-4));
  const io::HostTensor before = io::SafetensorsFile(dir + "/policy/model.safetensors").load("transformer.h.0.mlp.c_fc.weight");
  const io::HostTensor after = io::SafetensorsFile(dir + "/dpo/policy/model.safetensors").load("transformer.h.0.mlp.c_fc.weight");
  CHECK(before.bytes != after.bytes);  // trained
  for (const char* f : {"metrics.jsonl", "metrics.svg", "checkpoints/latest", "policy/model.safetensors"})
    CHECK_MESSAGE(std::filesystem::exists(dir + "/dpo/" + f), f);
  settings.back() = "total_steps=3";
  settings.push_back("resume=" + dir + "/dpo/checkpoints");
  const std::vector<MetricsRow> resumed = run_on_checkpoints(load_config("", settings), {});
  REQUIRE(resumed.size() == 3);
  CHECK(resumed[1].get(metric::kDpoLoss) == rows[1].get(metric::kDpoLoss));
  CHECK(test::contains(test::error_of([&] { run_on_checkpoints(load_config("", {"algorithm=dpo", "device=cpu"}), {}); }),
                       "needs policy_checkpoint and preferences"));
  settings = {"device=cpu", "algorithm=dpo", "policy_checkpoint=" + dir + "/policy", "preferences=" + dir + "/pairs.jsonl",
              "tokenizer=" + kTokenizer, "prompt_length=32", "response_length=1", "output_dir=" + dir + "/short"};
  const std::string too_long = test::error_of([&] { run_on_checkpoints(load_config("", settings), {}); });
  CHECK_MESSAGE(test::contains(too_long, "dpo: pair 0: a response of 2 tokens; 1 to response_length = 1"), too_long);
}

TEST_CASE("checkpoint runs: config errors name the key and the file") {
  const std::string dir = test::temp_dir();
  write_checkpoints(dir);
  using test::contains;
  using test::error_of;
  // eos_token_id from config.json, else generation_config.json (a list: its first), when the
  // config leaves it at -1; neither: an error
  const PpoConfig from_generation = load_config("", {"policy_checkpoint=" + dir + "/policy"});
  CHECK(from_generation.eos_token_id == 50256);  // generation_config.json's list: the EOS, then more stop tokens
  CHECK(from_generation.stop_token_ids == std::vector<int64_t>{198});
  std::filesystem::remove(dir + "/policy/generation_config.json");
  CHECK(contains(error_of([&] { load_config("", {"policy_checkpoint=" + dir + "/policy"}); }), "set eos_token_id"));
  {
    std::ifstream in(dir + "/policy/config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j["eos_token_id"] = {50255, 7};
    std::ofstream(dir + "/policy/config.json") << j.dump();
  }
  CHECK(load_config("", {"policy_checkpoint=" + dir + "/policy"}).eos_token_id == 50255);
  CHECK(load_config("", {"policy_checkpoint=" + dir + "/policy"}).stop_token_ids == std::vector<int64_t>{7});
  std::ofstream(dir + "/policy/generation_config.json") << R"({"eos_token_id": 198})";
  CHECK(load_config("", {"policy_checkpoint=" + dir + "/policy"}).eos_token_id == 50255);  // config.json's first
  const PpoConfig given = load_config("", {"policy_checkpoint=" + dir + "/policy", "eos_token_id=3"});
  CHECK(given.eos_token_id == 3);
  CHECK(given.stop_token_ids.empty());  // an EOS given by the config: the checkpoint's list is not used
  CHECK(contains(error_of([&] { load_config("", {"policy_checkpoint=" + dir + "/reward"}); }), "is not a causal"));
  CHECK(contains(error_of([&] { load_config("", {"reward_checkpoint=" + dir + "/policy"}); }), "sequence classifier"));
  CHECK(contains(error_of([&] { load_config("", {"policy_checkpoint=" + dir + "/policy", "policy.n_layer=2"}); }),
                 "leave policy out"));
  CHECK(contains(error_of([&] { load_config("", {"prompts=" + dir + "/p.jsonl"}); }), "set tokenizer"));
  CHECK(contains(error_of([&] { load_config("", {"policy_checkpoint=" + dir + "/nothing"}); }), "nothing"));
  CHECK(contains(error_of([&] { run_on_checkpoints(load_config("", {"policy_checkpoint=" + dir + "/policy"}), {}); }),
                 "needs policy_checkpoint, reward_checkpoint and prompts"));
}
