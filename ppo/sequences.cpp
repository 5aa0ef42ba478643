#include "ppo/sequences.h"

#include <algorithm>
#include "engine/error.h"

namespace ppo {

SequenceBatch pack_sequences(const std::vector<std::vector<int32_t>>& prompts,
                             const std::vector<std::vector<int32_t>>& responses, int64_t P, int64_t R, int32_t pad) {
  PPO_ASSERT(prompts.size() == responses.size(), "pack_sequences: ", prompts.size(), " prompts but ", responses.size(),
             " responses");
  SequenceBatch s;
  s.rows = int64_t(prompts.size());
  s.P = P;
  s.R = R;
  s.pad = pad;
  const int64_t T = P + R;
  s.tokens.assign(size_t(s.rows * T), pad);
  s.pos.assign(size_t(s.rows * T), 0);
  s.mask.assign(size_t(s.rows * T), 0);
  for (int64_t b = 0; b < s.rows; ++b) {
    const std::vector<int32_t>&prompt = prompts[size_t(b)], &response = responses[size_t(b)];
    const int64_t np = int64_t(prompt.size()), nr = int64_t(response.size());
    PPO_ASSERT(np >= 1 && np <= P, "row ", b, ": prompt of ", np, " tokens must hold 1 to ", P, " (prompt length)");
    PPO_ASSERT(nr <= R, "row ", b, ": response of ", nr, " tokens exceeds the response length ", R);
    s.prompt_len.push_back(np);
    s.response_len.push_back(nr);
    for (int64_t i = 0; i < np + nr; ++i) {
      const size_t col = size_t(b * T + P - np + i);  // left-padded prompt, then the response
      s.tokens[col] = i < np ? prompt[size_t(i)] : response[size_t(i - np)];
      s.pos[col] = int32_t(i);
      s.mask[col] = 1;
    }
  }
  return s;
}

SequenceBatch pack_tight(const std::vector<std::vector<int32_t>>& prompts,
                         const std::vector<std::vector<int32_t>>& responses, int32_t pad) {
  size_t P = 0, R = 1;
  for (const auto& p : prompts) P = std::max(P, p.size());
  for (const auto& r : responses) R = std::max(R, r.size());
  return pack_sequences(prompts, responses, int64_t(P), int64_t(R), pad);
}

SequenceTensors sequence_views(const SequenceTensors& buffers, int64_t n, int64_t T) {
  auto view = [&](const Tensor& t) {
    PPO_ASSERT(t.numel() >= n * T, "sequence buffer '", t.name, "' ", t.shape_str(), " cannot hold (", n, ",", T, ")");
    return Tensor(t.data, t.dtype, t.device, {n, T}, t.name);
  };
  return {view(buffers.tokens), view(buffers.pos), view(buffers.mask), view(buffers.targets)};
}

SequenceTensors upload_sequences(Backend& be, const SequenceBatch& batch, const std::vector<int32_t>& rows,
                                 const SequenceTensors& buffers) {
  const int64_t n = int64_t(rows.size()), T = batch.T();
  PPO_ASSERT(n >= 1, "upload_sequences: no rows");
  std::vector<int32_t> tokens(size_t(n * T)), pos(size_t(n * T)), mask(size_t(n * T)), targets(size_t(n * T));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = rows[size_t(i)];
    PPO_ASSERT(b >= 0 && b < batch.rows, "upload_sequences: row ", b, " of a batch of ", batch.rows);
    for (int64_t j = 0; j < T; ++j) {
      const size_t src = size_t(b * T + j), dst = size_t(i * T + j);
      tokens[dst] = batch.tokens[src];
      pos[dst] = batch.pos[src];
      mask[dst] = batch.mask[src];
      targets[dst] = j + 1 < T ? batch.tokens[src + 1] : batch.pad;
    }
  }
  const SequenceTensors v = sequence_views(buffers, n, T);
  be.from_host_ids(v.tokens, tokens);
  be.from_host_ids(v.pos, pos);
  be.from_host_ids(v.mask, mask);
  be.from_host_ids(v.targets, targets);
  return v;
}

std::vector<int32_t> row_range(int64_t first, int64_t n) {
  std::vector<int32_t> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) r[size_t(i)] = int32_t(first + i);
  return r;
}

}  // namespace ppo
