// Step 2 of the PPO step: batched generation with the policy over its KV cache.
//
//   prefill(prompt tokens (B,P), positions, mask (B,T)) -> logits of column P-1
//   for t = 0 .. R-1:
//     t < min_new_tokens: the EOS logit of every row = -inf (a one-element fill per row)
//     sample_tokens at 1/temperature, top_k, top_p; seed = cfg.seed, stream = (step*R + t)*B
//     (the op adds the row b); the sampler's full-vocabulary log-prob is recorded
//     B token ids come back to the host: a row that sampled EOS is done (its later tokens are
//     padding = the EOS id, mask 0); all rows done -> stop
//     decode(token, position = prompt length + t, length = P+t+1) -> logits of the next token
// Logits stay on the device; only the B sampled ids and their log-probs cross per token.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>
#include "ppo/experience.h"

namespace ppo {

struct RolloutSettings {
  int64_t response_length = 0;  // R, max new tokens
  int64_t min_new_tokens = 0;   // no stop token is sampled before this many tokens (R: stopping off)
  float temperature = 1.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;
  std::vector<int32_t> stop_token_ids;  // the EOS first (it also pads the rest of a response), then
                                        // any other token that ends a response
  uint64_t seed = 0;
  int64_t step = 0;             // the PPO step (0-based): picks the sampling streams

  static RolloutSettings from_config(const PpoConfig& config, std::vector<int32_t> stop_token_ids, int64_t step,
                                     bool fixed_response_length);
};

// Whether `id` ends a response (is one of `stop_token_ids`).
inline bool is_stop_token(const std::vector<int32_t>& stop_token_ids, int32_t id) {
  return std::find(stop_token_ids.begin(), stop_token_ids.end(), id) != stop_token_ids.end();
}

// Samples responses for the prompts already laid out in `exp` (layout_prompts): fills
// response_ids, response_mask, sampler_logp, ended_with_eos, then layout_sequences.
void generate(Backend& backend, Transformer& policy, ExperienceBuffers& buf, const RolloutSettings& settings,
              Experience& exp);

}  // namespace ppo
