// Hugging Face `config.json` <-> ModelConfig for the architectures the engine runs:
//   GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM            -> Heads::LM
//   GPT2/Llama/Qwen2ForSequenceClassification (num_labels == 1)    -> Heads::Scalar (`score`)
// Field map: gpt2 n_layer, n_head, n_embd, n_inner (null: 4*n_embd), vocab_size, n_positions,
// layer_norm_epsilon; llama/qwen2 num_hidden_layers, num_attention_heads, num_key_value_heads
// (default: heads), hidden_size, intermediate_size, vocab_size, max_position_embeddings,
// rms_norm_eps, rope_theta (top level, or rope_parameters.rope_theta as transformers 5 writes it),
// tie_word_embeddings (gpt2 default true, llama/qwen2 default false); qwen2 always has qkv biases.
// Options that change the math and that the engine does not implement (rope scaling, a sliding
// window in use, an activation other than gelu_new/silu, Llama's attention_bias/mlp_bias, a
// head_dim other than hidden_size/heads, ...) are errors naming the file and the field; fields
// that do not change the math (dropout, token ids, dtype, ...) are ignored.
#pragma once
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "models/transformer.h"

namespace ppo::io {

enum class HfFamily : uint8_t { GPT2, Llama, Qwen2 };

struct HfModelConfig {
  ModelConfig config;
  Heads heads = Heads::LM;      // LM (*CausalLM / GPT2LMHeadModel) or Scalar (*ForSequenceClassification)
  HfFamily family = HfFamily::GPT2;
  std::string architecture;     // e.g. "Qwen2ForCausalLM"
  std::vector<int64_t> eos_token_ids;  // config.json's eos_token_id (an id or a list); empty when absent
};

// Parses a config.json document; `where` (the file) names every error.
HfModelConfig parse_hf_config(const nlohmann::json& j, const std::string& where);
// Reads `path`: a config.json file, or a directory holding one.
HfModelConfig read_hf_config(const std::string& path);

// The stop tokens of a checkpoint directory: config.json's eos_token_id, else
// generation_config.json's (an id or a list, in the file's order); empty when neither names one.
std::vector<int64_t> checkpoint_eos_token_ids(const std::string& dir);

// The config.json transformers loads as the same model: gpt2 -> GPT2*, llama with qkv bias ->
// Qwen2*, without -> Llama*; Heads::LM -> the causal LM class, Heads::Scalar -> the sequence
// classifier with num_labels 1 (pad_token_id, which its pooling needs, is `pad_token_id` when >= 0).
// Heads::LMAndScalar has no Hugging Face class: an error.
nlohmann::json hf_config_json(const ModelConfig& config, Heads heads, int64_t pad_token_id = -1);

}  // namespace ppo::io
