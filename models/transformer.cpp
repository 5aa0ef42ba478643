#include "models/transformer.h"

#include <algorithm>
#include <cmath>

#include "engine/device_memory.h"
#include "engine/philox.h"

namespace ppo {

DType act_dtype_of(Precision p) {
  switch (p) {
    case Precision::F32: return DType::F32;
    case Precision::F64: return DType::F64;
    case Precision::BF16: return DType::BF16;
  }
  return DType::F32;
}
DType grad_dtype_of(Precision p) { return p == Precision::F64 ? DType::F64 : DType::F32; }

namespace {

// One parameter: its name, shape and where it lives in Transformer::Params (a layer slot or a
// global slot).
struct ParamEntry {
  std::string name;
  std::vector<int64_t> shape;
  int layer = -1;
  Tensor Transformer::Layer::*layer_slot = nullptr;
  Tensor Transformer::Globals::*global_slot = nullptr;
};

// The parameter table of a model, in carving order.
std::vector<ParamEntry> parameter_table(const ModelSpec& spec) {
  using L = Transformer::Layer;
  using G = Transformer::Globals;
  const ModelConfig& c = spec.config;
  const int64_t C = c.d_model, F = c.d_ff, V = c.vocab_size, QKV = c.qkv_width();
  const bool gpt2 = c.arch == Arch::GPT2;
  std::vector<ParamEntry> t;
  auto global = [&](const std::string& name, std::vector<int64_t> shape, Tensor G::*slot) {
    t.push_back({name, std::move(shape), -1, nullptr, slot});
  };
  auto layer = [&](int l, const std::string& name, std::vector<int64_t> shape, Tensor L::*slot) {
    t.push_back({name, std::move(shape), l, slot, nullptr});
  };
  if (gpt2) {
    global("wte.weight", {V, C}, &G::wte);
    global("wpe.weight", {c.max_seq_len, C}, &G::wpe);
  } else {
    global("embed_tokens.weight", {V, C}, &G::wte);
  }
  for (int l = 0; l < int(c.n_layer); ++l) {
    const std::string h = (gpt2 ? "h." : "layers.") + std::to_string(l) + ".";
    if (gpt2) {
      layer(l, h + "ln_1.weight", {C}, &L::ln1_w);
      layer(l, h + "ln_1.bias", {C}, &L::ln1_b);
      layer(l, h + "attn.c_attn.weight", {QKV, C}, &L::qkv_w);
      layer(l, h + "attn.c_attn.bias", {QKV}, &L::qkv_b);
      layer(l, h + "attn.c_proj.weight", {C, C}, &L::proj_w);
      layer(l, h + "attn.c_proj.bias", {C}, &L::proj_b);
      layer(l, h + "ln_2.weight", {C}, &L::ln2_w);
      layer(l, h + "ln_2.bias", {C}, &L::ln2_b);
      layer(l, h + "mlp.c_fc.weight", {F, C}, &L::fc_w);
      layer(l, h + "mlp.c_fc.bias", {F}, &L::fc_b);
      layer(l, h + "mlp.c_proj.weight", {C, F}, &L::fc_proj_w);
      layer(l, h + "mlp.c_proj.bias", {C}, &L::fc_proj_b);
    } else {
      layer(l, h + "input_layernorm.weight", {C}, &L::ln1_w);
      layer(l, h + "self_attn.qkv_proj.weight", {QKV, C}, &L::qkv_w);
      if (c.qkv_bias) layer(l, h + "self_attn.qkv_proj.bias", {QKV}, &L::qkv_b);
      layer(l, h + "self_attn.o_proj.weight", {C, C}, &L::proj_w);
      layer(l, h + "post_attention_layernorm.weight", {C}, &L::ln2_w);
      layer(l, h + "mlp.gate_up_proj.weight", {2 * F, C}, &L::fc_w);
      layer(l, h + "mlp.down_proj.weight", {C, F}, &L::fc_proj_w);
    }
  }
  if (gpt2) {
    global("ln_f.weight", {C}, &G::lnf_w);
    global("ln_f.bias", {C}, &G::lnf_b);
  } else {
    global("norm.weight", {C}, &G::lnf_w);
  }
  if (spec.has_lm() && !c.tied_embeddings) global("lm_head.weight", {V, C}, &G::lm_head);
  if (spec.has_scalar()) global("score.weight", {1, C}, &G::score);
  return t;
}

// The parameter regions (weights, master, grads, adam_m, adam_v) share one element layout: every
// tensor padded to kParamGranule elements, the matrices first. Element i of one region is element i
// of every other, so the optimizer runs over a region as one flat array (one launch), and elements
// [0, decayed) are exactly the matrices' (weight decay applies to them only, as HF Trainer).
constexpr int64_t kParamGranule = 128;  // 256 bytes of bf16: a multiple of the arena alignment in every dtype

struct ParamLayout {
  std::vector<size_t> order;    // parameter_table indices in carving order
  std::vector<int64_t> padded;  // per table index: the elements it occupies
  int64_t total = 0, decayed = 0;
};

ParamLayout param_layout(const std::vector<ParamEntry>& table) {
  ParamLayout l;
  l.padded.resize(table.size());
  for (int pass = 0; pass < 2; ++pass)  // the matrices, then the rest
    for (size_t i = 0; i < table.size(); ++i) {
      if ((table[i].shape.size() == 2) != (pass == 0)) continue;
      int64_t n = 1;
      for (int64_t d : table[i].shape) n *= d;
      l.padded[i] = (n + kParamGranule - 1) / kParamGranule * kParamGranule;
      l.order.push_back(i);
      l.total += l.padded[i];
      if (pass == 0) l.decayed = l.total;
    }
  return l;
}

// The layout's elements: a trained model's padded to a multiple of ranks x kParamGranule, so that
// every rank's shard is the same whole number of granules (ZeRO-1); a frozen model's as they are.
int64_t layout_total(const ModelSpec& spec, int64_t ranks) {
  const int64_t total = param_layout(parameter_table(spec)).total;
  if (spec.training != Training::Trained) return total;
  const int64_t unit = ranks * kParamGranule;
  return (total + unit - 1) / unit * unit;
}

// Activations of the block trunk over (B,T): the embedding output x0, `stored` sets of block
// activations ("blocks.{i}.*"; a frozen model or the decode buffers reuse one set for every
// layer), the shared projection output and the final norm.
void add_trunk_specs(std::vector<TensorSpec>& t, const ModelConfig& c, Precision p, int64_t B, int64_t T, int64_t stored) {
  const DType act = act_dtype_of(p), stat = grad_dtype_of(p);
  const int64_t C = c.d_model, N = B * T, F = c.d_ff, NH = c.n_head, HS = c.head_size();
  const int64_t FW = c.arch == Arch::GPT2 ? F : 2 * F;  // MLP up-projection width
  const bool layernorm = c.arch == Arch::GPT2;
  t.push_back({"x0", act, {B, T, C}});
  t.push_back({"proj", act, {B, T, C}});
  for (int64_t i = 0; i < stored; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    t.push_back({b + "ln1", act, {B, T, C}});
    if (layernorm) t.push_back({b + "ln1_mean", stat, {N}});
    t.push_back({b + "ln1_rstd", stat, {N}});
    t.push_back({b + "qkv", act, {B, T, c.qkv_width()}});
    t.push_back({b + "att", act, {B, T, NH * HS}});
    t.push_back({b + "lse", stat, {B, NH, T}});
    t.push_back({b + "res2", act, {B, T, C}});
    t.push_back({b + "ln2", act, {B, T, C}});
    if (layernorm) t.push_back({b + "ln2_mean", stat, {N}});
    t.push_back({b + "ln2_rstd", stat, {N}});
    t.push_back({b + "fch", act, {B, T, FW}});
    t.push_back({b + "fch_act", act, {B, T, F}});
    t.push_back({b + "out", act, {B, T, C}});
  }
  t.push_back({"lnf", act, {B, T, C}});
  if (layernorm) t.push_back({"lnf_mean", stat, {N}});
  t.push_back({"lnf_rstd", stat, {N}});
}

// A tensor's empty view when absent from a region's table (RMSNorm has no means).
Tensor lookup(const std::map<std::string, Tensor>& region, const std::string& name) {
  auto it = region.find(name);
  return it == region.end() ? Tensor{} : it->second;
}

// The leading part of a tensor carved for the largest shape, viewed as `dims`.
Tensor fit(const Tensor& t, std::initializer_list<int64_t> dims) {
  if (t.empty()) return t;
  Tensor v(t.data, t.dtype, t.device, dims, t.name);
  PPO_ASSERT(v.numel() <= t.numel(), "tensor '", t.name, "' ", t.shape_str(), " is too small for ", v.shape_str());
  return v;
}

// Views of stored block set `i` of a region for (B,T), with residual input `in`.
Transformer::BlockActs block_views(const std::map<std::string, Tensor>& r, const ModelConfig& c, int64_t i,
                                   int64_t B, int64_t T, Tensor in) {
  const std::string b = "blocks." + std::to_string(i) + ".";
  const int64_t C = c.d_model, N = B * T, F = c.d_ff, NH = c.n_head;
  const int64_t FW = c.arch == Arch::GPT2 ? F : 2 * F;
  auto at = [&](const char* name) { return lookup(r, b + name); };
  Transformer::BlockActs a;
  a.in = in;
  a.ln1 = fit(at("ln1"), {B, T, C});
  a.ln1_mean = fit(at("ln1_mean"), {N});
  a.ln1_rstd = fit(at("ln1_rstd"), {N});
  a.qkv = fit(at("qkv"), {B, T, c.qkv_width()});
  a.att = fit(at("att"), {B, T, NH * c.head_size()});
  a.lse = fit(at("lse"), {B, NH, T});
  a.proj = fit(lookup(r, "proj"), {B, T, C});
  a.res2 = fit(at("res2"), {B, T, C});
  a.ln2 = fit(at("ln2"), {B, T, C});
  a.ln2_mean = fit(at("ln2_mean"), {N});
  a.ln2_rstd = fit(at("ln2_rstd"), {N});
  a.fch = fit(at("fch"), {B, T, FW});
  a.fch_act = fit(at("fch_act"), {B, T, F});
  a.out = fit(at("out"), {B, T, C});
  return a;
}

// Block views of all layers of a region for (B,T): layer l uses set l (or set 0 when `stored` is
// 1); layer 0 reads x0, layer l reads layer l-1's output.
std::vector<Transformer::BlockActs> all_blocks(const std::map<std::string, Tensor>& r, const ModelConfig& c,
                                               int64_t stored, int64_t B, int64_t T) {
  std::vector<Transformer::BlockActs> acts;
  Tensor in = fit(lookup(r, "x0"), {B, T, c.d_model});
  for (int64_t l = 0; l < c.n_layer; ++l) {
    acts.push_back(block_views(r, c, stored == 1 ? 0 : l, B, T, in));
    in = acts.back().out;
  }
  return acts;
}

int64_t stored_blocks(const ModelSpec& spec) { return spec.training == Training::Trained ? spec.config.n_layer : 1; }

// Carves every tensor of a table from a region into `out` (keyed by name).
void carve_table(const std::vector<TensorSpec>& table, Carver& carver, std::map<std::string, Tensor>& out) {
  for (const TensorSpec& s : table) {
    auto it = out.emplace(s.name, Tensor{}).first;
    it->second = carver.take(s, it->first.c_str());
  }
}

}  // namespace

// ---- size tables and regions ------------------------------------------------------------------------

std::vector<TensorSpec> parameter_specs(const ModelSpec& spec, DType dtype) {
  std::vector<TensorSpec> t;
  for (const ParamEntry& e : parameter_table(spec)) t.push_back({e.name, dtype, e.shape});
  return t;
}

std::vector<TensorSpec> activation_specs(const ModelSpec& spec, Precision p, int64_t B, int64_t T) {
  const ModelConfig& c = spec.config;
  const DType act = act_dtype_of(p), stat = grad_dtype_of(p);
  const int64_t C = c.d_model, N = B * T, F = c.d_ff, NH = c.n_head, HS = c.head_size();
  std::vector<TensorSpec> t;
  add_trunk_specs(t, c, p, B, T, stored_blocks(spec));
  // ids copied by forward (backward needs them after the caller's buffers moved on)
  t.push_back({"tokens", DType::I32, {B, T}});
  t.push_back({"pos", DType::I32, {B, T}});
  t.push_back({"mask", DType::I32, {B, T}});
  if (spec.has_lm()) {
    t.push_back({"targets", DType::I32, {B, T}});
    t.push_back({"head_lse", stat, {B, T}});
    t.push_back({"head_entropy", stat, {B, T}});
    // a window of columns scored alone (lm_logprobs first_column > 0): its hidden rows, log-probs
    t.push_back({"head_hidden", act, {B, T, C}});
    t.push_back({"head_logp", stat, {B, T}});
    if (spec.training == Training::Trained) {
      t.push_back({"head_dhidden", act, {B, T, C}});
      t.push_back({"head_gentropy", stat, {B, T}});
    }
  }
  if (spec.has_scalar()) t.push_back({"values", act, {N, 1}});
  if (spec.training == Training::Trained) {
    const int64_t FW = c.arch == Arch::GPT2 ? F : 2 * F;
    t.push_back({"dlnf", act, {B, T, C}});   // sum of the heads' hidden gradients
    t.push_back({"dhead", act, {B, T, C}});  // one head's hidden gradient
    t.push_back({"dres", act, {B, T, C}});   // residual-stream gradient
    t.push_back({"dln", act, {B, T, C}});
    t.push_back({"dqkv", act, {B, T, c.qkv_width()}});
    t.push_back({"datt", act, {B, T, NH * HS}});
    t.push_back({"dfch", act, {B, T, FW}});
    t.push_back({"dfch_act", act, {B, T, F}});
    if (spec.has_scalar()) t.push_back({"dvalues", act, {N, 1}});
  }
  return t;
}

std::vector<TensorSpec> kv_cache_specs(const ModelSpec& spec, Precision p, int64_t B, int64_t S) {
  const ModelConfig& c = spec.config;
  const int64_t W = c.n_kv_head * c.head_size();
  std::vector<TensorSpec> t;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    t.push_back({"k." + std::to_string(l), act_dtype_of(p), {B, S, W}});
    t.push_back({"v." + std::to_string(l), act_dtype_of(p), {B, S, W}});
  }
  return t;
}

