// The transformer of both families (models/config.h) written once against Backend: parameters,
// gradients, AdamW moments and (CUDA) f32 master weights carved from arena regions by size tables,
// the training forward over (B,T) that keeps what backward needs, the LM head (fused log-prob and
// entropy) and the scalar head (HF *ForSequenceClassification `score`), backward through the whole
// trunk, AdamW with global-norm clipping, and generation (prefill + decode over a KV cache).
//
// Block (pre-norm), x the residual stream (B,T,C):
//   gpt2 : x += attn(LN1(x)) [qkv, proj with bias];   x += W2 gelu(W1 LN2(x) + b1) + b2
//   llama: x += attn(rope(RMS1(x))) [qkv bias optional]; x += W2 (silu(gate) * up), [gate|up] = W1 RMS2(x)
//   hidden = normf(x);  LM logits = hidden @ W_lm^T (W_lm = wte when tied);  value = hidden @ score^T
//
// Memory: every tensor comes from a size table (std::vector<TensorSpec>) that both the planner
// (packed_bytes) and the constructor (Carver) walk, so a plan's bytes are exactly what is carved.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/communicator.h"
#include "kernels/backend.h"
#include "models/config.h"

namespace ppo {

enum class Heads : uint8_t { LM, Scalar, LMAndScalar };
enum class Training : uint8_t { Frozen, Trained };     // trained: grads, AdamW moments, master (CUDA)
enum class Generation : uint8_t { None, KVCache };     // KVCache: prefill/decode regions

// What one model of a run is: its config and its role.
struct ModelSpec {
  ModelConfig config;
  Heads heads = Heads::LM;
  Training training = Training::Frozen;
  Generation generation = Generation::None;
  bool has_lm() const { return heads != Heads::Scalar; }
  bool has_scalar() const { return heads != Heads::LM; }
};

// Batch sizes of a run: rollouts of `rollout_batch` sequences of prompt_len + response_len tokens;
// training forwards over micro-batches of `micro_batch` sequences of that length. `ranks`: the
// data-parallel ranks the run is one of (ZeRO-1: a trained model's master weights and AdamW moments
// are sharded over them; per rank, rollout_batch is its share of the rows).
struct RunShape {
  int64_t rollout_batch = 0, prompt_len = 0, response_len = 0, micro_batch = 0;
  int64_t ranks = 1;
  int64_t seq_len() const { return prompt_len + response_len; }
};

DType act_dtype_of(Precision p);   // as Backend::act_dtype
DType grad_dtype_of(Precision p);  // as Backend::grad_dtype

// Size tables. Parameters in `dtype`; activations for a training forward over (B,T);
// the KV cache of every layer for (B,S); the prefill/decode buffers for (B,P).
std::vector<TensorSpec> parameter_specs(const ModelSpec& spec, DType dtype);
std::vector<TensorSpec> activation_specs(const ModelSpec& spec, Precision p, int64_t B, int64_t T);
std::vector<TensorSpec> kv_cache_specs(const ModelSpec& spec, Precision p, int64_t B, int64_t S);
std::vector<TensorSpec> decode_specs(const ModelSpec& spec, Precision p, int64_t B, int64_t P);

// The arena regions of one model: weights (+ master on BF16, grads, adam_m, adam_v when trained)
// Always; activations (micro_batch x seq_len) Train; kv_cache (rollout_batch x seq_len) and
// decode (rollout_batch x prompt_len) Rollout when it generates. With shape.ranks = N > 1 a trained
// model's layout is padded to a multiple of N x 128 elements (weights and grads hold all of it) and
// master, adam_m and adam_v hold one N-th: the rank's shard (ZeRO-1).
std::vector<RegionSpec> model_regions(const std::string& owner, const ModelSpec& spec, const RunShape& shape,
                                      Precision p);

class Transformer {
 public:
  // Carves the model's regions (model_regions(owner, spec, shape, backend.precision())) out of the
  // arena; each region is used to its last byte. Gradients and AdamW moments start at zero;
  // weights are uninitialized: call init_random or set_parameter. `ranks`: the data-parallel ranks
  // (size shape.ranks; outlives the model); null: one rank.
  Transformer(Backend& backend, const ModelSpec& spec, const RunShape& shape, const Arena& arena, std::string owner,
              Communicator* ranks = nullptr);
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelSpec& spec() const { return spec_; }
  const ModelConfig& config() const { return spec_.config; }
  const std::string& owner() const { return owner_; }
  // Bytes carved from region `name` of this model (== the plan's bytes).
  size_t carved_bytes(const std::string& region) const;

