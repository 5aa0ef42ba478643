#include "io/hf_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <set>
#include "engine/error.h"
#include "io/safetensors.h"

namespace ppo::io {
namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Non-parameter buffers some checkpoints carry (GPT-2's causal-mask buffers, RoPE frequencies).
bool is_buffer(const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") || ends_with(name, "rotary_emb.inv_freq");
}

// The trunk prefix the file uses: "transformer." / "model." or "" (a bare trunk).
std::string detect_prefix(const SafetensorsCheckpoint& ckpt, Arch arch, const std::string& where) {
  const std::string full = arch == Arch::GPT2 ? "transformer." : "model.";
  const std::string embed = arch == Arch::GPT2 ? "wte.weight" : "embed_tokens.weight";
  if (ckpt.contains(full + embed)) return full;
  if (ckpt.contains(embed)) return "";
  PPO_FAIL(where, ": missing tensor '", full, embed, "' (the token embedding)");
}

// Copies one HF piece (f32 values in the file's layout) into rows of the engine tensor (R,K).
void place_piece(std::vector<float>& dst, int64_t K, const HfPiece& piece, const std::vector<float>& src) {
  for (int64_t r = 0; r < piece.rows; ++r)
    for (int64_t k = 0; k < K; ++k)
      dst[size_t((piece.row_begin + r) * K + k)] = piece.transpose ? src[size_t(k * piece.rows + r)] : src[size_t(r * K + k)];
}

}  // namespace

std::vector<float> hf_piece_values(const std::vector<float>& src, int64_t K, const HfPiece& piece) {
  std::vector<float> out(size_t(piece.rows * K));
  for (int64_t r = 0; r < piece.rows; ++r)
    for (int64_t k = 0; k < K; ++k)
      out[size_t(piece.transpose ? k * piece.rows + r : r * K + k)] = src[size_t((piece.row_begin + r) * K + k)];
  return out;
}

namespace {

int64_t row_width(const TensorSpec& s) { return s.shape.size() == 2 ? s.shape[1] : 1; }
int64_t numel(const TensorSpec& s) { return s.shape[0] * row_width(s); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// A float tensor of the checkpoint as f32 values, checked against the expected shape.
std::vector<float> load_f32(const SafetensorsCheckpoint& ckpt, const std::string& name, const std::vector<int64_t>& shape) {
  const SafetensorsEntry& e = ckpt.entry(name);
  const std::string& file = ckpt.file_of(name).path();
  PPO_ASSERT(e.dtype == "F32" || e.dtype == "BF16" || e.dtype == "F16" || e.dtype == "F64", file, ": tensor '", name,
             "' has dtype ", e.dtype, "; a weight must be F32, BF16, F16 or F64");
  PPO_ASSERT(e.shape == shape, file, ": tensor '", name, "' has shape ", shape_text(e.shape), ", the config needs ",
             shape_text(shape));
  HostTensor t = ckpt.load(name, DType::F32);
  check_finite(t, file);
  const float* p = reinterpret_cast<const float*>(t.bytes.data());
  return std::vector<float>(p, p + t.numel());
}

// The first field where two engine configs differ, or "".
std::string first_difference(const ModelConfig& a, const ModelConfig& b) {
  const nlohmann::json ja = a.to_json(), jb = b.to_json();
  for (const auto& item : ja.items())
    if (item.value() != jb.at(item.key()))
      return item.key() + " = " + item.value().dump() + " in the checkpoint, " + jb.at(item.key()).dump() + " in the model";
  return "";
}

}  // namespace

std::vector<std::pair<TensorSpec, std::vector<HfPiece>>> hf_layout(const ModelSpec& spec, const std::string& prefix) {
  const ModelConfig& c = spec.config;
  const int64_t Q = c.n_head * c.head_size(), KV = c.n_kv_head * c.head_size(), F = c.d_ff;
  std::vector<std::pair<TensorSpec, std::vector<HfPiece>>> layout;
  for (const TensorSpec& s : parameter_specs(spec, DType::F32)) {
    const std::string& n = s.name;
    const int64_t R = s.shape[0], K = row_width(s);
    auto piece = [&](const std::string& hf_name, int64_t row_begin, int64_t rows, bool transpose) {
      HfPiece p{hf_name, row_begin, rows, transpose, {}};
      p.hf_shape = s.shape.size() == 1 ? std::vector<int64_t>{rows}
                   : transpose         ? std::vector<int64_t>{K, rows}
                                       : std::vector<int64_t>{rows, K};
      return p;
    };
    std::vector<HfPiece> pieces;
    if (n == "lm_head.weight" || n == "score.weight") {
      pieces.push_back(piece(n, 0, R, false));
    } else if (c.arch == Arch::GPT2) {
      const bool conv1d = s.shape.size() == 2 && n != "wte.weight" && n != "wpe.weight";
      pieces.push_back(piece(prefix + n, 0, R, conv1d));
    } else if (ends_with(n, "self_attn.qkv_proj.weight") || ends_with(n, "self_attn.qkv_proj.bias")) {
      const std::string base = prefix + n.substr(0, n.find("qkv_proj")), kind = ends_with(n, ".bias") ? ".bias" : ".weight";
      pieces.push_back(piece(base + "q_proj" + kind, 0, Q, false));
      pieces.push_back(piece(base + "k_proj" + kind, Q, KV, false));
      pieces.push_back(piece(base + "v_proj" + kind, Q + KV, KV, false));
    } else if (ends_with(n, "mlp.gate_up_proj.weight")) {
      const std::string base = prefix + n.substr(0, n.find("gate_up_proj"));
      pieces.push_back(piece(base + "gate_proj.weight", 0, F, false));
      pieces.push_back(piece(base + "up_proj.weight", F, F, false));
    } else {
      pieces.push_back(piece(prefix + n, 0, R, false));
    }
    layout.emplace_back(s, std::move(pieces));
  }
  return layout;
}

void load_hf_checkpoint(const std::string& dir, Transformer& model, HeadMatch heads) {
  const HfModelConfig hf = read_hf_config(dir);
  const std::string config_file = dir + "/config.json";
  const std::string diff = first_difference(hf.config, model.config());
  PPO_ASSERT(diff.empty(), config_file, ": the checkpoint is not this model's config: ", diff);
  PPO_ASSERT(heads == HeadMatch::TrunkOnly || hf.heads == model.spec().heads, config_file, ": ", hf.architecture,
             " has ", hf.heads == Heads::LM ? "an LM head" : "a scalar head", ", the model ",
             model.spec().has_lm() && model.spec().has_scalar() ? "both heads"
             : model.spec().has_lm()                            ? "an LM head"
                                                                : "a scalar head");
  const SafetensorsCheckpoint ckpt(dir);
  const Arch arch = model.config().arch;
  const std::string prefix = detect_prefix(ckpt, arch, dir);
  std::set<std::string> used;
  std::vector<float> embedding;  // to check a stored tied LM head against
  for (const auto& [spec, pieces] : hf_layout(model.spec(), prefix)) {
    // TrunkOnly keeps a head the checkpoint's class does not have; one it has must be in the files
    const bool lm = spec.name == "lm_head.weight", scalar = spec.name == "score.weight";
    const bool class_has_it = (lm && hf.heads == Heads::LM) || (scalar && hf.heads == Heads::Scalar);
    if (heads == HeadMatch::TrunkOnly && (lm || scalar) && !class_has_it) continue;
    std::vector<float> values(size_t(numel(spec)));
    for (const HfPiece& p : pieces) {
      PPO_ASSERT(ckpt.contains(p.hf_name), dir, ": missing tensor '", p.hf_name, "' (engine parameter '", spec.name,
                 "')");
      place_piece(values, row_width(spec), p, load_f32(ckpt, p.hf_name, p.hf_shape));
      used.insert(p.hf_name);
    }
    if (spec.name == "wte.weight" || spec.name == "embed_tokens.weight") embedding = values;
    model.set_parameter(spec.name, values);
  }
  for (const std::string& name : ckpt.names()) {
    if (used.count(name) || is_buffer(name)) continue;
    const std::string& file = ckpt.file_of(name).path();
    if (name == "lm_head.weight" && model.config().tied_embeddings) {
      // A tied head stored anyway (some savers write both): it must be the embedding.
      const std::vector<float> head = load_f32(ckpt, name, {model.config().vocab_size, model.config().d_model});
      PPO_ASSERT(heads == HeadMatch::TrunkOnly || head == embedding, file, ": tensor 'lm_head.weight' differs from the "
                 "token embedding, but the config ties them (tie_word_embeddings)");
      continue;
    }
    const bool head = name == "lm_head.weight" || name == "score.weight";
    PPO_ASSERT(heads == HeadMatch::TrunkOnly && head, file, ": unexpected tensor '", name, "' (no parameter of ",
               hf.architecture, " maps to it)");
  }
}

void write_hf_checkpoint(const std::string& dir, const ModelConfig& config, Heads heads,
                         const std::function<std::vector<float>(const std::string&)>& values, int64_t pad_token_id) {
  const nlohmann::json cfg = hf_config_json(config, heads, pad_token_id);
  ModelSpec spec;
  spec.config = config;
  spec.heads = heads;
  const std::string prefix = config.arch == Arch::GPT2 ? "transformer." : "model.";
  std::vector<std::vector<float>> storage;  // keeps the written values alive
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::string> names;
  for (const auto& [s, pieces] : hf_layout(spec, prefix)) {
    const std::vector<float> v = values(s.name);
    PPO_ASSERT(int64_t(v.size()) == numel(s), dir, ": parameter '", s.name, "' has ", v.size(), " values, needs ",
               numel(s));
    for (const HfPiece& p : pieces) {
      storage.push_back(hf_piece_values(v, row_width(s), p));
      shapes.push_back(p.hf_shape);
      names.push_back(p.hf_name);
    }
  }
  std::vector<NamedTensor> tensors;
  for (size_t i = 0; i < storage.size(); ++i) {
    const std::vector<int64_t>& sh = shapes[i];
    Tensor t = sh.size() == 1 ? Tensor(storage[i].data(), DType::F32, DeviceKind::CPU, {sh[0]}, names[i].c_str())
                              : Tensor(storage[i].data(), DType::F32, DeviceKind::CPU, {sh[0], sh[1]}, names[i].c_str());
    tensors.push_back({names[i], t});
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  PPO_ASSERT(!ec, dir, ": cannot create the directory: ", ec.message());
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  const std::string tmp = dir + "/config.json.tmp";
  {
    std::ofstream out(tmp);
    out << cfg.dump(2) << "\n";
    PPO_ASSERT(out.good(), tmp, ": write failed");
  }
  std::filesystem::rename(tmp, dir + "/config.json", ec);
  PPO_ASSERT(!ec, dir, "/config.json: rename from ", tmp, " failed: ", ec.message());
}

void export_hf_checkpoint(const std::string& dir, Transformer& model, Heads heads, int64_t pad_token_id) {
  PPO_ASSERT((heads != Heads::Scalar || model.spec().has_scalar()) && (heads != Heads::LM || model.spec().has_lm()),
             model.owner(), ": export: the model has no ", heads == Heads::LM ? "LM" : "scalar", " head");
  // every rank reads (the master copy may be sharded over the ranks); rank 0 writes
  const HostWeights weights = read_weights(model);
  if (!model.ranks().is_root()) return;
  write_hf_checkpoint(
      dir, model.config(), heads, [&](const std::string& name) { return weights.at(name); }, pad_token_id);
}

}  // namespace ppo::io
