// Batched sampling from a policy over its KV cache: the one generation loop, for PPO rollouts
// and for held-out evaluation. G = the rows of the buffers; more prompts run in chunks of G.
//
//   prompts left-padded to P (ppo/sequences.h); the mask (G,T) is the prompt mask, then ones
//   prefill(prompt tokens (G,P), positions, mask) -> logits of column P-1
//   for t = 0 .. R-1:
//     t < min_new_tokens: the stop tokens' logits = -inf (Backend::mask_token_logits)
//     sample_tokens at 1/temperature, top_k, top_p; Philox seed, stream (stream + c*R + t)*G for
//     chunk c (the op adds the row b); the sampler's full-vocabulary log-prob is kept
//     append_sampled: the token and its log-prob into (G,R) buffers, a row that sampled a stop
//     token is done (its later columns are padding), the position advances
//     every kStopCheckTokens tokens the done flags come to the host: all done -> stop
//     decode(token, position = prompt length + t, length = P+t+1) -> logits of the next token
// t lives on the device (a step counter append_sampled advances), so decode + sample are the same
// calls for every t: run once as they are, then recorded once per chunk and replayed
// (Backend::record; on CUDA a graph, one launch per token). Everything stays on the device: per chunk of kStopCheckTokens tokens one synchronization
// (the done flags), and the (G,R) tokens and log-probs cross to the host once at the end.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>
#include "engine/arena.h"
#include "kernels/backend.h"

namespace ppo {

class Transformer;
struct PpoConfig;

struct SamplingSettings {
  int64_t max_new_tokens = 0;  // R
  int64_t min_new_tokens = 0;  // no stop token is sampled before this many tokens (R: stopping off)
  float temperature = 1.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;
  std::vector<int32_t> stop_token_ids;  // tokens that end a response (the EOS first)
  uint64_t seed = 0;
  uint64_t stream = 0;  // first Philox stream (see above)
  // Data parallel: the prompts are rows [first_row, ...) of a batch of row_stride rows (0: the
  // buffers' G), and the Philox streams those of the batch's rows: (stream + c*R + t)*row_stride +
  // first_row + b. So a row samples the same tokens on any number of ranks.
  uint64_t first_row = 0, row_stride = 0;

  // The run's sampling; fixed_response_length: stopping off (every response has R tokens).
  static SamplingSettings from_config(const PpoConfig& config, std::vector<int32_t> stop_token_ids, uint64_t stream,
                                      bool fixed_response_length);
};

// Whether `id` ends a response (is one of `stop_token_ids`).
inline bool is_stop_token(const std::vector<int32_t>& stop_token_ids, int32_t id) {
  return std::find(stop_token_ids.begin(), stop_token_ids.end(), id) != stop_token_ids.end();
}

// Tokens decoded between two looks at the done flags (one synchronization each).
constexpr int64_t kStopCheckTokens = 16;

// The device buffers of generation for G rows of P prompt and T = P + R total tokens.
struct GenerationBuffers {
  Tensor prompt_tokens, prompt_pos;  // (G,P) i32
  Tensor mask;                       // (G,T) i32
  Tensor step_tokens, step_pos;      // (G) i32: the sampled token and its position
  Tensor step_logp;                  // (G) stat
  Tensor tokens;                     // (G,R) i32: every sampled token, padding after a stop token
  Tensor logp;                       // (G,R) stat: their log-probs
  Tensor done;                       // (G) i32: the row sampled a stop token
  Tensor step;                       // (1) i32: tokens sampled so far in the chunk (t, read on the device)

  static std::vector<TensorSpec> specs(int64_t G, int64_t P, int64_t T, Precision precision);
  // Takes specs(G, P, T, precision) from `carver`, in order.
  static GenerationBuffers carve(Carver& carver, int64_t G, int64_t P, int64_t T, Precision precision);
};

struct SampledResponses {
  std::vector<std::vector<int32_t>> responses;  // per prompt, up to and including a stop token
  std::vector<std::vector<float>> logp;         // the sampler's log-prob of each response token
};

// A chunk's start: its prompts (at most G, token ids padded with `pad` to P) in the buffers'
// first rows with their positions and mask, each row's position before its first response token,
// the done flags and the step counter cleared. generate() calls it per chunk.
void start_chunk(Backend& backend, const GenerationBuffers& buffers, const std::vector<std::vector<int32_t>>& prompts,
                 int32_t pad);

// Samples a response to each prompt (token ids, padded with `pad` to the buffers' P).
SampledResponses generate(Backend& backend, Transformer& policy, const GenerationBuffers& buffers,
                    const std::vector<std::vector<int32_t>>& prompts, int32_t pad, const SamplingSettings& settings);

}  // namespace ppo