std::vector<TensorSpec> decode_specs(const ModelSpec& spec, Precision p, int64_t B, int64_t P) {
  const ModelConfig& c = spec.config;
  std::vector<TensorSpec> t;
  add_trunk_specs(t, c, p, B, P, 1);
  t.push_back({"prompt_mask", DType::I32, {B, P}});
  t.push_back({"last", act_dtype_of(p), {B, c.d_model}});
  t.push_back({"logits", act_dtype_of(p), {B, c.vocab_size}});
  return t;
}

std::vector<RegionSpec> model_regions(const std::string& owner, const ModelSpec& spec, const RunShape& shape,
                                      Precision p) {
  const ModelConfig& c = spec.config;
  PPO_ASSERT(shape.rollout_batch > 0 && shape.prompt_len > 0 && shape.response_len > 0 && shape.micro_batch > 0,
             owner, ": rollout batch, prompt length, response length and micro batch must be positive");
  PPO_ASSERT(shape.seq_len() <= c.max_seq_len, owner, ": prompt_length + response_length = ", shape.seq_len(),
             " exceeds the model's max_seq_len ", c.max_seq_len);
  PPO_ASSERT(spec.generation == Generation::None || spec.has_lm(), owner, ": a model that generates needs an LM head");
  PPO_ASSERT(shape.ranks >= 1, owner, ": ranks = ", shape.ranks, " must be positive");
  std::vector<RegionSpec> r;
  const size_t elements = size_t(layout_total(spec, shape.ranks)), shard = elements / size_t(shape.ranks);
  r.push_back({owner, "weights", elements * dtype_size(act_dtype_of(p)), Phase::Always});
  if (spec.training == Training::Trained) {
    const size_t grad_bytes = elements * dtype_size(grad_dtype_of(p)),
                 shard_bytes = shard * dtype_size(grad_dtype_of(p));
    if (p == Precision::BF16) r.push_back({owner, "master", shard * dtype_size(DType::F32), Phase::Always});
    r.push_back({owner, "grads", grad_bytes + kArenaAlignment, Phase::Always});  // + the sum of squares (f64)
    r.push_back({owner, "adam_m", shard_bytes, Phase::Always});
    r.push_back({owner, "adam_v", shard_bytes, Phase::Always});
  }
  r.push_back({owner, "activations", packed_bytes(activation_specs(spec, p, shape.micro_batch, shape.seq_len())), Phase::Train});
  if (spec.generation == Generation::KVCache) {
    r.push_back({owner, "kv_cache", packed_bytes(kv_cache_specs(spec, p, shape.rollout_batch, shape.seq_len())), Phase::Rollout});
    r.push_back({owner, "decode", packed_bytes(decode_specs(spec, p, shape.rollout_batch, shape.prompt_len)), Phase::Rollout});
  }
  return r;
}

