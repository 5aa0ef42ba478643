// The op set. Every op the models and the PPO loop use is declared here once, with its math.
// Models and ppo/ call these and never know which device runs them; Backend validates shapes and
// dtypes (errors name the tensor) and dispatches to kernels/cpu/ (the reference) or kernels/cuda/.
//
// Legend: B batch, T time (sequence length), C channels (d_model), V vocabulary, NH query heads,
// NKV key/value heads (NH % NKV == 0), HS head size, F feed-forward width, N = B*T rows,
// OC output channels, S KV-cache capacity (positions).
//
// Dtypes, by role (see Precision):
//   act  : weights, activations and activation gradients.   cpu: f32 (or f64)  cuda: bf16
//   grad : parameter gradients, master weights, AdamW m, v.  cpu: f32 (or f64)  cuda: f32
//   stat : per-row statistics and per-token PPO quantities.  cpu: f32 (or f64)  cuda: f32
//   ids  : token ids, positions, masks: i32.
// Gradient rule (as in llm.c): ops marked "+=" accumulate into their output (parameter gradients
// and the residual stream); all others overwrite ("="). Optional tensors may be passed empty ({}).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>
#include "engine/arena.h"
#include "engine/tensor.h"

namespace ppo {

enum class Precision : uint8_t {
  F32,   // cpu: everything f32 (the default reference)
  F64,   // cpu: everything f64 (gradient checks)
  BF16,  // cuda: bf16 act, f32 grad and stat
};

enum class NormKind : uint8_t { LayerNorm, RMSNorm };
enum class KLEstimator : uint8_t { K1, K2, K3 };

struct AdamWParams {
  float lr = 1e-5f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;         // 1-based step count for bias correction
  float grad_scale = 1.0f;  // gradients are multiplied by this (and by the clipping factor) first
  int64_t first_element = 0;  // element 0's index in the whole parameter set (a ZeRO-1 shard's begin,
                              // a multiple of 4): the stochastic-rounding bits are those of that index
};

// The sums over valid tokens (mask == 1) the fused PPO loss ops accumulate, in this order; means
// are sum / count.
struct PolicyLossSums {
  double loss = 0, clipped = 0, approx_kl = 0, ratio = 0, count = 0;
};
struct ValueLossSums {
  double loss = 0, clipped = 0, count = 0;
};
struct MaskedMoments {
  double mean = 0, var = 0, count = 0;  // var: population variance over valid entries
};

struct CudaContext;  // kernels/cuda/context.h: stream, cuBLAS/cuBLASLt handles

// A position or count an op reads on its device when it runs, so the launches of a recorded step
// (Backend::record, a CUDA graph) see each run's value: counter[0] + offset, counter (1) i32 on
// the op's device; offset alone when counter is empty (a plain integer converts to that).
struct DeviceIndex {
  Tensor counter;
  int64_t offset = 0;
  DeviceIndex(int64_t value = 0) : offset(value) {}  // NOLINT(google-explicit-constructor)
  DeviceIndex(Tensor counter_, int64_t offset_) : counter(std::move(counter_)), offset(offset_) {}
};

// Ops recorded once to run many times (the decode step): on CUDA one captured graph, each run one
// launch; on the CPU the ops are called again. See Backend::record.
class RecordedOps {
 public:
  RecordedOps();
  ~RecordedOps();
  RecordedOps(RecordedOps&&) noexcept;
  RecordedOps& operator=(RecordedOps&&) noexcept;
  void run();

