#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <vector>
#include "engine/error.h"
#include "io/json_fields.h"

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

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& where) {
  PPO_ASSERT(j.is_object(), where, ": a model config must be a JSON object, got ", io::excerpt(j));
  for (const auto& item : j.items())
    PPO_ASSERT(std::find(known_fields().begin(), known_fields().end(), item.key()) != known_fields().end(), where,
               ": unknown field '", item.key(), "'");
  ModelConfig c;
  PPO_ASSERT(j.contains("arch"), where, ": missing field 'arch'");
  PPO_ASSERT(j.at("arch").is_string(), where, ": field 'arch' must be a string (\"gpt2\" or \"llama\"), got ",
             io::excerpt(j.at("arch")));
  const std::string arch = j.at("arch").get<std::string>();
  PPO_ASSERT(arch == "gpt2" || arch == "llama", where, ": field 'arch' = \"", arch, "\" must be \"gpt2\" or \"llama\"");
  c.arch = arch == "gpt2" ? Arch::GPT2 : Arch::Llama;
  c.n_layer = io::read_int(j, where, "n_layer", {1, kMaxLayers}, 0, io::Presence::Required);
  c.n_head = io::read_int(j, where, "n_head", {1, kMaxHeads}, 0, io::Presence::Required);
  c.n_kv_head = io::read_int(j, where, "n_kv_head", {1, kMaxHeads}, c.n_head, io::Presence::Optional);
  c.d_model = io::read_int(j, where, "d_model", {1, kMaxModelWidth}, 0, io::Presence::Required);
  c.d_ff = io::read_int(j, where, "d_ff", {1, kMaxFfWidth}, 0, io::Presence::Required);
  c.vocab_size = io::read_int(j, where, "vocab_size", {1, kMaxVocabSize}, 0, io::Presence::Required);
  c.max_seq_len = io::read_int(j, where, "max_seq_len", {1, kMaxSeqLen}, 0, io::Presence::Required);
  c.rope_theta = io::read_positive_float(j, where, "rope_theta", c.rope_theta);
  c.norm_eps = io::read_positive_float(j, where, "norm_eps", c.norm_eps);
  const bool gpt2 = c.arch == Arch::GPT2;
  c.tied_embeddings = io::read_bool(j, where, "tied_embeddings", true);
  c.qkv_bias = io::read_bool(j, where, "qkv_bias", gpt2);

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
  return c;
}

json ModelConfig::to_json() const {
  return json{{"arch", arch_name(arch)}, {"n_layer", n_layer},       {"n_head", n_head},
              {"n_kv_head", n_kv_head},  {"d_model", d_model},       {"d_ff", d_ff},
              {"vocab_size", vocab_size}, {"max_seq_len", max_seq_len}, {"rope_theta", rope_theta},
              {"norm_eps", norm_eps},    {"tied_embeddings", tied_embeddings}, {"qkv_bias", qkv_bias}};
}

}  // namespace ppo
