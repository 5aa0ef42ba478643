#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <vector>
#include "engine/error.h"

namespace ppo {

const char* arch_name(Arch a) { return a == Arch::GPT2 ? "gpt2" : "llama"; }

namespace {

using json = nlohmann::json;

const std::vector<std::string>& known_fields() {
  static const std::vector<std::string> f{"arch",        "n_layer",    "n_head",   "n_kv_head",
                                          "d_model",     "d_ff",       "vocab_size", "max_seq_len",
                                          "rope_theta",  "norm_eps",   "tied_embeddings", "qkv_bias"};
  return f;
}

// Field readers: each names `where` and the field in its error.
int64_t read_size(const json& j, const std::string& where, const char* field, bool required, int64_t fallback) {
  if (!j.contains(field)) {
    PPO_ASSERT(!required, where, ": missing field '", field, "'");
    return fallback;
  }
  const json& v = j.at(field);
  PPO_ASSERT(v.is_number_integer(), where, ": field '", field, "' must be an integer, got ", v.dump());
  const int64_t n = v.get<int64_t>();
  PPO_ASSERT(n > 0, where, ": field '", field, "' = ", n, " must be positive");
  return n;
}

float read_positive_float(const json& j, const std::string& where, const char* field, float fallback) {
  if (!j.contains(field)) return fallback;
  const json& v = j.at(field);
  PPO_ASSERT(v.is_number(), where, ": field '", field, "' must be a number, got ", v.dump());
  const double x = v.get<double>();
  PPO_ASSERT(std::isfinite(x) && x > 0, where, ": field '", field, "' = ", x, " must be positive");
  return float(x);
}

bool read_bool(const json& j, const std::string& where, const char* field, bool fallback) {
  if (!j.contains(field)) return fallback;
  const json& v = j.at(field);
  PPO_ASSERT(v.is_boolean(), where, ": field '", field, "' must be true or false, got ", v.dump());
  return v.get<bool>();
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& where) {
  PPO_ASSERT(j.is_object(), where, ": a model config must be a JSON object, got ", j.dump());
  for (const auto& item : j.items())
    PPO_ASSERT(std::find(known_fields().begin(), known_fields().end(), item.key()) != known_fields().end(), where,
               ": unknown field '", item.key(), "'");
  ModelConfig c;
  PPO_ASSERT(j.contains("arch"), where, ": missing field 'arch'");
  PPO_ASSERT(j.at("arch").is_string(), where, ": field 'arch' must be a string (\"gpt2\" or \"llama\"), got ",
             j.at("arch").dump());
  const std::string arch = j.at("arch").get<std::string>();
  PPO_ASSERT(arch == "gpt2" || arch == "llama", where, ": field 'arch' = \"", arch, "\" must be \"gpt2\" or \"llama\"");
  c.arch = arch == "gpt2" ? Arch::GPT2 : Arch::Llama;
  c.n_layer = read_size(j, where, "n_layer", true, 0);
  c.n_head = read_size(j, where, "n_head", true, 0);
  c.n_kv_head = read_size(j, where, "n_kv_head", false, c.n_head);
  c.d_model = read_size(j, where, "d_model", true, 0);
  c.d_ff = read_size(j, where, "d_ff", true, 0);
  c.vocab_size = read_size(j, where, "vocab_size", true, 0);
  c.max_seq_len = read_size(j, where, "max_seq_len", true, 0);
  c.rope_theta = read_positive_float(j, where, "rope_theta", c.rope_theta);
  c.norm_eps = read_positive_float(j, where, "norm_eps", c.norm_eps);
  const bool gpt2 = c.arch == Arch::GPT2;
  c.tied_embeddings = read_bool(j, where, "tied_embeddings", true);
  c.qkv_bias = read_bool(j, where, "qkv_bias", gpt2);

  PPO_ASSERT(c.d_model % c.n_head == 0, where, ": field 'n_head' = ", c.n_head, " does not divide d_model = ", c.d_model);
  PPO_ASSERT(c.n_head % c.n_kv_head == 0, where, ": field 'n_kv_head' = ", c.n_kv_head,
             " does not divide n_head = ", c.n_head);
  if (gpt2) {
    PPO_ASSERT(c.n_kv_head == c.n_head, where, ": field 'n_kv_head' = ", c.n_kv_head,
               " must equal n_head for gpt2 (no grouped-query attention)");
    PPO_ASSERT(c.tied_embeddings, where, ": field 'tied_embeddings' must be true for gpt2");
    PPO_ASSERT(c.qkv_bias, where, ": field 'qkv_bias' must be true for gpt2 (it has every bias)");
  } else {
    PPO_ASSERT(c.head_size() % 2 == 0, where, ": field 'n_head' = ", c.n_head, " gives head size ", c.head_size(),
               ", which RoPE needs even");
  }
  PPO_ASSERT(c.vocab_size <= INT32_MAX && c.max_seq_len <= INT32_MAX, where,
             ": vocab_size and max_seq_len must fit token ids and positions (i32)");
  return c;
}

json ModelConfig::to_json() const {
  return json{{"arch", arch_name(arch)}, {"n_layer", n_layer},       {"n_head", n_head},
              {"n_kv_head", n_kv_head},  {"d_model", d_model},       {"d_ff", d_ff},
              {"vocab_size", vocab_size}, {"max_seq_len", max_seq_len}, {"rope_theta", rope_theta},
              {"norm_eps", norm_eps},    {"tied_embeddings", tied_embeddings}, {"qkv_bias", qkv_bias}};
}

}  // namespace ppo
