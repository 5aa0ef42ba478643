// Hugging Face checkpoints (a directory with config.json and model.safetensors, or shards listed by
// model.safetensors.index.json) in and out of a Transformer, through its parameter names.
//
// Layout map, engine parameter <- HF tensor(s) (prefix "transformer." for gpt2, "model." for
// llama/qwen2; checkpoints of the bare trunk without the prefix load too):
//   gpt2 Conv1D weights are stored (in, out): c_attn, attn.c_proj, c_fc, mlp.c_proj are transposed
//        to the engine's (OC, C); wte, wpe, ln_*, biases as they are; the LM head is wte (an
//        lm_head.weight in the file must equal it).
//   llama/qwen2: qkv_proj (QKV,C) = rows [q_proj (NH*HS) | k_proj (NKV*HS) | v_proj (NKV*HS)], the
//        qkv bias likewise from q/k/v_proj.bias (qwen2); gate_up_proj (2F,C) = [gate_proj | up_proj];
//        lm_head.weight when untied (tied: absent, or equal to embed_tokens).
//   scalar head: score.weight (1,C).
// RoPE needs no permutation: HF-format Llama/Qwen2 q/k rows are already in the rotate-half layout
// the engine's rope op uses (pairs (i, i+HS/2) within each head; the Meta-format interleaved
// layout is what HF's conversion script permutes away).
// Buffers that are not parameters (gpt2 attn.bias / attn.masked_bias, rotary_emb.inv_freq) are
// skipped; every other tensor must be used. Errors name the file and the tensor.
#pragma once
#include <functional>
#include <string>
#include <vector>
#include "io/hf_config.h"
#include "models/transformer.h"

namespace ppo::io {

// One HF tensor that fills rows [row_begin, row_begin + rows) of an engine parameter; `transpose`:
// the file stores those rows as columns (gpt2 Conv1D).
struct HfPiece {
  std::string hf_name;
  int64_t row_begin = 0, rows = 0;
  bool transpose = false;
  std::vector<int64_t> hf_shape;
};

// For every engine parameter of `spec` (parameter_specs order): its HF pieces. `prefix` is the
// trunk's prefix ("transformer." / "model.", or "" for a bare trunk).
std::vector<std::pair<TensorSpec, std::vector<HfPiece>>> hf_layout(const ModelSpec& spec, const std::string& prefix);

// The values of `piece` in the file's layout, from an engine parameter's values (R,K) (K = 1 for a
// vector).
std::vector<float> hf_piece_values(const std::vector<float>& engine_values, int64_t K, const HfPiece& piece);

enum class HeadMatch : uint8_t {
  Exact,      // the checkpoint's heads are the model's: every tensor used, none missing
  TrunkOnly,  // heads may differ (a value model from an SFT policy): head tensors the model lacks
              // are skipped; a head the checkpoint's class does not have (the scalar head of a
              // causal LM) keeps its current values; one it has (an untied LM head) must be there
};

// Loads `dir` into `model`: its config.json must describe model.config() (an error names the
// differing field); values of any float dtype are converted to the model's.
void load_hf_checkpoint(const std::string& dir, Transformer& model, HeadMatch heads = HeadMatch::Exact);

// Writes `dir`/config.json (hf_config_json) and `dir`/model.safetensors (f32, HF names and
// layouts) for a model of `config` with `heads` (LM or Scalar); `values(engine_name)` gives a
// parameter's f32 values in the engine's layout. Creates `dir`.
void write_hf_checkpoint(const std::string& dir, const ModelConfig& config, Heads heads,
                         const std::function<std::vector<float>(const std::string&)>& values,
                         int64_t pad_token_id = -1);
// The same for a Transformer (its f32 master values when it has them). A model with both heads
// exports as its causal LM or its sequence classifier, chosen by `heads`. Every rank of a
// data-parallel run calls it; rank 0 writes.
void export_hf_checkpoint(const std::string& dir, Transformer& model, Heads heads, int64_t pad_token_id = -1);

}  // namespace ppo::io