// ---- construction -----------------------------------------------------------------------------------

Transformer::Transformer(Backend& backend, const ModelSpec& spec, const RunShape& shape, const Arena& arena,
                         std::string owner, Communicator* ranks)
    : be_(backend),
      spec_(spec),
      shape_(shape),
      owner_(std::move(owner)),
      norm_(spec.config.arch == Arch::GPT2 ? NormKind::LayerNorm : NormKind::RMSNorm),
      ranks_(ranks) {
  const Precision p = be_.precision();
  const bool trained = spec_.training == Training::Trained;
  if (!ranks_) {
    own_ranks_ = Communicator::single();
    ranks_ = own_ranks_.get();
  }
  PPO_ASSERT(ranks_->size() == shape_.ranks, owner_, ": planned for ", shape_.ranks, " ranks, the communicator has ",
             ranks_->size());
  // The same checks as the planner, and the plan must be this model's.
  for (const RegionSpec& want : model_regions(owner_, spec_, shape_, p)) {
    const Region* have = arena.plan().find(owner_, want.name);
    PPO_ASSERT(have != nullptr && have->spec.bytes == want.bytes, owner_, ": the arena plan's region '", want.name,
               "' does not match this model (", have ? have->spec.bytes : 0, " vs ", want.bytes, " bytes)");
  }
  auto finish = [&](const char* region, const Carver& c) {
    PPO_ASSERT(c.used() == c.capacity(), owner_, "/", region, ": carved ", c.used(), " of ", c.capacity(), " bytes");
    carved_[region] = c.used();
  };

  // Parameters and their training state: one table, carved in each dtype with one element layout.
  const std::vector<ParamEntry> table = parameter_table(spec_);
  const ParamLayout layout = param_layout(table);
  for (const ParamEntry& e : table) names_.push_back(e.name);
  for (size_t i = 0; i < names_.size(); ++i) index_[names_[i]] = i;
  decayed_ = layout.decayed;
  offsets_.assign(table.size(), 0);
  int64_t at = 0;
  for (size_t i : layout.order) offsets_[i] = at, at += layout.padded[i];
  const int64_t total = layout_total(spec_, shape_.ranks), shard = total / shape_.ranks;
  shard_ = {shard * ranks_->rank(), shard * (ranks_->rank() + 1), total};
  w_.layers.resize(size_t(config().n_layer));
  gr_.layers.resize(size_t(config().n_layer));
  // weights and grads: every parameter (views by name) and the padding to `total`
  auto carve_params = [&](const char* region, DType dtype, std::vector<Tensor>& flat, Params* structured) {
    Carver carver = arena.carver(owner_, region);
    flat.assign(table.size(), Tensor{});
    Tensor all;
    for (size_t i : layout.order) {
      Tensor t = carver.take(dtype, {layout.padded[i]}, names_[i].c_str());
      if (all.empty()) all = Tensor(t.data, dtype, t.device, {total}, region);
      t.ndim = int(table[i].shape.size());
      for (int d = 0; d < t.ndim; ++d) t.shape[d] = table[i].shape[size_t(d)];
      flat[i] = t;
      const ParamEntry& e = table[i];
      if (e.layer >= 0) structured->layers[size_t(e.layer)].*e.layer_slot = t;
      else structured->g.*e.global_slot = t;
    }
    if (total > layout.total) carver.take(dtype, {total - layout.total}, "shard padding");
    if (std::string(region) == "grads") grad_sumsq_ = carver.take(DType::F64, {1}, "grad_sumsq");
    finish(region, carver);
    be_.zero(all);  // the padding stays 0: it adds nothing to a norm and AdamW keeps it 0
    return all;
  };
  // master, adam_m, adam_v: this rank's shard of the layout, flat
  auto carve_shard = [&](const char* region, DType dtype) {
    Carver carver = arena.carver(owner_, region);
    Tensor all = carver.take(dtype, {shard}, region);
    finish(region, carver);
    be_.zero(all);  // AdamW starts from m = v = 0
    return all;
  };
  all_weights_ = carve_params("weights", be_.act_dtype(), weights_, &w_);
  if (trained) {
    if (p == Precision::BF16) all_master_ = carve_shard("master", DType::F32);
    all_grads_ = carve_params("grads", be_.grad_dtype(), grads_, &gr_);
    all_adam_m_ = carve_shard("adam_m", be_.grad_dtype());
    all_adam_v_ = carve_shard("adam_v", be_.grad_dtype());
  }

  Carver acts = arena.carver(owner_, "activations");
  carve_table(activation_specs(spec_, p, shape_.micro_batch, shape_.seq_len()), acts, act_);
  finish("activations", acts);
  if (spec_.generation == Generation::KVCache) {
    Carver kv = arena.carver(owner_, "kv_cache");
    for (const TensorSpec& s : kv_cache_specs(spec_, p, shape_.rollout_batch, shape_.seq_len()))
      (s.name[0] == 'k' ? kcache_ : vcache_).push_back(kv.take(s, s.name[0] == 'k' ? "kcache" : "vcache"));
    finish("kv_cache", kv);
    Carver dec = arena.carver(owner_, "decode");
    carve_table(decode_specs(spec_, p, shape_.rollout_batch, shape_.prompt_len), dec, dec_);
    finish("decode", dec);
  }
}