 private:
  friend class Backend;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Threads of every CPU backend in the process: OpenMP's pool, which also runs the BLAS calls
// (kernels/cpu/blas.h; BLAS itself stays single-threaded). Without a call, OpenMP's count:
// OMP_NUM_THREADS, else every core. Matrix products are cut into one block per thread, so the
// thread count can change the last bits of their results (and of what is computed from them).
void set_cpu_threads(int threads);
// OpenMP's idle threads sleep at once instead of spinning: libgomp's default spins ~300k turns at
// the end of every parallel region, and on a machine busy with other work the spinning threads take
// the cores from the threads with work (measured: a tiny-model step 40x slower with 2 threads on a
// loaded 2-core machine; with idle threads asleep, faster than with 1 thread). libgomp reads
// OMP_WAIT_POLICY only once, before main(), so a program asks for it by starting again: when
// OMP_WAIT_POLICY is unset this sets it to "passive" and re-executes the program (/proc/self/exe
// with the same argv); it returns when the variable was set already (by the user: theirs wins) or
// the exec failed. Call it first in main(), before any other thread exists; `ppo` does.
void use_passive_cpu_threads(char** argv);

class Backend {
 public:
  // A CUDA backend needs a GPU; Precision must be F32/F64 on the CPU and BF16 on CUDA.
  Backend(DeviceKind device, Precision precision);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  DeviceKind device() const { return device_; }
  Precision precision() const { return precision_; }
  DType act_dtype() const;
  DType grad_dtype() const;
  DType stat_dtype() const;
  // Scratch for ops that need temporaries (vocabulary chunks, reductions, cuBLASLt workspace):
  // a LIFO region of the arena, taken and given back inside each op.
  void set_scratch(Carver scratch);
  static size_t scratch_bytes(Precision precision, int64_t max_rows, int64_t vocab);
  // Waits for the device. Range errors its kernels recorded since the last call (an id outside the
  // vocabulary, a position outside the table) are thrown here, naming the op, the tensor, the value
  // and its row: on a GPU the ids are checked where they are read, not copied to the host per op,
  // and reported once per phase (the PPO step synchronizes at the end of each). The CPU ops check
  // as they go. Host reads (to_host, to_host_ids) wait for the device's work but do not check.
  void synchronize();
  CudaContext* cuda() const { return cuda_.get(); }
  // Records `ops` (calls of this backend's ops) without running them; each RecordedOps::run runs
  // them as recorded: the same tensors, shapes and host arguments. What changes between runs must
  // be read on the device (DeviceIndex, device tensors). The recorded ops must not read to the host,
  // synchronize or allocate: on CUDA the stream is being captured, and that is an error.
  RecordedOps record(const std::function<void()>& ops);

  // ---- memory ---------------------------------------------------------------------------------
  void zero(Tensor t);
  void fill(Tensor t, float value);
  // dst = src (same dtype and size), any devices, in order with the backend's work: a copy within
  // the device does not make the host wait.
  void copy(Tensor dst, Tensor src);
  // dst = src converted to dst's dtype (f32/f64/bf16; bf16 rounds to nearest even). Any devices.
  void convert(Tensor dst, Tensor src);
  // Host f32 copy of a float tensor of any float dtype and device (after the device's pending work);
  // and the reverse.
  std::vector<float> to_host(Tensor src);
  // The same in f64: exact for f64 tensors (gradient checks).
  std::vector<double> to_host_f64(Tensor src);
  void from_host(Tensor dst, const std::vector<float>& src);
  void from_host_ids(Tensor dst, const std::vector<int32_t>& src);
  std::vector<int32_t> to_host_ids(Tensor src);
  // dst(B,Td,...)[:, dst_start:dst_start+W] = src(B,Ts,...)[:, src_start:src_start+W]: W columns
  // (time steps) between two tensors of one dtype with the same B and trailing dims (a column is
  // the trailing dims' elements); dst's other columns keep their values.
  void copy_columns(Tensor dst, int64_t dst_start, Tensor src, int64_t src_start, int64_t W);

  // ---- embedding ------------------------------------------------------------------------------
  // out(B,T,C) = wte(V,C)[tokens(B,T)] + wpe(P,C)[pos(B,T)]   (wpe optional: RoPE models have none)
  // Token ids outside [0,V) and positions outside [0,P) are errors (on CUDA: at the next synchronize).
  void embedding_forward(Tensor out, Tensor tokens, Tensor pos, Tensor wte, Tensor wpe);
  // dwte[tokens[b,t]] += dout[b,t];  dwpe[pos[b,t]] += dout[b,t]   (deterministic order)
  void embedding_backward(Tensor dwte, Tensor dwpe, Tensor dout, Tensor tokens, Tensor pos);

  // ---- normalization --------------------------------------------------------------------------
  // LayerNorm: mean = avg_c x, rstd = 1/sqrt(avg_c (x-mean)^2 + eps), out = (x-mean)*rstd*w + b
  // RMSNorm:   rstd = 1/sqrt(avg_c x^2 + eps), out = x*rstd*w       (mean, bias empty)
  // inp, out (N,C) act; mean, rstd (N) stat; weight, bias (C) act.
  void norm_forward(NormKind kind, Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight,
                    Tensor bias, float eps);
  // Fused residual add + norm: res_out = a + b; out = norm(res_out).  a, b, res_out (N,C) act.
  void residual_norm_forward(NormKind kind, Tensor res_out, Tensor out, Tensor mean, Tensor rstd,
                             Tensor a, Tensor b, Tensor weight, Tensor bias, float eps);
  // dinp += dnorm/dx^T dout;  dweight += sum_n dout*xhat;  dbias += sum_n dout
  // dinp (N,C) act +=; dweight, dbias (C) grad +=.
  void norm_backward(NormKind kind, Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout,
                     Tensor inp, Tensor weight, Tensor mean, Tensor rstd);
  // out = a + b   (N,C) act
  void residual_forward(Tensor out, Tensor a, Tensor b);

