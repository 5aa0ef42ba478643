// The one layout of token rows, shared by every stage that runs a model over prompts and their
// responses (PPO rollouts, scoring and update; SFT; reward-model training; DPO; evaluation):
//
//   row b = [ prompt, left-padded to P | response, right-padded to R ],   T = P + R
//
// Pads hold token `pad`, position 0 and mask 0. Positions count from each row's first real token,
// so a left-padded row gives exactly the numbers of the unpadded one. Response token t sits at
// column P+t and is predicted from column P-1+t: the next-token targets are
//   targets[b, j] = tokens[b, j+1]   (the last column's target is `pad`; nothing reads it)
// so the response's log-probs are columns [P-1, P-1+R) of a teacher-forced pass.
#pragma once
#include <cstdint>
#include <vector>
#include "kernels/backend.h"

namespace ppo {

// Host rows in the layout above.
struct SequenceBatch {
  int64_t rows = 0, P = 0, R = 0;
  int32_t pad = 0;
  std::vector<int32_t> tokens, pos, mask;         // (rows, T)
  std::vector<int64_t> prompt_len, response_len;  // (rows)

  int64_t T() const { return P + R; }
  // Column of row b's last real token (its response's last token; the prompt's when it is empty).
  int64_t last_column(int64_t b) const { return P + response_len[size_t(b)] - 1; }
};

// Errors name the row: an empty prompt or one longer than P, a response longer than R.
SequenceBatch pack_sequences(const std::vector<std::vector<int32_t>>& prompts,
                             const std::vector<std::vector<int32_t>>& responses, int64_t P, int64_t R, int32_t pad);

// The same at the batch's own widths: P the longest prompt, R the longest response (at least 1).
SequenceBatch pack_tight(const std::vector<std::vector<int32_t>>& prompts,
                         const std::vector<std::vector<int32_t>>& responses, int32_t pad);

// Device views a forward reads: tokens, positions, attention mask and next-token targets, i32.
struct SequenceTensors {
  Tensor tokens, pos, mask, targets;
};

// Rows [0, n): the first n*T elements of each buffer viewed as (n,T) (buffers hold at least that).
SequenceTensors sequence_views(const SequenceTensors& buffers, int64_t n, int64_t T);

// Uploads `rows` of `batch` (indices, in that order) into the views of buffers (rows.size(), T)
// and returns those views.
SequenceTensors upload_sequences(Backend& backend, const SequenceBatch& batch, const std::vector<int32_t>& rows,
                                 const SequenceTensors& buffers);

// The indices [first, first + n).
std::vector<int32_t> row_range(int64_t first, int64_t n);

}  // namespace ppo