size_t Transformer::carved_bytes(const std::string& region) const {
  auto it = carved_.find(region);
  return it == carved_.end() ? 0 : it->second;
}

// ---- parameters ---------------------------------------------------------------------------------------

Tensor Transformer::parameter(const std::string& name) const {
  auto it = index_.find(name);
  PPO_ASSERT(it != index_.end(), owner_, ": no parameter named '", name, "'");
  return weights_[it->second];
}

Tensor Transformer::gradient(const std::string& name) const {
  require_trained("gradient");
  auto it = index_.find(name);
  PPO_ASSERT(it != index_.end(), owner_, ": no parameter named '", name, "'");
  return grads_[it->second];
}

int64_t Transformer::parameter_offset(const std::string& name) const {
  auto it = index_.find(name);
  PPO_ASSERT(it != index_.end(), owner_, ": no parameter named '", name, "'");
  return offsets_[it->second];
}

Tensor Transformer::state_shard(const std::string& region) const {
  require_trained("state_shard");
  if (region == "master") return all_master_;
  if (region == "adam_m") return all_adam_m_;
  PPO_ASSERT(region == "adam_v", owner_, ": no training-state region '", region, "' (master, adam_m, adam_v)");
  return all_adam_v_;
}

Transformer::StateSlice Transformer::state_slice(const std::string& region, const std::string& name) const {
  const Tensor all = state_shard(region);
  const int64_t at = parameter_offset(name), n = weights_[index_.at(name)].numel();
  const int64_t lo = std::max(at, shard_.begin), hi = std::min(at + n, shard_.end);
  if (all.empty() || lo >= hi) return {};
  return {lo - at, all.slice0(lo - shard_.begin, hi - shard_.begin)};
}

