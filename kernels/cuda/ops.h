// The CUDA ops: launchers for the kernels in kernels/cuda/*.cu. Math, shapes and the "=" / "+="
// rule are documented in kernels/backend.h; arguments are already validated by Backend. act
// tensors are bf16, stat and grad tensors f32. Every launcher runs on ctx.stream.
#pragma once
#include <cstdint>
#include "engine/dtype.h"
#include "kernels/backend.h"

namespace ppo::cuda {

// Ids outside [0,V) and positions outside [0,P) are recorded in ctx.status (see lm_logprob_entropy_forward too).
void embedding_forward(CudaContext& ctx, bf16* out, const int32_t* tokens, const int32_t* pos, const bf16* wte, const bf16* wpe, int64_t N, int64_t C, int64_t V, int64_t P);
void embedding_backward(CudaContext& ctx, float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens, const int32_t* pos, int64_t N, int64_t C, int64_t V, int64_t P);

void norm_forward(CudaContext& ctx, NormKind kind, bf16* res_out, bf16* out, float* mean, float* rstd, const bf16* a, const bf16* b, const bf16* weight, const bf16* bias, int64_t N, int64_t C, float eps);  // b, res_out null: plain norm of a
void norm_backward(CudaContext& ctx, NormKind kind, bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp, const bf16* weight, const float* mean, const float* rstd, int64_t N, int64_t C);
void residual_forward(CudaContext& ctx, bf16* out, const bf16* a, const bf16* b, int64_t n);

void matmul_forward(CudaContext& ctx, bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N, int64_t C, int64_t OC);
void matmul_backward(CudaContext& ctx, bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp, const bf16* weight, int64_t N, int64_t C, int64_t OC);

void gelu_forward(CudaContext& ctx, bf16* out, const bf16* inp, int64_t n);
void gelu_backward(CudaContext& ctx, bf16* dinp, const bf16* dout, const bf16* inp, int64_t n);
void swiglu_forward(CudaContext& ctx, bf16* out, const bf16* inp, int64_t N, int64_t F);
void swiglu_backward(CudaContext& ctx, bf16* dinp, const bf16* dout, const bf16* inp, int64_t N, int64_t F);

void rope(CudaContext& ctx, bf16* qkv, const int32_t* pos, int64_t B, int64_t T, int NH, int NKV, int HS, float theta, bool inverse);
void attention_forward(CudaContext& ctx, bf16* out, float* lse, const bf16* qkv, const int32_t* mask, int64_t B, int64_t T, int NH, int NKV, int HS);
void attention_backward(CudaContext& ctx, bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, const int32_t* mask, int64_t B, int64_t T, int NH, int NKV, int HS);
// A counter (non-null) adds its device value to start / length / step when the kernel runs (DeviceIndex).
void kv_cache_write(CudaContext& ctx, bf16* kcache, bf16* vcache, const bf16* qkv, int64_t B, int64_t T, int64_t S,
                    const int32_t* start_counter, int64_t start, int NH, int NKV, int HS);
void attention_decode(CudaContext& ctx, bf16* out, const bf16* qkv, const bf16* kcache, const bf16* vcache,
                      const int32_t* mask, int64_t B, int64_t S, const int32_t* length_counter, int64_t length, int NH,
                      int NKV, int HS);

void lm_logprob_entropy_forward(CudaContext& ctx, float* logp, float* entropy, float* lse, const bf16* hidden, const bf16* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V, float inv_temperature);
void lm_logprob_entropy_backward(CudaContext& ctx, bf16* dhidden, float* dwte, const float* g_logp, const float* g_entropy, const bf16* hidden, const bf16* wte, const int32_t* targets, const float* lse, const float* entropy, int64_t N, int64_t C, int64_t V, float inv_temperature);
void sample_tokens(CudaContext& ctx, int32_t* tokens, float* logp, const bf16* logits, int64_t B, int64_t V,
                   float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream, const int32_t* step,
                   uint64_t step_stride);
void mask_token_logits(CudaContext& ctx, bf16* logits, int64_t B, int64_t V, const int32_t* ids, int n_ids,
                       const int32_t* step, int64_t below);
void append_sampled(CudaContext& ctx, int32_t* tokens, float* logp, int32_t* done, int32_t* pos,
                    const int32_t* step_tokens, const float* step_logp, int64_t B, int64_t R, int32_t* step,
                    const int32_t* stop_ids, int n_stop, int32_t pad);

void adamw_update(CudaContext& ctx, bf16* param, float* master, const float* grad, float* m, float* v, int64_t n, int64_t decayed, const double* grad_sumsq, float max_grad_norm, const AdamWParams& hp, uint64_t seed);
void sum_squares(CudaContext& ctx, double* out, const float* x, int64_t n);  // on the device, no synchronization

void scale_rows(CudaContext& ctx, float* x, const float* row_scale, int64_t B, int64_t T);  // x[b,t] *= row_scale[b]
void kl_penalty(CudaContext& ctx, float* kl, const float* logp, const float* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator);
void kl_penalty_backward(CudaContext& ctx, float* dlogp, const float* logp, const float* ref_logp, const int32_t* mask, int64_t n, KLEstimator estimator, float weight);
void gae_reverse_scan(CudaContext& ctx, float* advantages, float* returns, const float* rewards, const float* values, const int32_t* mask, int64_t B, int64_t T, float gamma, float lambda);
MaskedMoments masked_moments(CudaContext& ctx, const float* x, const int32_t* mask, int64_t n);
void masked_affine(CudaContext& ctx, float* x, const int32_t* mask, int64_t n, float shift, float scale);
// The sums (5 and 3 doubles, and 2 for masked_sum) accumulate on the device: no synchronization.
void ppo_policy_loss(CudaContext& ctx, double* sums, float* dlogp, const float* logp, const float* old_logp,
                     const float* advantages, const int32_t* mask, int64_t n, float clip_eps, float dual_clip,
                     float token_weight);
void ppo_value_loss(CudaContext& ctx, double* sums, float* dvalues, const float* values, const float* old_values,
                    const float* returns, const int32_t* mask, int64_t n, float clip_value, float token_weight);
void masked_sum(CudaContext& ctx, double* sums, const float* x, const int32_t* mask, int64_t n);

// memory helpers
void fill(CudaContext& ctx, void* data, DType dtype, int64_t n, float value);
void convert(CudaContext& ctx, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n);
// `bytes` between the host and the device on ctx.stream, after its queued work; returns when the
// host's bytes are safe to use or reuse (pageable host memory).
void copy_on_stream(CudaContext& ctx, void* dst, const void* src, size_t bytes);
// dst(n,Td)[i, column + c] = src(B,Ts)[rows[i], c], elements of `elem` bytes (2, 4 or 8); a row id
// outside [0,B) is recorded in ctx.status and its row left as it was.
void gather_rows(CudaContext& ctx, void* dst, int64_t Td, int64_t column, const void* src, int64_t B, int64_t Ts,
                 const int32_t* rows, int64_t n, size_t elem);
void copy_rows_2d(CudaContext& ctx, void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width, int64_t rows);

}  // namespace ppo::cuda
