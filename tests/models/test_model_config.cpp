// ModelConfig::from_json: both families parse, and every error names the file and the field.
#include <doctest/doctest.h>

#include "engine/error.h"
#include "models/config.h"

using namespace ppo;
using json = nlohmann::json;

static json llama_json() {
  return json{{"arch", "llama"}, {"n_layer", 2},     {"n_head", 4},       {"n_kv_head", 2},
              {"d_model", 24},   {"d_ff", 20},       {"vocab_size", 37},  {"max_seq_len", 16},
              {"qkv_bias", true}, {"tied_embeddings", false}, {"rope_theta", 1e6}};
}

// The error from parsing j, which must fail.
static std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j, "cfg.json: policy");
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected an error for ", j.dump());
  return "";
}

TEST_CASE("model config: llama and gpt2 parse, defaults and derived sizes") {
  const ModelConfig l = ModelConfig::from_json(llama_json(), "cfg.json");
  CHECK(l.arch == Arch::Llama);
  CHECK(l.head_size() == 6);
  CHECK(l.qkv_width() == (4 + 2 * 2) * 6);
  CHECK(l.qkv_bias);
  CHECK(!l.tied_embeddings);
  CHECK(l.rope_theta == doctest::Approx(1e6));
  const ModelConfig g = ModelConfig::from_json(
      json{{"arch", "gpt2"}, {"n_layer", 12}, {"n_head", 12}, {"d_model", 768}, {"d_ff", 3072}, {"vocab_size", 50257},
           {"max_seq_len", 1024}},
      "cfg.json");
  CHECK(g.n_kv_head == 12);  // default: n_head
  CHECK(g.qkv_bias);
  CHECK(g.tied_embeddings);
  CHECK(g.head_size() == 64);
  // round trip
  const ModelConfig again = ModelConfig::from_json(l.to_json(), "again");
  CHECK(again.to_json() == l.to_json());
}

TEST_CASE("model config errors name the file and the field") {
  auto has = [](const std::string& msg, const char* field) {
    CHECK_MESSAGE(msg.find("cfg.json: policy") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(field) != std::string::npos, msg);
  };
  json j = llama_json();
  j.erase("d_model");
  has(error_of(j), "missing field 'd_model'");

  j = llama_json();
  j["n_layer"] = "2";
  has(error_of(j), "field 'n_layer' must be an integer");

  j = llama_json();
  j["rope_theta"] = true;
  has(error_of(j), "field 'rope_theta' must be a number");

  j = llama_json();
  j["n_heads"] = 4;
  has(error_of(j), "unknown field 'n_heads'");

  j = llama_json();
  j["n_head"] = 5;
  j["n_kv_head"] = 5;
  has(error_of(j), "field 'n_head' = 5 does not divide d_model = 24");

  j = llama_json();
  j["n_kv_head"] = 3;
  has(error_of(j), "field 'n_kv_head' = 3 does not divide n_head = 4");

  j = llama_json();
  j["d_ff"] = 0;
  has(error_of(j), "field 'd_ff' = 0 must lie in [1, 524288]");

  j = llama_json();
  j["n_layer"] = int64_t(1) << 31;  // an upper bound on every size
  has(error_of(j), "field 'n_layer' = 2147483648 must lie in [1, 1024]");

  j = llama_json();
  j["vocab_size"] = UINT64_MAX;  // no wrap to -1
  has(error_of(j), "field 'vocab_size' = 18446744073709551615 must lie in");

  j = llama_json();
  j["arch"] = "mamba";
  has(error_of(j), "field 'arch'");

  j = llama_json();
  j["arch"] = "gpt2";  // gpt2 has no grouped-query attention
  has(error_of(j), "field 'n_kv_head'");
}