namespace {
// The whole of parameter `name` in one rank's training-state region, viewed in its shape.
Tensor whole_state(const Transformer& m, const std::string& region, const std::string& name) {
  m.gradient(name);  // checks that the model is trained and has the parameter
  const Transformer::StateSlice s = m.state_slice(region, name);
  const Tensor w = m.parameter(name);
  if (s.view.empty() && m.state_shard(region).empty()) return {};
  PPO_ASSERT(s.first == 0 && s.view.numel() == w.numel(), m.owner(), ": ", region, " of '", name,
             "' is split between ranks (ZeRO-1); read it with state_slice");
  Tensor t = s.view;
  t.ndim = w.ndim;
  for (int d = 0; d < w.ndim; ++d) t.shape[d] = w.shape[d];
  return t;
}
}  // namespace

Tensor Transformer::master_parameter(const std::string& name) const { return whole_state(*this, "master", name); }
Tensor Transformer::adam_m(const std::string& name) const { return whole_state(*this, "adam_m", name); }
Tensor Transformer::adam_v(const std::string& name) const { return whole_state(*this, "adam_v", name); }

void Transformer::set_parameter(const std::string& name, const std::vector<float>& values) {
  const size_t i = index_.count(name) ? index_.at(name) : size_t(-1);
  PPO_ASSERT(i != size_t(-1), owner_, ": no parameter named '", name, "'");
  be_.from_host(weights_[i], values);
  if (all_master_.empty()) return;
  const StateSlice s = state_slice("master", name);  // this rank's part of the master copy
  if (!s.view.empty())
    be_.from_host(s.view, std::vector<float>(values.begin() + s.first, values.begin() + s.first + s.view.numel()));
}

std::vector<float> Transformer::get_parameter(const std::string& name) {
  const size_t i = index_.count(name) ? index_.at(name) : size_t(-1);
  PPO_ASSERT(i != size_t(-1), owner_, ": no parameter named '", name, "'");
  if (all_master_.empty()) return be_.to_host(weights_[i]);
  const StateSlice s = state_slice("master", name);
  const std::vector<float> mine = s.view.empty() ? std::vector<float>{} : be_.to_host(s.view);
  return ranks_->host_gather(mine);  // the ranks' parts, in rank order: the whole parameter
}

void Transformer::init_random(uint64_t seed) {
  constexpr float kStd = 0.02f;
  for (size_t i = 0; i < names_.size(); ++i) {
    const Tensor& w = weights_[i];
    std::vector<float> v(size_t(w.numel()));
    const bool bias = names_[i].size() >= 5 && names_[i].compare(names_[i].size() - 5, 5, ".bias") == 0;
    if (w.ndim == 2) {
      // Box-Muller on Philox draws: element j uses draw j/2 of stream i.
      for (size_t j = 0; j < v.size(); ++j) {
        const Philox4x32 r = philox_draw(seed, i, j / 2);
        const double u1 = (double(r.v[0] >> 8) + 1.0) / 16777216.0, u2 = double(r.v[1] >> 8) / 16777216.0;
        const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
        v[j] = float(kStd * radius * (j % 2 ? std::sin(angle) : std::cos(angle)));
      }
    } else {
      std::fill(v.begin(), v.end(), bias ? 0.0f : 1.0f);  // norm weights 1, biases 0
    }
    set_parameter(names_[i], v);
  }
}

Tensor Transformer::lm_weight() const { return config().tied_embeddings ? w_.g.wte : w_.g.lm_head; }
Tensor Transformer::lm_weight_grad() const { return config().tied_embeddings ? gr_.g.wte : gr_.g.lm_head; }

void Transformer::require_trained(const char* what) const {
  PPO_ASSERT(spec_.training == Training::Trained, owner_, ": ", what, " needs a trained model (this one is frozen)");
}

// ---- forward --------------------------------------------------------------------------------------------

void Transformer::embed(Tensor out, Tensor tokens, Tensor pos) {
  be_.embedding_forward(out, tokens, pos, w_.g.wte, config().arch == Arch::GPT2 ? w_.g.wpe : Tensor{});
}

template <class Attend>
void Transformer::run_blocks(const std::vector<BlockActs>& acts, Tensor lnf, Tensor lnf_mean, Tensor lnf_rstd, Tensor pos,
                             Attend attend) {
  const ModelConfig& c = config();
  const int NH = int(c.n_head), NKV = int(c.n_kv_head), HS = int(c.head_size());
  const float eps = c.norm_eps;
  be_.norm_forward(norm_, acts[0].ln1, acts[0].ln1_mean, acts[0].ln1_rstd, acts[0].in, w_.layers[0].ln1_w,
                   w_.layers[0].ln1_b, eps);
  for (size_t l = 0; l < acts.size(); ++l) {
    const Layer& W = w_.layers[l];
    const BlockActs& A = acts[l];
    be_.matmul_forward(A.qkv, A.ln1, W.qkv_w, W.qkv_b);
    if (c.arch == Arch::Llama) be_.rope_forward(A.qkv, pos, NH, NKV, HS, c.rope_theta);
    attend(l, A);  // A.att (and A.lse) from A.qkv
    be_.matmul_forward(A.proj, A.att, W.proj_w, W.proj_b);
    be_.residual_norm_forward(norm_, A.res2, A.ln2, A.ln2_mean, A.ln2_rstd, A.in, A.proj, W.ln2_w, W.ln2_b, eps);
    be_.matmul_forward(A.fch, A.ln2, W.fc_w, W.fc_b);
    if (c.arch == Arch::GPT2) be_.gelu_forward(A.fch_act, A.fch);
    else be_.swiglu_forward(A.fch_act, A.fch);
    be_.matmul_forward(A.proj, A.fch_act, W.fc_proj_w, W.fc_proj_b);
    // out = res2 + mlp; then the next norm: the next block's norm1, or the final norm
    if (l + 1 < acts.size()) {
      const BlockActs& N = acts[l + 1];
      be_.residual_norm_forward(norm_, A.out, N.ln1, N.ln1_mean, N.ln1_rstd, A.res2, A.proj, w_.layers[l + 1].ln1_w,
                                w_.layers[l + 1].ln1_b, eps);
    } else {
      be_.residual_norm_forward(norm_, A.out, lnf, lnf_mean, lnf_rstd, A.res2, A.proj, w_.g.lnf_w, w_.g.lnf_b, eps);
    }
  }
}