  // ---- parameters -------------------------------------------------------------------------------
  // Names follow HF after mapping (matrices stored (OC,C)): gpt2 "wte.weight", "wpe.weight",
  // "h.{l}.ln_1.weight|bias", "h.{l}.attn.c_attn.weight|bias", "h.{l}.attn.c_proj.weight|bias",
  // "h.{l}.ln_2.weight|bias", "h.{l}.mlp.c_fc.weight|bias", "h.{l}.mlp.c_proj.weight|bias",
  // "ln_f.weight|bias"; llama "embed_tokens.weight", "layers.{l}.input_layernorm.weight",
  // "layers.{l}.self_attn.qkv_proj.weight|bias" ([q|k|v] rows), "layers.{l}.self_attn.o_proj.weight",
  // "layers.{l}.post_attention_layernorm.weight", "layers.{l}.mlp.gate_up_proj.weight" ([gate|up]
  // rows), "layers.{l}.mlp.down_proj.weight", "norm.weight", "lm_head.weight" (untied);
  // scalar head "score.weight" (1,C).
  const std::vector<std::string>& parameter_names() const { return names_; }
  Tensor parameter(const std::string& name) const;
  Tensor gradient(const std::string& name) const;  // trained models only
  // Training state (trained models only): the f32 master copy (empty when the weights are their own
  // master, as on the CPU) and the AdamW moments m, v (grad dtype), of one rank (an error when the
  // parameter is split between ranks: see state_slice).
  Tensor master_parameter(const std::string& name) const;
  Tensor adam_m(const std::string& name) const;
  Tensor adam_v(const std::string& name) const;
  // Host values (f32) in and out; set_parameter also sets (this rank's part of) the f32 master copy
  // when there is one. get_parameter reads the master copy where there is one: on several CUDA
  // ranks its parts are gathered, so every rank must call it (in the same order).
  void set_parameter(const std::string& name, const std::vector<float>& values);
  std::vector<float> get_parameter(const std::string& name);
  // Matrices ~ Normal(0, 0.02) (Philox stream = parameter index), norm weights 1, biases 0.
  void init_random(uint64_t seed);

  // ---- training forward and heads ---------------------------------------------------------------------
  // tokens, pos, mask (B,T) i32 with B <= micro_batch, T <= prompt_len + response_len. pos counts
  // from each sequence's first real token (left padding: pad positions are masked, any value in
  // range). Copies the ids it needs for backward.
  void forward(Tensor tokens, Tensor pos, Tensor mask);
  // After forward: logp[b,t] = log softmax(z)[targets[b,t]], entropy[b,t] = H(softmax(z)) with
  // z = logits[b,t] * inv_temperature. targets (B,T) i32; logp (B,T) stat; entropy optional.
  // Only columns t >= first_column are scored (the vocabulary pass costs B*(T-first_column) rows,
  // e.g. only the response positions of a PPO batch); logp and entropy are 0 before it.
  void lm_logprobs(Tensor targets, float inv_temperature, Tensor logp, Tensor entropy, int64_t first_column = 0);
  // dL/dlogp, dL/dentropy (B,T) stat (either may be empty; columns before the forward's
  // first_column are ignored) -> accumulates into the hidden gradient. inv_temperature: the one
  // the forward's lm_logprobs used (its log-sum-exp and entropy are reused).
  void lm_logprobs_backward(Tensor g_logp, Tensor g_entropy, float inv_temperature);
  // After forward: the final-norm output hidden (B,T,C) act the heads read.
  Tensor hidden() const;
  // After forward: values (B,T) stat = hidden @ score^T.
  void scalar(Tensor values);
  void scalar_backward(Tensor g_values);
  // Backward through the trunk from the heads' gradients: parameter grads += (across micro-batches).
  void backward();
  void zero_grad();
  // Ranks meet: the gradients of every rank summed into this rank's shard (reduce-scatter; on one
  // rank nothing). The rest of the gradient region is undefined until zero_grad. Call once per
  // optimizer step, after the last backward, before grad_sum_squares, grad_norm and adamw_step.
  void reduce_gradients();
  // The sum of squares of all gradients, (1) f64 where the model lives: one pass over the shard's
  // gradients (Backend::sum_squares), added over ranks; no synchronization.
  Tensor grad_sum_squares();
  // Global L2 norm of all gradients: grad_sum_squares() read on the host (one synchronization).
  double grad_norm();
  // AdamW on every parameter of the shard in one pass over the parameter regions; weight decay on
  // matrices only (not biases, not norm weights), as HF Trainer. max_grad_norm > 0 scales the
  // gradients by min(1, max_grad_norm / (norm + 1e-6)) with the global norm; a non-finite norm
  // leaves the weights untouched. The norm is used where it was computed (by grad_sum_squares since
  // the last backward, or here): no synchronization. Then ranks meet: every rank's updated shard of
  // the weights reaches every rank (all-gather).
  void adamw_step(const AdamWParams& hp, float max_grad_norm, uint64_t seed);

