#include "io/hf_config.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include "engine/error.h"
#include "io/json_fields.h"

namespace ppo::io {
namespace {

using nlohmann::json;

// A field that must hold `expected` (or be absent) because the engine implements only that.
void require_value(const json& j, const std::string& where, const char* field, const json& expected, const char* why) {
  if (!has_field(j, field)) return;
  PPO_ASSERT(j.at(field) == expected, where, ": field '", field, "' = ", excerpt(j.at(field)), " is not supported (",
             why, "; the engine needs ", excerpt(expected), ")");
}

// RoPE: theta from the top level (transformers 4) or rope_parameters (transformers 5); any
// scaling (rope_scaling, or a rope_type other than "default") is unsupported.
float read_rope_theta(const json& j, const std::string& where) {
  float theta = read_positive_float(j, where, "rope_theta", 10000.0f);
  for (const char* field : {"rope_scaling", "rope_parameters"}) {
    if (!has_field(j, field)) continue;
    const json& r = j.at(field);
    PPO_ASSERT(r.is_object(), where, ": field '", field, "' must be an object, got ", excerpt(r));
    const std::string type = read_string(r, where + ": field '" + field + "'", r.contains("rope_type") ? "rope_type" : "type", "");
    PPO_ASSERT(type.empty() || type == "default", where, ": field '", field, "' has rope type \"", type,
               "\": RoPE scaling is not supported (only the default rotary embedding)");
    PPO_ASSERT(std::string(field) != "rope_scaling" || type == "default", where, ": field 'rope_scaling' = ",
               excerpt(r), " is not supported (only the default rotary embedding)");
    if (r.contains("rope_theta")) theta = read_positive_float(r, where + ": field '" + field + "'", "rope_theta", theta);
  }
  return theta;
}

// Sequence classifiers: num_labels (explicit, or the size of id2label; transformers' default is 2).
void require_one_label(const json& j, const std::string& where) {
  int64_t labels = 2;
  const char* field = "num_labels";
  if (has_field(j, "num_labels")) {
    labels = read_int(j, where, "num_labels", {1, INT32_MAX}, 2, Presence::Required);
  } else if (has_field(j, "id2label")) {
    PPO_ASSERT(j.at("id2label").is_object(), where, ": field 'id2label' must be an object");
    labels = int64_t(j.at("id2label").size());
    field = "id2label";
  }
  PPO_ASSERT(labels == 1, where, ": field '", field, "' gives num_labels = ", labels,
             "; a reward/value model needs exactly one label (a scalar score)");
}

HfModelConfig parse_gpt2(const json& j, const std::string& where) {
  HfModelConfig h;
  ModelConfig& c = h.config;
  c.arch = Arch::GPT2;
  c.n_layer = read_int(j, where, "n_layer", {1, kMaxLayers}, 0, Presence::Required);
  c.n_head = read_int(j, where, "n_head", {1, kMaxHeads}, 0, Presence::Required);
  c.n_kv_head = c.n_head;
  c.d_model = read_int(j, where, "n_embd", {1, kMaxModelWidth}, 0, Presence::Required);
  c.d_ff = read_int(j, where, "n_inner", {1, kMaxFfWidth}, 4 * c.d_model, Presence::Optional);  // null -> 4 * n_embd
  c.vocab_size = read_int(j, where, "vocab_size", {1, kMaxVocabSize}, 0, Presence::Required);
  c.max_seq_len = read_int(j, where, "n_positions", {1, kMaxSeqLen}, 0, Presence::Required);
  c.norm_eps = read_positive_float(j, where, "layer_norm_epsilon", 1e-5f);
  c.tied_embeddings = true;
  c.qkv_bias = true;
  const std::string act = read_string(j, where, "activation_function", "gelu_new");
  PPO_ASSERT(act == "gelu_new" || act == "gelu_pytorch_tanh", where, ": field 'activation_function' = \"", act,
             "\" is not supported (the engine's GELU is the tanh approximation: gelu_new)");
  PPO_ASSERT(read_bool(j, where, "tie_word_embeddings", true), where,
             ": field 'tie_word_embeddings' = false is not supported for gpt2 (the engine ties the LM head to wte)");
  require_value(j, where, "scale_attn_weights", true, "attention scores are scaled by 1/sqrt(head size)");
  require_value(j, where, "scale_attn_by_inverse_layer_idx", false, "no per-layer attention scaling");
  require_value(j, where, "add_cross_attention", false, "decoder-only");
  return h;
}

HfModelConfig parse_llama_family(const json& j, const std::string& where, HfFamily family) {
  HfModelConfig h;
  ModelConfig& c = h.config;
  c.arch = Arch::Llama;
  c.n_layer = read_int(j, where, "num_hidden_layers", {1, kMaxLayers}, 0, Presence::Required);
  c.n_head = read_int(j, where, "num_attention_heads", {1, kMaxHeads}, 0, Presence::Required);
  c.n_kv_head = read_int(j, where, "num_key_value_heads", {1, kMaxHeads}, c.n_head, Presence::Optional);
  c.d_model = read_int(j, where, "hidden_size", {1, kMaxModelWidth}, 0, Presence::Required);
  c.d_ff = read_int(j, where, "intermediate_size", {1, kMaxFfWidth}, 0, Presence::Required);
  c.vocab_size = read_int(j, where, "vocab_size", {1, kMaxVocabSize}, 0, Presence::Required);
  c.max_seq_len = read_int(j, where, "max_position_embeddings", {1, kMaxSeqLen}, 0, Presence::Required);
  c.norm_eps = read_positive_float(j, where, "rms_norm_eps", 1e-6f);
  c.rope_theta = read_rope_theta(j, where);
  c.tied_embeddings = read_bool(j, where, "tie_word_embeddings", false);
  c.qkv_bias = family == HfFamily::Qwen2;
  PPO_ASSERT(c.d_model % c.n_head == 0, where, ": field 'num_attention_heads' = ", c.n_head,
             " does not divide hidden_size = ", c.d_model);
  require_value(j, where, "head_dim", c.d_model / c.n_head, "head size = hidden_size / num_attention_heads");
  const std::string act = read_string(j, where, "hidden_act", "silu");
  PPO_ASSERT(act == "silu", where, ": field 'hidden_act' = \"", act, "\" is not supported (the engine's MLP is SwiGLU: silu)");
  if (family == HfFamily::Llama) {
    require_value(j, where, "attention_bias", false, "Llama's attention_bias also adds an o_proj bias");
    require_value(j, where, "mlp_bias", false, "the MLP has no biases");
  } else {
    require_value(j, where, "use_sliding_window", false, "sliding-window attention");
    if (has_field(j, "layer_types")) {
      PPO_ASSERT(j.at("layer_types").is_array(), where, ": field 'layer_types' must be an array");
      for (const json& t : j.at("layer_types"))
        PPO_ASSERT(t == "full_attention", where, ": field 'layer_types' holds ", excerpt(t),
                   ", which is not supported (only full_attention; no sliding window)");
    }
  }
  return h;
}

// The shortest decimal that reads back as `x` (config.json shows 1e-05, not 9.99999974e-06).
double shortest_decimal(float x) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, double(x));
    if (std::strtof(text, nullptr) == x) break;
  }
  return std::strtod(text, nullptr);
}

}  // namespace