void Transformer::forward(Tensor tokens, Tensor pos, Tensor mask) {
  PPO_ASSERT(tokens.ndim == 2, owner_, ": forward: tokens '", tokens.name, "' must be (B,T), is ", tokens.shape_str());
  const int64_t B = tokens.dim(0), T = tokens.dim(1), C = config().d_model;
  PPO_ASSERT(B >= 1 && B <= shape_.micro_batch && T >= 1 && T <= shape_.seq_len(), owner_, ": forward over (", B, ",",
             T, ") exceeds the planned micro-batch (", shape_.micro_batch, ",", shape_.seq_len(), ")");
  B_ = B;
  T_ = T;
  Tensor tok = fit(act_.at("tokens"), {B, T}), ps = fit(act_.at("pos"), {B, T}), mk = fit(act_.at("mask"), {B, T});
  be_.copy(tok, tokens);
  be_.copy(ps, pos);
  be_.copy(mk, mask);
  const std::vector<BlockActs> acts = all_blocks(act_, config(), stored_blocks(spec_), B, T);
  embed(acts[0].in, tok, ps);
  const int NH = int(config().n_head), NKV = int(config().n_kv_head), HS = int(config().head_size());
  run_blocks(acts, fit(act_.at("lnf"), {B, T, C}), fit(lookup(act_, "lnf_mean"), {B * T}),
             fit(act_.at("lnf_rstd"), {B * T}), ps, [&](size_t, const BlockActs& A) {
               be_.attention_forward(A.att, A.lse, A.qkv, mk, NH, NKV, HS);
             });
  if (spec_.training == Training::Trained) be_.zero(fit(act_.at("dlnf"), {B, T, C}));
  lm_ready_ = scalar_ready_ = false;
}

void Transformer::lm_logprobs(Tensor targets, float inv_temperature, Tensor logp, Tensor entropy, int64_t first_column) {
  PPO_ASSERT(spec_.has_lm(), owner_, ": lm_logprobs: this model has no LM head");
  PPO_ASSERT(B_ > 0, owner_, ": lm_logprobs before forward");
  PPO_ASSERT(targets.ndim == 2 && targets.dim(0) == B_ && targets.dim(1) == T_, owner_, ": targets '", targets.name,
             "' ", targets.shape_str(), " must match the forward's (", B_, ",", T_, ")");
  PPO_ASSERT(first_column >= 0 && first_column < T_, owner_, ": lm_logprobs: first_column ", first_column,
             " outside [0,", T_, ")");
  const int64_t B = B_, T = T_, W = T - first_column, C = config().d_model;
  Tensor tg = fit(act_.at("targets"), {B, W}), ent = fit(act_.at("head_entropy"), {B, W});
  Tensor lnf = fit(act_.at("lnf"), {B, T, C});
  if (first_column == 0) {
    be_.copy(tg, targets);
    be_.lm_logprob_entropy_forward(logp, ent, fit(act_.at("head_lse"), {B, T}), lnf, lm_weight(), tg, inv_temperature);
    if (!entropy.empty()) be_.convert(entropy, ent);
  } else {  // the window's rows, contiguous for the vocabulary pass, then back into (B,T) columns
    Tensor hidden = fit(act_.at("head_hidden"), {B, W, C}), lp = fit(act_.at("head_logp"), {B, W});
    be_.copy_columns(hidden, 0, lnf, first_column, W);
    be_.copy_columns(tg, 0, targets, first_column, W);
    be_.lm_logprob_entropy_forward(lp, ent, fit(act_.at("head_lse"), {B, W}), hidden, lm_weight(), tg, inv_temperature);
    be_.zero(logp);
    be_.copy_columns(logp, first_column, lp, 0, W);
    if (!entropy.empty()) {
      be_.zero(entropy);
      be_.copy_columns(entropy, first_column, ent, 0, W);
    }
  }
  head_first_ = first_column;
  lm_ready_ = true;
}

Tensor Transformer::hidden() const {
  PPO_ASSERT(B_ > 0, owner_, ": hidden before forward");
  return fit(act_.at("lnf"), {B_, T_, config().d_model});
}

void Transformer::scalar(Tensor values) {
  PPO_ASSERT(spec_.has_scalar(), owner_, ": scalar: this model has no scalar head");
  PPO_ASSERT(B_ > 0, owner_, ": scalar before forward");
  const int64_t N = B_ * T_;
  PPO_ASSERT(values.numel() == N, owner_, ": values '", values.name, "' ", values.shape_str(), " must hold (", B_, ",", T_, ")");
  Tensor v = fit(act_.at("values"), {N, 1});
  be_.matmul_forward(v, fit(act_.at("lnf"), {N, config().d_model}), w_.g.score, Tensor{});
  be_.convert(values, v);
  scalar_ready_ = true;
}

// ---- backward ---------------------------------------------------------------------------------------------

void Transformer::lm_logprobs_backward(Tensor g_logp, Tensor g_entropy, float inv_temperature) {
  require_trained("lm_logprobs_backward");
  PPO_ASSERT(lm_ready_, owner_, ": lm_logprobs_backward without lm_logprobs after the last forward");
  const int64_t B = B_, T = T_, C = config().d_model, first = head_first_, W = T - first;
  Tensor dhead = fit(act_.at("dhead"), {B, T, C}), dlnf = fit(act_.at("dlnf"), {B, T, C});
  Tensor tg = fit(act_.at("targets"), {B, W}), lse = fit(act_.at("head_lse"), {B, W});
  Tensor ent = fit(act_.at("head_entropy"), {B, W});
  if (first == 0) {
    be_.lm_logprob_entropy_backward(dhead, lm_weight_grad(), g_logp, g_entropy, fit(act_.at("lnf"), {B, T, C}),
                                    lm_weight(), tg, lse, ent, inv_temperature);
  } else {  // the window's weights in, its hidden gradient out into columns first.. of a zeroed dhead
    Tensor gl, ge, dwindow = fit(act_.at("head_dhidden"), {B, W, C});
    if (!g_logp.empty()) {
      gl = fit(act_.at("head_logp"), {B, W});
      be_.copy_columns(gl, 0, g_logp, first, W);
    }
    if (!g_entropy.empty()) {
      ge = fit(act_.at("head_gentropy"), {B, W});
      be_.copy_columns(ge, 0, g_entropy, first, W);
    }
    be_.lm_logprob_entropy_backward(dwindow, lm_weight_grad(), gl, ge, fit(act_.at("head_hidden"), {B, W, C}),
                                    lm_weight(), tg, lse, ent, inv_temperature);
    be_.zero(dhead);
    be_.copy_columns(dhead, first, dwindow, 0, W);
  }
  be_.residual_forward(dlnf, dlnf, dhead);
}