  // ---- data parallel (ZeRO-1, engine/communicator.h) -----------------------------------------------
  // A trained model's flat parameter layout (every parameter region's element order, matrices
  // first) is `total` elements, padded to a multiple of ranks x 128; this rank keeps the master
  // weights and AdamW moments of elements [begin, end) and updates them. One rank: all of them.
  struct Shard {
    int64_t begin = 0, end = 0, total = 0;
  };
  const Shard& shard() const { return shard_; }
  Communicator& ranks() const { return *ranks_; }
  // Where parameter `name` starts in the layout (elements).
  int64_t parameter_offset(const std::string& name) const;
  // This rank's shard of region "master", "adam_m" or "adam_v" (flat, end - begin elements; empty
  // when the model has no such region).
  Tensor state_shard(const std::string& region) const;
  // The part of parameter `name` inside this rank's shard of `region`: the parameter's elements
  // [first, first + view.numel()) (a flat view; empty when none are this rank's).
  struct StateSlice {
    int64_t first = 0;
    Tensor view;
  };
  StateSlice state_slice(const std::string& region, const std::string& name) const;

  // ---- generation (Generation::KVCache, LM head) ------------------------------------------------
  // tokens, pos (B,P) i32 with B <= rollout_batch, P <= prompt_len; mask (B,S) i32 with S =
  // prompt_len + response_len (columns [0,P) cover the prompt). Fills cache positions [0,P) and
  // returns the logits (B,V) act of position P-1 (left-padded prompts end on a real token).
  Tensor prefill(Tensor tokens, Tensor pos, Tensor mask);
  // One new token per sequence: tokens, pos (B) i32; its k,v go to cache position length-1 and it
  // attends to cache positions s < length with mask[b,s] == 1. Returns logits (B,V) act. A length
  // read on the device (DeviceIndex with a counter) makes the same calls for every length, so a
  // decode step can be recorded once (Backend::record) and run for each token.
  Tensor decode(Tensor tokens, Tensor pos, Tensor mask, DeviceIndex length);

  struct Layer {  // per-layer tensors (parameters, gradients, or activations); absent ones empty
    Tensor ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fc_proj_w, fc_proj_b;
  };
  struct Globals {
    Tensor wte, wpe, lnf_w, lnf_b, lm_head, score;
  };
  struct Params {
    Globals g;
    std::vector<Layer> layers;
  };
  // Activations of one block: `in` the residual input, ln1 = norm1(in) (written before the block
  // runs), out the residual output.
  struct BlockActs {
    Tensor in, ln1, ln1_mean, ln1_rstd, qkv, att, lse, proj, res2, ln2, ln2_mean, ln2_rstd, fch, fch_act, out;
  };

 private:
  template <class Attend>
  // Runs every block over acts (acts[0].ln1 = norm1(acts[0].in) first), ending with the final
  // norm into lnf; attend(l, A) fills A.att (and A.lse) from A.qkv.
  void run_blocks(const std::vector<BlockActs>& acts, Tensor lnf, Tensor lnf_mean, Tensor lnf_rstd, Tensor pos,
                  Attend attend);
  Tensor lm_weight() const;
  Tensor lm_weight_grad() const;
  void require_trained(const char* what) const;
  Tensor logits_from(Tensor hidden_rows);
  void embed(Tensor out, Tensor tokens, Tensor pos);

  Backend& be_;
  ModelSpec spec_;
  RunShape shape_;
  std::string owner_;
  NormKind norm_;
  std::map<std::string, size_t> carved_;

  std::vector<std::string> names_;       // parameter names, parameter_table order
  std::map<std::string, size_t> index_;  // name -> position in names_
  std::vector<Tensor> weights_, grads_;  // per parameter, names_ order
  std::vector<int64_t> offsets_;         // per parameter: its first element in the layout
  // The regions whole (one element layout, matrices first: the first decayed_ elements decay);
  // master, adam_m and adam_v hold this rank's shard of it
  Tensor all_weights_, all_master_, all_grads_, all_adam_m_, all_adam_v_;
  int64_t decayed_ = 0;
  Communicator* ranks_ = nullptr;
  std::unique_ptr<Communicator> own_ranks_;  // one rank, when none was given
  Shard shard_;
  bool grads_reduced_ = false;           // reduce_gradients ran since the last backward
  Tensor grad_sumsq_;                    // (1) f64, sum_squares of all_grads_
  bool grad_sumsq_current_ = false;      // it is of the gradients as they are now
  Params w_, gr_;                        // structured views of weights_ and grads_

  std::map<std::string, Tensor> act_;    // activations region, by table name
  std::map<std::string, Tensor> dec_;    // decode region, by table name
  std::vector<Tensor> kcache_, vcache_;  // per layer (B,S,NKV*HS)

  int64_t B_ = 0, T_ = 0;                // shape of the last training forward
  int64_t head_first_ = 0;               // its first scored column
  bool lm_ready_ = false, scalar_ready_ = false;
};

// Parameter name -> host values (f32), the names of Transformer::parameter_names().
using HostWeights = std::map<std::string, std::vector<float>>;
HostWeights read_weights(Transformer& model);  // every parameter (the master copy where there is one)
// Sets the named parameters; with WeightCoverage::All every parameter of the model must be given.
enum class WeightCoverage : uint8_t { Some, All };
void write_weights(Transformer& model, const HostWeights& weights, WeightCoverage coverage = WeightCoverage::Some);

}  // namespace ppo