namespace {

// The field eos_token_id of a config.json or generation_config.json document: a token id or a
// list of them; empty when absent or null.
std::vector<int64_t> eos_field(const json& j, const std::string& where) {
  if (!has_field(j, "eos_token_id")) return {};
  const json& v = j.at("eos_token_id");
  std::vector<int64_t> ids;
  for (const json& e : v.is_array() ? v : json::array({v})) {
    PPO_ASSERT(is_int_in(e, {0, kMaxVocabSize - 1}), where, ": field 'eos_token_id' = ",
               excerpt(v), " is not a token id below ", kMaxVocabSize, " (or a list of them)");
    ids.push_back(e.get<int64_t>());
  }
  return ids;
}

}  // namespace

HfModelConfig parse_hf_config(const json& j, const std::string& where) {
  PPO_ASSERT(j.is_object(), where, ": a config.json must be a JSON object");
  PPO_ASSERT(has_field(j, "architectures") && j.at("architectures").is_array() && j.at("architectures").size() == 1 &&
                 j.at("architectures")[0].is_string(),
             where, ": field 'architectures' must list exactly one model class, got ",
             has_field(j, "architectures") ? excerpt(j.at("architectures")) : "nothing");
  const std::string arch = j.at("architectures")[0].get<std::string>();
  struct Known {
    const char* name;
    HfFamily family;
    Heads heads;
    const char* model_type;
  };
  static const Known known[] = {
      {"GPT2LMHeadModel", HfFamily::GPT2, Heads::LM, "gpt2"},
      {"GPT2ForSequenceClassification", HfFamily::GPT2, Heads::Scalar, "gpt2"},
      {"LlamaForCausalLM", HfFamily::Llama, Heads::LM, "llama"},
      {"LlamaForSequenceClassification", HfFamily::Llama, Heads::Scalar, "llama"},
      {"Qwen2ForCausalLM", HfFamily::Qwen2, Heads::LM, "qwen2"},
      {"Qwen2ForSequenceClassification", HfFamily::Qwen2, Heads::Scalar, "qwen2"},
  };
  const Known* k = nullptr;
  for (const Known& candidate : known)
    if (arch == candidate.name) k = &candidate;
  PPO_ASSERT(k != nullptr, where, ": field 'architectures' = \"", arch,
             "\" is not supported (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM and their "
             "*ForSequenceClassification variants)");
  const std::string model_type = read_string(j, where, "model_type", k->model_type);
  PPO_ASSERT(model_type == k->model_type, where, ": field 'model_type' = \"", model_type, "\" does not match ",
             arch, " (\"", k->model_type, "\")");
  HfModelConfig h = k->family == HfFamily::GPT2 ? parse_gpt2(j, where) : parse_llama_family(j, where, k->family);
  h.family = k->family;
  h.heads = k->heads;
  h.architecture = arch;
  if (h.heads == Heads::Scalar) require_one_label(j, where);
  h.eos_token_ids = eos_field(j, where);
  // The engine's own checks (divisibility, even head size, ...), under the engine's field names.
  h.config = ModelConfig::from_json(h.config.to_json(), where + " (as the engine config)");
  return h;
}