void Transformer::scalar_backward(Tensor g_values) {
  require_trained("scalar_backward");
  PPO_ASSERT(scalar_ready_, owner_, ": scalar_backward without scalar after the last forward");
  const int64_t N = B_ * T_, C = config().d_model;
  Tensor dv = fit(act_.at("dvalues"), {N, 1}), dhead = fit(act_.at("dhead"), {N, C}), dlnf = fit(act_.at("dlnf"), {N, C});
  be_.convert(dv, g_values);
  be_.matmul_backward(dhead, gr_.g.score, Tensor{}, dv, fit(act_.at("lnf"), {N, C}), w_.g.score);
  be_.residual_forward(dlnf, dlnf, dhead);
}

void Transformer::backward() {
  PPO_ASSERT(!grads_reduced_ || ranks_->size() == 1, owner_, ": backward after reduce_gradients: zero_grad first");
  require_trained("backward");
  grad_sumsq_current_ = false;
  PPO_ASSERT(lm_ready_ || scalar_ready_, owner_, ": backward without a head after the last forward");
  const ModelConfig& c = config();
  const int64_t B = B_, T = T_, C = c.d_model, N = B * T;
  const int NH = int(c.n_head), NKV = int(c.n_kv_head), HS = int(c.head_size());
  const int64_t FW = c.arch == Arch::GPT2 ? c.d_ff : 2 * c.d_ff;
  const std::vector<BlockActs> acts = all_blocks(act_, c, stored_blocks(spec_), B, T);
  Tensor tok = fit(act_.at("tokens"), {B, T}), pos = fit(act_.at("pos"), {B, T}), mask = fit(act_.at("mask"), {B, T});
  Tensor dres = fit(act_.at("dres"), {B, T, C}), dln = fit(act_.at("dln"), {B, T, C});
  Tensor dqkv = fit(act_.at("dqkv"), {B, T, c.qkv_width()}), datt = fit(act_.at("datt"), {B, T, int64_t(NH) * HS});
  Tensor dfch = fit(act_.at("dfch"), {B, T, FW}), dfch_act = fit(act_.at("dfch_act"), {B, T, c.d_ff});

  // dres = dL/d(residual output of the last block)
  be_.zero(dres);
  be_.norm_backward(norm_, dres, gr_.g.lnf_w, gr_.g.lnf_b, fit(act_.at("dlnf"), {B, T, C}), acts.back().out, w_.g.lnf_w,
                    fit(lookup(act_, "lnf_mean"), {N}), fit(act_.at("lnf_rstd"), {N}));
  for (size_t i = acts.size(); i-- > 0;) {
    const Layer &W = w_.layers[i], &G = gr_.layers[i];
    const BlockActs& A = acts[i];
    // out = res2 + mlp(ln2(res2)): dres flows to res2 unchanged, and through the MLP
    be_.matmul_backward(dfch_act, G.fc_proj_w, G.fc_proj_b, dres, A.fch_act, W.fc_proj_w);
    if (c.arch == Arch::GPT2) be_.gelu_backward(dfch, dfch_act, A.fch);
    else be_.swiglu_backward(dfch, dfch_act, A.fch);
    be_.matmul_backward(dln, G.fc_w, G.fc_b, dfch, A.ln2, W.fc_w);
    be_.norm_backward(norm_, dres, G.ln2_w, G.ln2_b, dln, A.res2, W.ln2_w, A.ln2_mean, A.ln2_rstd);
    // res2 = in + attn(ln1(in)): dres flows to in unchanged, and through attention
    be_.matmul_backward(datt, G.proj_w, G.proj_b, dres, A.att, W.proj_w);
    be_.attention_backward(dqkv, datt, A.qkv, A.att, A.lse, mask, NH, NKV, HS);
    if (c.arch == Arch::Llama) be_.rope_backward(dqkv, pos, NH, NKV, HS, c.rope_theta);
    be_.matmul_backward(dln, G.qkv_w, G.qkv_b, dqkv, A.ln1, W.qkv_w);
    be_.norm_backward(norm_, dres, G.ln1_w, G.ln1_b, dln, A.in, W.ln1_w, A.ln1_mean, A.ln1_rstd);
  }
  be_.embedding_backward(gr_.g.wte, c.arch == Arch::GPT2 ? gr_.g.wpe : Tensor{}, dres, tok, pos);
}

void Transformer::zero_grad() {
  require_trained("zero_grad");
  be_.zero(all_grads_);
  grad_sumsq_current_ = false;
  grads_reduced_ = false;
}

void Transformer::reduce_gradients() {
  require_trained("reduce_gradients");
  PPO_ASSERT(!grads_reduced_, owner_, ": reduce_gradients twice without zero_grad");
  ranks_->reduce_scatter(all_grads_);
  grads_reduced_ = true;
  grad_sumsq_current_ = false;
}

// The sum of squares of the shard's gradients, added over ranks (on the device).
Tensor Transformer::grad_sum_squares() {
  require_trained("grad_sum_squares");
  PPO_ASSERT(grads_reduced_ || ranks_->size() == 1, owner_,
             ": call reduce_gradients (ranks meet) before grad_norm and adamw_step");
  be_.sum_squares(grad_sumsq_, all_grads_.slice0(shard_.begin, shard_.end));
  ranks_->all_reduce(grad_sumsq_);
  grad_sumsq_current_ = true;
  return grad_sumsq_;
}