  // ---- matmul ---------------------------------------------------------------------------------
  // out(N,OC) = inp(N,C) @ weight(OC,C)^T + bias(OC)       (bias optional)
  void matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias);
  // dinp(N,C) = dout @ weight  (=, optional);  dweight(OC,C) += dout^T @ inp;  dbias(OC) += sum_n dout
  void matmul_backward(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp, Tensor weight);

  // ---- activations ----------------------------------------------------------------------------
  // GELU, tanh approximation: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  void gelu_forward(Tensor out, Tensor inp);
  void gelu_backward(Tensor dinp, Tensor dout, Tensor inp);
  // SwiGLU: inp(N,2F) = [gate | up];  out(N,F) = silu(gate) * up,  silu(g) = g / (1 + exp(-g))
  void swiglu_forward(Tensor out, Tensor inp);
  void swiglu_backward(Tensor dinp, Tensor dout, Tensor inp);

  // ---- attention ------------------------------------------------------------------------------
  // qkv(B,T,(NH+2*NKV)*HS) packs per position [q heads | k heads | v heads], each head HS wide.
  // RoPE in place on the q and k heads (the "rotate half" layout of Llama/Qwen2/HF):
  //   for i < HS/2: f = pos * theta^(-2i/HS);  (x_i, x_{i+HS/2}) <- (x_i cos f - x_{i+HS/2} sin f,
  //                                                                 x_{i+HS/2} cos f + x_i sin f)
  void rope_forward(Tensor qkv, Tensor pos, int NH, int NKV, int HS, float theta);
  // The transposed rotation (angle -f) applied in place to dqkv's q and k parts; v untouched.
  void rope_backward(Tensor dqkv, Tensor pos, int NH, int NKV, int HS, float theta);
  // Causal attention with grouped-query heads (query head h reads kv head h / (NH/NKV)) and a key
  // mask: query t attends to key s iff s <= t and mask[b,s] == 1. scale = 1/sqrt(HS).
  //   out[b,t,h] = sum_s softmax_s(q.k_s * scale) v_s;   lse[b,h,t] = log sum_s exp(q.k_s * scale)
  // A query with no visible key (a left-padding position) gets out = 0 and lse = -inf.
  // out (B,T,NH*HS) act; lse (B,NH,T) stat; mask (B,T) i32.
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor mask, int NH, int NKV, int HS);
  // dqkv (=) from dout, recomputing probabilities from lse; masked queries give zero gradient.
  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor mask,
                          int NH, int NKV, int HS);
  // KV cache of one layer: kcache, vcache (B,S,NKV*HS) act. Writes the k and v heads of
  // qkv(B,T,...) at cache positions [start, start+T) (outside [0,S): an error; on CUDA at the next
  // synchronize, for a start read on the device).
  void kv_cache_write(Tensor kcache, Tensor vcache, Tensor qkv, DeviceIndex start, int NH, int NKV, int HS);
  // One new query per sequence over the cache: qkv(B,1,...) supplies q; keys are cache positions
  // s < length (in [1,S]) with mask[b,s] == 1 (mask (B,S) i32). out (B,NH*HS) act.
  void attention_decode(Tensor out, Tensor qkv, Tensor kcache, Tensor vcache, Tensor mask, DeviceIndex length, int NH,
                        int NKV, int HS);

  // ---- language-model head: fused log-prob and entropy over the vocabulary ------------------------
  // z(N,V) = (hidden(N,C) @ wte(V,C)^T) * inv_temperature, never stored whole (vocabulary chunks):
  //   lse[n] = log sum_v exp z[n,v];   logp[n] = z[n,targets[n]] - lse[n];
  //   entropy[n] = lse[n] - sum_v softmax(z)[n,v] z[n,v]
  // logp, entropy, lse (N) stat; targets (N) i32 in [0,V) (else an error; on CUDA at the next synchronize).
  void lm_logprob_entropy_forward(Tensor logp, Tensor entropy, Tensor lse, Tensor hidden, Tensor wte,
                                  Tensor targets, float inv_temperature);
  // Given per-token weights g_logp[n] = dL/dlogp[n] and g_ent[n] = dL/dentropy[n] (either empty
  // means zero), with p = softmax(z):
  //   dz[n,v] = g_logp (1[v==target] - p_v) - g_ent p_v (log p_v + entropy[n])
  //   dhidden(N,C) = inv_temperature dz @ wte  (=);   dwte(V,C) += inv_temperature dz^T @ hidden
  void lm_logprob_entropy_backward(Tensor dhidden, Tensor dwte, Tensor g_logp, Tensor g_entropy,
                                   Tensor hidden, Tensor wte, Tensor targets, Tensor lse,
                                   Tensor entropy, float inv_temperature);
  // Sampling from logits(B,V) act at temperature 1/inv_temperature. p = softmax(logits*inv_temperature);
  // top_k > 0 keeps the k most probable tokens (ties: lower id first); top_p < 1 keeps the smallest
  // most-probable set whose mass reaches top_p; the kept set is renormalized and one uniform
  // u = uniform_from_bits(philox_draw(seed, s + b, 0).v[0]) picks by inverse CDF over kept
  // tokens in id order, with s = stream + step[0] * step_stride (step (1) i32 on the device, read
  // when the op runs; empty: s = stream). tokens (B) i32; logp (B) stat = log p[token] of the FULL
  // distribution (not renormalized over the kept set).
  void sample_tokens(Tensor tokens, Tensor logp, Tensor logits, float inv_temperature, int top_k, float top_p,
                     uint64_t seed, uint64_t stream, Tensor step = {}, uint64_t step_stride = 0);
  // logits(B,V)[:, id] = -inf for each of `ids` (at most kMaxMaskedTokens, each in [0,V)): sampling
  // never picks them (stop tokens before min_new_tokens). Only while step[0] < below when a step
  // (1) i32 is given (read on the device when the op runs). One launch on the GPU.
  static constexpr int kMaxMaskedTokens = 16;
  void mask_token_logits(Tensor logits, const std::vector<int32_t>& ids, Tensor step = {}, int64_t below = 0);
  // Keeps decode step t = step[0]'s samples on the device (step (1) i32), then step[0] = t + 1.
  // Per row b: pos[b] += 1 (the sampled token's position); a row not done gets tokens[b,t] =
  // step_tokens[b], logp[b,t] = step_logp[b], and done[b] = 1 when that token is one of stop_ids (at
  // most kMaxMaskedTokens); a done row gets tokens[b,t] = pad, logp[b,t] = 0. t outside [0,R) is an
  // error (on CUDA at the next synchronize). tokens (B,R), done (B), pos (B), step_tokens (B) i32;
  // logp (B,R), step_logp (B) stat. One launch; nothing crosses to the host.
  void append_sampled(Tensor tokens, Tensor logp, Tensor done, Tensor pos, Tensor step_tokens, Tensor step_logp,
                      Tensor step, const std::vector<int32_t>& stop_ids, int32_t pad);

  // ---- optimizer ----------------------------------------------------------------------------------
  // AdamW over a model's whole parameter set in one pass. param, grad, m, v (and master on CUDA)
  // are flat views of regions with one element layout (models/transformer.cpp): element i of each
  // is the same parameter element. Elements [0, decayed) take weight decay (the matrices), the rest
  // (biases, norm weights) do not, as HF Trainer. grad_sumsq (1) f64 is sum_squares(grad); clipping
  // and the non-finite skip are decided from it where it lives (no host round trip):
  //   clip = min(1, max_grad_norm / (sqrt(grad_sumsq) + 1e-6)) if max_grad_norm > 0, else 1
  //   g = grad * (grad_scale * clip)   (the scale's product in f32)
  //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  mhat = m/(1-b1^step);  vhat = v/(1-b2^step)
  //   w = w - lr (mhat / (sqrt(vhat) + eps) + wd_i w),  wd_i = weight_decay if i < decayed, else 0
  // A non-finite grad_sumsq changes nothing: the step is skipped. grad, m, v grad dtype. On the CPU
  // `master` is empty and `param` is updated in place; on CUDA `master` (f32) is updated and param
  // (bf16) = stochastic_round(master) with bits philox_draw(seed, 0, j / 4).v[j % 4], j = first_element + i.
  void adamw_update(Tensor param, Tensor master, Tensor grad, Tensor m, Tensor v, int64_t decayed, Tensor grad_sumsq,
                    float max_grad_norm, const AdamWParams& hp, uint64_t seed);
  // out (1) f64 = sum of x^2 over every element of x (grad dtype), in a fixed order; on the device.
  void sum_squares(Tensor out, Tensor x);

  // ---- PPO per-token math; all (B,T) stat tensors, mask (B,T) i32 -------------------------------------
  // Per-token KL of policy vs reference, r = ref_logp - logp (0 where mask == 0):
  //   k1 = -r;   k2 = r^2 / 2;   k3 = exp(r) - 1 - r
  void kl_penalty(Tensor kl, Tensor logp, Tensor ref_logp, Tensor mask, KLEstimator estimator);
  // The KL loss term's gradient (kl_in_reward = false), accumulated into dlogp (+=) on valid tokens:
  //   dlogp += weight * dKL/dlogp;   k1: 1,  k2: -r,  k3: 1 - exp(r)   (r = ref_logp - logp)
  void kl_penalty_backward(Tensor dlogp, Tensor logp, Tensor ref_logp, Tensor mask, KLEstimator estimator,
                           float weight);
  // GAE as a reverse scan over t, per row; valid tokens are mask == 1 (a prefix of each row):
  //   delta_t = r_t + gamma m_{t+1} V_{t+1} - V_t;   A_t = delta_t + gamma lambda m_{t+1} A_{t+1}
  //   returns_t = A_t + V_t;   A, returns = 0 where mask == 0.
  void gae_reverse_scan(Tensor advantages, Tensor returns, Tensor rewards, Tensor values, Tensor mask,
                        float gamma, float lambda);
  // Mean and population variance of x over entries with mask == 1.
  MaskedMoments masked_moments(Tensor x, Tensor mask);
  // x = (x - shift) * scale where mask == 1, x = 0 elsewhere (whitening: shift = mean, scale = rstd).
  void masked_affine(Tensor x, Tensor mask, float shift, float scale);
  // Clipped surrogate, per valid token, ratio = exp(logp - old_logp):
  //   l = max(-A ratio, -A clip(ratio, 1-clip_eps, 1+clip_eps));  if dual_clip > 1 and A < 0:
  //   l = min(l, -dual_clip A).  dlogp = token_weight * dl/dlogp (0 where mask == 0).
  //   approx_kl per token = (logp - old_logp)^2 / 2;  clipped counts tokens where the clip binds.
  // sums (5) f64 += the sums over valid tokens in PolicyLossSums order: loss, clipped, approx_kl,
  // ratio, count. They stay where the op runs: read them once per minibatch, not per call.
  void ppo_policy_loss(Tensor dlogp, Tensor sums, Tensor logp, Tensor old_logp, Tensor advantages, Tensor mask,
                       float clip_eps, float dual_clip, float token_weight);
  // Per-row weights of per-token quantities: x[b,t] *= row_scale[b].  x (B,T) stat; row_scale (B)
  // stat. (loss_agg_mode seq-mean-token-mean: a token's loss gradient weighs 1 / its row's length.)
  void scale_rows(Tensor x, Tensor row_scale);
  // Clipped value loss per valid token: vc = old_v + clip(v - old_v, -clip_value, clip_value)
  //   l = 0.5 max((v - R)^2, (vc - R)^2);   dvalues = token_weight * dl/dv.
  // sums (3) f64 += loss, clipped, count (ValueLossSums order).
  void ppo_value_loss(Tensor dvalues, Tensor sums, Tensor values, Tensor old_values, Tensor returns, Tensor mask,
                      float clip_value, float token_weight);
  // sums (2) f64 += (sum of x, count) over entries with mask == 1.
  void masked_sum(Tensor sums, Tensor x, Tensor mask);

  // dst(n,Td)[i, column + c] = src(B,Ts)[rows[i], c] for c < Ts: rows (n) i32 in [0,B) pick rows
  // of src; dst's other columns keep their values. One dtype; f32, f64, i32 or bf16.
  void gather_rows(Tensor dst, int64_t column, Tensor src, Tensor rows);

 private:
  template <class T>
  std::vector<T> host_copy(Tensor src);

  DeviceKind device_;
  Precision precision_;
  std::unique_ptr<CudaContext> cuda_;
  std::unique_ptr<Carver> scratch_;
  // Host <-> device bytes on the backend's stream, after its queued work (one wait for a read); a
  // CPU backend reading or writing a CUDA tensor waits for the whole device.
  void copy_host_device(void* dst, const void* src, size_t bytes);
  // What each device range check (kernels/cuda/kernel_utils.cuh RangeCheck) was last run on.
  struct RangeCheckSite {
    const char* op = "";
    const char* what = "";    // "token id", "position", "target id"
    const char* tensor = "";
    const char* within = "";  // "the vocabulary " or ""
    int64_t bound = 0;
  };
  RangeCheckSite range_sites_[7];
  // The value of an index the host can know: its offset, plus its counter read in place on a CPU
  // backend.
  int64_t host_value(const char* op, const char* what, const DeviceIndex& index);
};

}  // namespace ppo