HfModelConfig read_hf_config(const std::string& path) {
  std::error_code ec;
  const std::string file = std::filesystem::is_directory(path, ec) ? path + "/config.json" : path;
  const json j = read_json_file(file);
  return parse_hf_config(j, file);
}

json hf_config_json(const ModelConfig& c, Heads heads, int64_t pad_token_id) {
  PPO_ASSERT(heads != Heads::LMAndScalar, "hf_config_json: a model with both an LM and a scalar head has no "
             "Hugging Face class; export the LM and the scalar model separately");
  const bool lm = heads == Heads::LM;
  json j;
  if (c.arch == Arch::GPT2) {
    j = {{"architectures", {lm ? "GPT2LMHeadModel" : "GPT2ForSequenceClassification"}},
         {"model_type", "gpt2"},
         {"vocab_size", c.vocab_size},
         {"n_positions", c.max_seq_len},
         {"n_embd", c.d_model},
         {"n_layer", c.n_layer},
         {"n_head", c.n_head},
         {"n_inner", c.d_ff},
         {"activation_function", "gelu_new"},
         {"layer_norm_epsilon", shortest_decimal(c.norm_eps)},
         {"resid_pdrop", 0.0},
         {"embd_pdrop", 0.0},
         {"attn_pdrop", 0.0},
         {"tie_word_embeddings", true}};
  } else {
    const bool qwen2 = c.qkv_bias;
    const std::string family = qwen2 ? "Qwen2" : "Llama";
    j = {{"architectures", {family + (lm ? "ForCausalLM" : "ForSequenceClassification")}},
         {"model_type", qwen2 ? "qwen2" : "llama"},
         {"vocab_size", c.vocab_size},
         {"hidden_size", c.d_model},
         {"intermediate_size", c.d_ff},
         {"num_hidden_layers", c.n_layer},
         {"num_attention_heads", c.n_head},
         {"num_key_value_heads", c.n_kv_head},
         {"head_dim", c.head_size()},
         {"max_position_embeddings", c.max_seq_len},
         {"rms_norm_eps", shortest_decimal(c.norm_eps)},
         {"rope_theta", shortest_decimal(c.rope_theta)},
         {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", shortest_decimal(c.rope_theta)}}},
         {"hidden_act", "silu"},
         {"attention_dropout", 0.0},
         {"tie_word_embeddings", c.tied_embeddings}};
    if (qwen2) j["use_sliding_window"] = false;
    else j["attention_bias"] = false, j["mlp_bias"] = false;
  }
  if (!lm) {
    j["id2label"] = {{"0", "LABEL_0"}};
    j["label2id"] = {{"LABEL_0", 0}};
  }
  if (pad_token_id >= 0) j["pad_token_id"] = pad_token_id;
  j["dtype"] = "float32";
  return j;
}

std::vector<int64_t> checkpoint_eos_token_ids(const std::string& dir) {
  const std::vector<int64_t> eos = read_hf_config(dir).eos_token_ids;
  const std::string file = dir + "/generation_config.json";
  std::error_code ec;
  if (!eos.empty() || !std::filesystem::exists(file, ec)) return eos;
  const json j = read_json_file(file);
  PPO_ASSERT(j.is_object(), file, ": expected a JSON object, got ", excerpt(j));
  return eos_field(j, file);
}

}  // namespace ppo::io