double Transformer::grad_norm() { return std::sqrt(be_.to_host_f64(grad_sum_squares())[0]); }

void Transformer::adamw_step(const AdamWParams& hp, float max_grad_norm, uint64_t seed) {
  require_trained("adamw_step");
  if (!grad_sumsq_current_) grad_sum_squares();
  AdamWParams shard_hp = hp;
  shard_hp.first_element = shard_.begin;  // the rounding bits of the whole layout's elements
  const int64_t decayed = std::clamp(decayed_ - shard_.begin, int64_t(0), shard_.end - shard_.begin);
  auto mine = [&](const Tensor& t) { return t.slice0(shard_.begin, shard_.end); };
  be_.adamw_update(mine(all_weights_), all_master_, mine(all_grads_), all_adam_m_, all_adam_v_, decayed, grad_sumsq_,
                   max_grad_norm, shard_hp, seed);
  ranks_->all_gather(all_weights_);  // ranks meet: every rank's updated shard, everywhere
}

// ---- generation ---------------------------------------------------------------------------------------------

Tensor Transformer::logits_from(Tensor hidden_rows) {
  const int64_t B = hidden_rows.dim(0);
  Tensor logits = fit(dec_.at("logits"), {B, config().vocab_size});
  be_.matmul_forward(logits, hidden_rows, lm_weight(), Tensor{});
  return logits;
}

Tensor Transformer::prefill(Tensor tokens, Tensor pos, Tensor mask) {
  PPO_ASSERT(spec_.generation == Generation::KVCache, owner_, ": prefill: this model has no KV cache in the plan");
  PPO_ASSERT(tokens.ndim == 2, owner_, ": prefill: tokens '", tokens.name, "' must be (B,P), is ", tokens.shape_str());
  const ModelConfig& c = config();
  const int64_t B = tokens.dim(0), P = tokens.dim(1), C = c.d_model, S = shape_.seq_len();
  PPO_ASSERT(B >= 1 && B <= shape_.rollout_batch && P >= 1 && P <= shape_.prompt_len, owner_, ": prefill of (", B, ",", P,
             ") exceeds the planned rollout (", shape_.rollout_batch, ",", shape_.prompt_len, ")");
  PPO_ASSERT(mask.ndim == 2 && mask.dim(0) == B && mask.dim(1) == S, owner_, ": prefill: mask '", mask.name, "' ",
             mask.shape_str(), " must be (", B, ",", S, ")");
  const int NH = int(c.n_head), NKV = int(c.n_kv_head), HS = int(c.head_size());
  Tensor prompt_mask = fit(dec_.at("prompt_mask"), {B, P});
  be_.copy_columns(prompt_mask, 0, mask, 0, P);
  const std::vector<BlockActs> acts = all_blocks(dec_, c, 1, B, P);
  embed(acts[0].in, tokens, pos);
  Tensor lnf = fit(dec_.at("lnf"), {B, P, C});
  run_blocks(acts, lnf, fit(lookup(dec_, "lnf_mean"), {B * P}), fit(dec_.at("lnf_rstd"), {B * P}), pos,
             [&](size_t l, const BlockActs& A) {
               be_.attention_forward(A.att, A.lse, A.qkv, prompt_mask, NH, NKV, HS);
               be_.kv_cache_write(kcache_[l].slice0(0, B), vcache_[l].slice0(0, B), A.qkv, 0, NH, NKV, HS);
             });
  // the hidden state of position P-1 of each row
  Tensor last = fit(dec_.at("last"), {B, C});
  be_.copy_columns(last.reshape({B, 1, C}), 0, lnf, P - 1, 1);
  return logits_from(last);
}

Tensor Transformer::decode(Tensor tokens, Tensor pos, Tensor mask, DeviceIndex length) {
  PPO_ASSERT(spec_.generation == Generation::KVCache, owner_, ": decode: this model has no KV cache in the plan");
  const ModelConfig& c = config();
  const int64_t B = tokens.numel(), C = c.d_model, S = shape_.seq_len();
  PPO_ASSERT(B >= 1 && B <= shape_.rollout_batch && pos.numel() == B, owner_, ": decode: tokens '", tokens.name, "' ",
             tokens.shape_str(), " and pos '", pos.name, "' ", pos.shape_str(), " must both be (B) with B <= ",
             shape_.rollout_batch);
  PPO_ASSERT(!length.counter.empty() || (length.offset >= 1 && length.offset <= S), owner_, ": decode: length ",
             length.offset, " outside [1,", S, "]");
  const DeviceIndex last{length.counter, length.offset - 1};  // the new token's cache position
  const int NH = int(c.n_head), NKV = int(c.n_kv_head), HS = int(c.head_size());
  Tensor tok = tokens.reshape({B, 1}), ps = pos.reshape({B, 1});
  const std::vector<BlockActs> acts = all_blocks(dec_, c, 1, B, 1);
  embed(acts[0].in, tok, ps);
  Tensor lnf = fit(dec_.at("lnf"), {B, 1, C});
  run_blocks(acts, lnf, fit(lookup(dec_, "lnf_mean"), {B}), fit(dec_.at("lnf_rstd"), {B}), ps,
             [&](size_t l, const BlockActs& A) {
               Tensor k = kcache_[l].slice0(0, B), v = vcache_[l].slice0(0, B);
               be_.kv_cache_write(k, v, A.qkv, last, NH, NKV, HS);
               be_.attention_decode(A.att, A.qkv, k, v, mask, length, NH, NKV, HS);
             });
  return logits_from(lnf.reshape({B, C}));
}

HostWeights read_weights(Transformer& model) {
  HostWeights w;
  for (const std::string& name : model.parameter_names()) w[name] = model.get_parameter(name);
  return w;
}

void write_weights(Transformer& model, const HostWeights& weights, WeightCoverage coverage) {
  for (const auto& [name, values] : weights) model.set_parameter(name, values);
  if (coverage == WeightCoverage::Some) return;
  for (const std::string& name : model.parameter_names())
    PPO_ASSERT(weights.count(name), "write_weights: no values for parameter '", name, "'");
}

}  // namespace ppo
