// Model configuration of the two transformer families the engine runs:
//   gpt2  : LayerNorm (with bias), learned positions (wpe), GELU-tanh MLP with biases, qkv and
//           projection biases, LM head tied to wte.
//   llama : RMSNorm, RoPE (rotate-half), SwiGLU MLP (gate|up packed in one (2F,C) weight), no biases
//           except the optional qkv bias (Qwen2), grouped-query attention, tied or untied LM head.
#pragma once
#include <cstdint>
#include <string>
#include <nlohmann/json.hpp>

namespace ppo {

enum class Arch : uint8_t { GPT2, Llama };

// The largest sizes a model config may give: beyond every released model, and small enough that
// a plan's byte counts stay far from overflowing. Token ids of tokenizers lie below kMaxVocabSize too.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxModelWidth = int64_t(1) << 17;  // d_model
constexpr int64_t kMaxFfWidth = int64_t(1) << 19;     // d_ff
constexpr int64_t kMaxVocabSize = int64_t(1) << 22;
constexpr int64_t kMaxSeqLen = int64_t(1) << 21;
const char* arch_name(Arch a);

struct ModelConfig {
  Arch arch = Arch::GPT2;
  int64_t n_layer = 0;      // L transformer blocks
  int64_t n_head = 0;       // NH query heads
  int64_t n_kv_head = 0;    // NKV key/value heads (gpt2: = NH); NH % NKV == 0
  int64_t d_model = 0;      // C
  int64_t d_ff = 0;         // F, the MLP width (llama: the width of gate and of up)
  int64_t vocab_size = 0;   // V
  int64_t max_seq_len = 0;  // positions: the wpe rows of gpt2, the longest sequence for llama
  float rope_theta = 10000.0f;  // llama: RoPE base
  float norm_eps = 1e-5f;       // LayerNorm / RMSNorm epsilon
  bool tied_embeddings = true;  // LM head weight is wte (gpt2: always)
  bool qkv_bias = false;        // llama family: bias on the qkv projection (Qwen2); gpt2: always

  int64_t head_size() const { return d_model / n_head; }  // HS
  int64_t qkv_width() const { return (n_head + 2 * n_kv_head) * head_size(); }

  // Required: arch ("gpt2" | "llama"), n_layer, n_head, d_model, d_ff, vocab_size, max_seq_len.
  // Optional: n_kv_head (default n_head), rope_theta, norm_eps, tied_embeddings, qkv_bias.
  // Errors (missing field, wrong type, unknown field, a size not in [1, its kMax*], heads not dividing
  // d_model, kv heads not dividing heads, ...) are ppo::Error naming `where` and the field.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;
};

}  // namespace ppo
