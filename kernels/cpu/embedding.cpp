// Token and position embedding (llm.c's encoder), forward and backward.
// N = B*T rows; out, dout (N,C); wte (V,C); wpe (P,C) or null (RoPE models); tokens, pos (N).
// Backend has checked every token id against V and every position against P.
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

// out[n,:] = wte[tokens[n],:] + wpe[pos[n],:]   (the wpe term is dropped when wpe is null)
template <class T> void embedding_forward(T* out, const int32_t* tokens, const int32_t* pos, const T* wte, const T* wpe, int64_t N, int64_t C) {
#pragma omp parallel for if(worth_threads(N * C))
  for (int64_t n = 0; n < N; ++n) {
    T* out_n = out + n * C;
    const T* wte_row = wte + int64_t(tokens[n]) * C;
    for (int64_t c = 0; c < C; ++c) out_n[c] = wte_row[c];
    if (wpe) {
      const T* wpe_row = wpe + int64_t(pos[n]) * C;
      for (int64_t c = 0; c < C; ++c) out_n[c] += wpe_row[c];
    }
  }
}

// dwte[tokens[n],:] += dout[n,:];  dwpe[pos[n],:] += dout[n,:]   (dwpe may be null)
// Rows that share a token add into the same dwte row, so threads split the channels
// (for_column_chunks) and each walks the rows in order n = 0..N-1: no races, and the same
// summation order on every run.
template <class T> void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, const int32_t* pos, int64_t N, int64_t C) {
  for_column_chunks(N, C, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      const T* g = dout + n * C;
      T* wte_row = dwte + int64_t(tokens[n]) * C;
      for (int64_t c = c0; c < c1; ++c) wte_row[c] += g[c];
      if (!dwpe) continue;
      T* wpe_row = dwpe + int64_t(pos[n]) * C;
      for (int64_t c = c0; c < c1; ++c) wpe_row[c] += g[c];
    }
  });
}

PPO_CPU_INSTANTIATE(embedding_forward)
PPO_CPU_INSTANTIATE(embedding_backward)

}  // namespace ppo::cpu
