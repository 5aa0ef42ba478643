// The CPU reference ops: plain loops (OpenMP) and BLAS, templated on the float type so gradient
// checks can run in double. Math, shapes and the "=" / "+=" rule are documented in
// kernels/backend.h; arguments here are already validated by Backend. T is float or double.
#pragma once
#include <cstdint>
#include "kernels/backend.h"

namespace ppo::cpu {

// Whether a loop of `work` element-operations is worth OpenMP threads: below ~256k the fork/join
// (waking sleeping threads, kernels/cpu/blas.h) costs more than the loop, and on a busy machine a
// descheduled thread holds the closing barrier (tiny models, decode steps). Loops say
// `#pragma omp parallel for if(worth_threads(work))`.
inline bool worth_threads(int64_t work) { return work >= (int64_t(1) << 18); }

// Sums over the rows of an (N,C) array, one per column: threads split the columns into chunks of
// kColumnChunk and each chunk walks the rows n = 0..N-1 in order (contiguous loads, the same
// summation order whatever the thread count). chunk(c0, c1) handles columns [c0, c1).
constexpr int64_t kColumnChunk = 64;
template <class F>
void for_column_chunks(int64_t N, int64_t C, F&& chunk) {
#pragma omp parallel for if(worth_threads(N * C))
  for (int64_t c0 = 0; c0 < C; c0 += kColumnChunk) chunk(c0, c0 + kColumnChunk < C ? c0 + kColumnChunk : C);
}

// acc(C) += sum_n x[n,:] for x (N,C), in double (matmul's dbias, norm's dbias).
template <class T> void sum_rows(T* acc, const T* x, int64_t N, int64_t C);

template <class T> void embedding_forward(T* out, const int32_t* tokens, const int32_t* pos, const T* wte, const T* wpe, int64_t N, int64_t C);
template <class T> void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, const int32_t* pos, int64_t N, int64_t C);

template <class T> void norm_forward(NormKind kind, T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, float eps);
template <class T> void norm_backward(NormKind kind, T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, const T* mean, const T* rstd, int64_t N, int64_t C);
template <class T> void residual_forward(T* out, const T* a, const T* b, int64_t n);

template <class T> void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, int64_t OC);
template <class T> void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, int64_t N, int64_t C, int64_t OC);

template <class T> void gelu_forward(T* out, const T* inp, int64_t n);
template <class T> void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n);
template <class T> void swiglu_forward(T* out, const T* inp, int64_t N, int64_t F);
template <class T> void swiglu_backward(T* dinp, const T* dout, const T* inp, int64_t N, int64_t F);

template <class T> void rope_forward(T* qkv, const int32_t* pos, int64_t B, int64_t T_, int NH, int NKV, int HS, float theta);
template <class T> void rope_backward(T* dqkv, const int32_t* pos, int64_t B, int64_t T_, int NH, int NKV, int HS, float theta);
template <class T> void attention_forward(T* out, T* lse, const T* qkv, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS);
template <class T> void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const int32_t* mask, int64_t B, int64_t T_, int NH, int NKV, int HS);
template <class T> void kv_cache_write(T* kcache, T* vcache, const T* qkv, int64_t B, int64_t T_, int64_t S, int64_t start, int NH, int NKV, int HS);
template <class T> void attention_decode(T* out, const T* qkv, const T* kcache, const T* vcache, const int32_t* mask, int64_t B, int64_t S, int64_t length, int NH, int NKV, int HS);

// `scratch` holds at least lm_scratch_elems(V) elements of T.
int64_t lm_scratch_elems(int64_t V);
template <class T> void lm_logprob_entropy_forward(T* logp, T* entropy, T* lse, const T* hidden, const T* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch);
template <class T> void lm_logprob_entropy_backward(T* dhidden, T* dwte, const T* g_logp, const T* g_entropy, const T* hidden, const T* wte, const int32_t* targets, const T* lse, const T* entropy, int64_t N, int64_t C, int64_t V, float inv_temperature, T* scratch);
template <class T> void sample_tokens(int32_t* tokens, T* logp, const T* logits, int64_t B, int64_t V, float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream, T* scratch);

template <class T> void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, int64_t decayed, double grad_sumsq, float max_grad_norm, const AdamWParams& hp);
template <class T> double sum_squares(const T* x, int64_t n);

template <class T> void kl_penalty(T* kl, const T* logp, const T* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator);
template <class T> void kl_penalty_backward(T* dlogp, const T* logp, const T* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator, float weight);
template <class T> void gae_reverse_scan(T* advantages, T* returns, const T* rewards, const T* values, const int32_t* mask, int64_t B, int64_t T_, float gamma, float lambda);
template <class T> MaskedMoments masked_moments(const T* x, const int32_t* mask, int64_t n);
template <class T> void masked_affine(T* x, const int32_t* mask, int64_t n, float shift, float scale);
template <class T> PolicyLossSums ppo_policy_loss(T* dlogp, const T* logp, const T* old_logp, const T* advantages, const int32_t* mask, int64_t n, float clip_eps, float dual_clip, float token_weight);
template <class T> void scale_rows(T* x, const T* row_scale, int64_t B, int64_t T_);
template <class T> ValueLossSums ppo_value_loss(T* dvalues, const T* values, const T* old_values, const T* returns, const int32_t* mask, int64_t n, float clip_value, float token_weight);

}  // namespace ppo::cpu

// Explicit instantiation of a CPU op for float and double, at the end of the op's .cpp file.
#define PPO_CPU_INSTANTIATE(fn) \
  template decltype(fn<float>) fn<float>; \
  template decltype(fn<double>) fn<double>;
