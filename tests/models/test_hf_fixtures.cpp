// The engine against Hugging Face transformers: the fixture checkpoints of tools/oracle/
// make_model_fixtures.py (tiny GPT-2, Llama with GQA and an untied head, Qwen2 with qkv biases and a
// tied head, a Qwen2 reward model) load through io/hf_checkpoint and must give transformers'
// logits / values / pooled reward, loss and every parameter gradient (mapped back to HF names and
// layouts) on the fixture's left-padded batch; the same on CUDA against the CPU; export round trips.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include "../io/temp_files.h"
#include "helpers.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "models/plan.h"

using namespace ppo;
using namespace ppo::test;

namespace {

std::string fixture_dir(const std::string& name) { return std::string(PPO_SOURCE_DIR) + "/tests/data/models/" + name; }

std::vector<float> f32_of(const io::SafetensorsFile& f, const std::string& name) {
  io::HostTensor t = f.load(name, DType::F32);
  const float* p = reinterpret_cast<const float*>(t.bytes.data());
  return std::vector<float>(p, p + t.numel());
}
std::vector<int32_t> ids_of(const io::SafetensorsFile& f, const std::string& name) {
  io::HostTensor t = f.load(name, DType::I32);
  const int32_t* p = reinterpret_cast<const int32_t*>(t.bytes.data());
  return std::vector<int32_t>(p, p + t.numel());
}

// A trained model of a fixture's config on one device, loaded from the fixture checkpoint.
struct LoadedModel {
  io::HfModelConfig hf;
  ModelSpec spec;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Arena> arena;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Pool> pool;

  // heads: the file's class's unless given (then loaded with `match`).
  LoadedModel(const std::string& dir, DeviceKind device, Precision precision, std::optional<Heads> heads = std::nullopt,
              io::HeadMatch match = io::HeadMatch::Exact) {
    hf = io::read_hf_config(dir);
    spec.config = hf.config;
    spec.heads = heads ? *heads : hf.heads;
    spec.training = Training::Trained;
    const RunShape shape{/*rollout_batch=*/2, /*prompt_len=*/5, /*response_len=*/4, /*micro_batch=*/2};  // T = 9
    backend = std::make_unique<Backend>(device, precision);
    const std::vector<PlannedModel> models = {{"m", spec}};
    arena = std::make_unique<Arena>(ArenaPlan::make(ppo_regions(models, shape, precision)), device, size_t(1) << 30);
    backend->set_scratch(arena->carver("run", "scratch"));
    model = std::make_unique<Transformer>(*backend, spec, shape, *arena, "m");
    pool = std::make_unique<Pool>(device, size_t(4) << 20);
    io::load_hf_checkpoint(dir, *model, match);
  }
  Tensor ids(const std::vector<int32_t>& v, std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool->take(DType::I32, dims, name);
    backend->from_host_ids(t, v);
    return t;
  }
  Tensor stat(const std::vector<float>& v, std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool->take(backend->stat_dtype(), dims, name);
    backend->from_host(t, v);
    return t;
  }
  Tensor out(DType dtype, std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool->take(dtype, dims, name);
    backend->fill(t, std::nanf(""));
    return t;
  }
  // Every parameter gradient in HF names and layouts (the fixture's "grad." + name).
  std::map<std::string, std::vector<float>> hf_gradients() {
    const std::string prefix = spec.config.arch == Arch::GPT2 ? "transformer." : "model.";
    std::map<std::string, std::vector<float>> g;
    for (const auto& [s, pieces] : io::hf_layout(spec, prefix)) {
      const std::vector<float> v = backend->to_host(model->gradient(s.name));
      for (const io::HfPiece& p : pieces) g[p.hf_name] = io::hf_piece_values(v, s.shape.size() == 2 ? s.shape[1] : 1, p);
    }
    return g;
  }
};

// What one run of the fixture's batch gives: per-position outputs (logits (B,T,V) or values
// (B,T)), the pooled reward (B) of a reward model, the loss and the HF-named gradients.
struct Result {
  std::vector<float> outputs, reward;
  double loss = 0;
  std::map<std::string, std::vector<float>> grads;
};

// Forward, the fixture's loss and its backward:
//   LM: loss = -mean over valid targets of log p(ids[t+1] | ids[<=t]); valid = mask[t] & mask[t+1]
//   reward: reward[b] = value at the last real token; loss = sum_b reward[b] * [1, -0.5][b]
Result run_fixture(LoadedModel& lm, const io::SafetensorsFile& fx) {
  const std::vector<int32_t> ids = ids_of(fx, "input_ids"), mask = ids_of(fx, "attention_mask"),
                             pos = ids_of(fx, "position_ids");
  const int64_t B = fx.entry("input_ids").shape[0], T = fx.entry("input_ids").shape[1];
  const ModelConfig& c = lm.spec.config;
  Transformer& m = *lm.model;
  Backend& be = *lm.backend;
  Tensor tokens = lm.ids(ids, {B, T}, "tokens"), positions = lm.ids(pos, {B, T}, "pos"), mk = lm.ids(mask, {B, T}, "mask");
  Result r;
  m.zero_grad();
  m.forward(tokens, positions, mk);
  if (lm.spec.has_lm()) {
    // logits = hidden @ W_lm^T (W_lm = the embedding when tied)
    Tensor logits = lm.out(be.act_dtype(), {B * T, c.vocab_size}, "logits");
    be.matmul_forward(logits, m.hidden().reshape({B * T, c.d_model}),
                      m.parameter(c.tied_embeddings ? (c.arch == Arch::GPT2 ? "wte.weight" : "embed_tokens.weight")
                                                    : "lm_head.weight"),
                      Tensor{});
    r.outputs = be.to_host(logits);
    std::vector<int32_t> targets(size_t(B * T), 0);
    std::vector<float> valid(size_t(B * T), 0.0f);
    double count = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t) {
        targets[size_t(b * T + t)] = ids[size_t(b * T + t + 1)];
        valid[size_t(b * T + t)] = float(mask[size_t(b * T + t)] && mask[size_t(b * T + t + 1)]);
        count += valid[size_t(b * T + t)];
      }
    Tensor logp = lm.out(be.stat_dtype(), {B, T}, "logp");
    m.lm_logprobs(lm.ids(targets, {B, T}, "targets"), 1.0f, logp, Tensor{});
    const std::vector<float> lp = be.to_host(logp);
    std::vector<float> g(valid.size());
    for (size_t i = 0; i < lp.size(); ++i) {
      r.loss -= valid[i] * double(lp[i]) / count;
      g[i] = float(-valid[i] / count);
    }
    m.lm_logprobs_backward(lm.stat(g, {B, T}, "g_logp"), Tensor{}, 1.0f);
  } else {
    Tensor values = lm.out(be.stat_dtype(), {B, T}, "values");
    m.scalar(values);
    r.outputs = be.to_host(values);
    const float weight[2] = {1.0f, -0.5f};
    std::vector<float> g(size_t(B * T), 0.0f);
    for (int64_t b = 0; b < B; ++b) {
      int64_t last = T - 1;
      while (last > 0 && !mask[size_t(b * T + last)]) --last;
      r.reward.push_back(r.outputs[size_t(b * T + last)]);
      r.loss += weight[b] * double(r.reward.back());
      g[size_t(b * T + last)] = weight[b];
    }
    m.scalar_backward(lm.stat(g, {B, T}, "g_values"));
  }
  m.backward();
  r.grads = lm.hf_gradients();
  return r;
}

// The entries of a per-position output (B,T,W) at real positions (padding positions are
// outputs nobody reads; HF fills them from an all-masked softmax, the engine with zeros).
std::vector<float> real_positions(const std::vector<float>& v, const std::vector<int32_t>& mask) {
  const size_t W = v.size() / mask.size();
  std::vector<float> out;
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) out.insert(out.end(), v.begin() + long(i * W), v.begin() + long((i + 1) * W));
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}
double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, std::fabs(double(x)));
  return m;
}

// Tolerances. The fixture is PyTorch float32: each output carries its own rounding, relative
// ~1e-6 per op, grown through 2 layers and a softmax to a few 1e-6 relative of the largest
// entries (logits here reach ~10). The engine's f32 run differs from it by the same order (other
// summation orders, OpenBLAS); its f64 run by the fixture's rounding alone. A wrong layout, a
// missing bias, a transposed Conv1D or a rotate-half mismatch gives errors of O(1).
// Measured: max |logit - HF| 8e-6, max |grad - HF| 5e-6 of the tensor's largest gradient.
//   outputs: atol 5e-5 + rtol 1e-5 (logits ~O(10), values ~O(1))
//   loss:    rtol 1e-5
//   grads:   per tensor, atol = 3e-5 * max|grad| + 1e-7, rtol 1e-4 (gradients sum many products of
//            ~1e-6-relative terms; cancellation makes small entries relatively noisier)
void compare_with_fixture(const std::string& name, Precision precision) {
  const std::string dir = fixture_dir(name);
  io::SafetensorsFile fx(dir + "/fixture.safetensors");
  LoadedModel lm(dir, DeviceKind::CPU, precision);
  const Result r = run_fixture(lm, fx);
  const std::vector<int32_t> mask = ids_of(fx, "attention_mask");
  const char* prec = precision == Precision::F64 ? "f64" : "f32";
  const std::vector<float> want = real_positions(f32_of(fx, lm.spec.has_lm() ? "logits" : "values"), mask);
  const std::vector<float> got = real_positions(r.outputs, mask);
  check_close(got, want, 5e-5, 1e-5, name + " " + prec + (lm.spec.has_lm() ? " logits" : " values"));
  double max_out = max_abs_diff(got, want), max_grad_rel = 0;
  if (!r.reward.empty()) {
    check_close(r.reward, f32_of(fx, "reward"), 5e-5, 1e-5, name + " pooled reward");
    max_out = std::max(max_out, max_abs_diff(r.reward, f32_of(fx, "reward")));
  }
  const double want_loss = f32_of(fx, "loss")[0];
  CHECK_MESSAGE(std::fabs(r.loss - want_loss) <= 1e-5 * std::fabs(want_loss), name, " loss ", r.loss, " want ", want_loss);
  size_t fixture_grads = 0;
  for (const auto& [entry, e] : fx.entries()) fixture_grads += entry.rfind("grad.", 0) == 0;
  CHECK_MESSAGE(fixture_grads == r.grads.size(), name, ": the fixture has ", fixture_grads, " gradients, the engine ",
                r.grads.size());
  for (const auto& grad : r.grads) {  // no structured binding: doctest's messages capture it in lambdas
    const std::string& hf_name = grad.first;
    const std::vector<float>& g = grad.second;
    REQUIRE_MESSAGE(fx.contains("grad." + hf_name), name, ": the fixture has no grad.", hf_name);
    const std::vector<float> w = f32_of(fx, "grad." + hf_name);
    const double scale = max_abs(w);
    CHECK_MESSAGE(scale > 0, name, ": grad.", hf_name, " is all zeros (the test could not fail)");
    check_close(g, w, 3e-5 * scale + 1e-7, 1e-4, name + " " + prec + " grad." + hf_name);
    max_grad_rel = std::max(max_grad_rel, max_abs_diff(g, w) / scale);
  }
  std::printf("%-12s %s: max |output - HF| %.3g, |loss - HF| %.3g, max over tensors of max|grad - HF| / max|grad HF| %.3g\n",
              name.c_str(), prec, max_out, std::fabs(r.loss - want_loss), max_grad_rel);
}

const char* const kFixtures[] = {"gpt2", "llama", "qwen2", "qwen2_reward"};

}  // namespace

TEST_CASE("hf config: the fixture configs map to the engine's") {
  const io::HfModelConfig g = io::read_hf_config(fixture_dir("gpt2"));
  CHECK(g.config.arch == Arch::GPT2);
  CHECK(g.heads == Heads::LM);
  CHECK(g.config.d_ff == 4 * 32);  // n_inner null
  CHECK(g.config.max_seq_len == 64);
  const io::HfModelConfig l = io::read_hf_config(fixture_dir("llama"));
  CHECK(l.config.arch == Arch::Llama);
  CHECK(l.config.n_kv_head == 2);
  CHECK(!l.config.tied_embeddings);
  CHECK(!l.config.qkv_bias);
  CHECK(l.config.rope_theta == 10000.0f);
  const io::HfModelConfig q = io::read_hf_config(fixture_dir("qwen2"));
  CHECK(q.config.qkv_bias);
  CHECK(q.config.tied_embeddings);
  const io::HfModelConfig r = io::read_hf_config(fixture_dir("qwen2_reward"));
  CHECK(r.heads == Heads::Scalar);
  // the reverse parses back to the same config
  for (const io::HfModelConfig& h : {g, l, q, r}) {
    const io::HfModelConfig back = io::parse_hf_config(io::hf_config_json(h.config, h.heads), "round trip");
    CHECK(back.config.to_json() == h.config.to_json());
    CHECK(back.heads == h.heads);
    CHECK(back.architecture == h.architecture);
  }
}

TEST_CASE("hf config: unsupported architectures and options name the file and field") {
  const nlohmann::json llama = nlohmann::json::parse(std::ifstream(fixture_dir("llama") + "/config.json"));
  auto error = [](nlohmann::json j) { return error_of([&] { io::parse_hf_config(j, "cfg.json"); }); };
  auto with = [&](const char* field, nlohmann::json value) {
    nlohmann::json j = llama;
    j[field] = value;
    return error(j);
  };
  CHECK(contains(with("architectures", {"MistralForCausalLM"}), "cfg.json: field 'architectures'"));
  CHECK(contains(with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}), "field 'rope_scaling'"));
  CHECK(contains(with("rope_parameters", {{"rope_type", "yarn"}, {"rope_theta", 1e6}}), "field 'rope_parameters'"));
  CHECK(contains(with("hidden_act", "gelu"), "cfg.json: field 'hidden_act'"));
  CHECK(contains(with("attention_bias", true), "field 'attention_bias'"));
  CHECK(contains(with("head_dim", 16), "field 'head_dim'"));
  nlohmann::json missing = llama;
  missing.erase("hidden_size");
  CHECK(contains(error(missing), "cfg.json: missing field 'hidden_size'"));

  nlohmann::json qwen = nlohmann::json::parse(std::ifstream(fixture_dir("qwen2") + "/config.json"));
  qwen["use_sliding_window"] = true;
  CHECK(contains(error(qwen), "field 'use_sliding_window'"));
  qwen["use_sliding_window"] = false;
  qwen["layer_types"] = {"sliding_attention", "full_attention"};
  CHECK(contains(error(qwen), "field 'layer_types'"));

  nlohmann::json reward = nlohmann::json::parse(std::ifstream(fixture_dir("qwen2_reward") + "/config.json"));
  reward["id2label"] = {{"0", "A"}, {"1", "B"}};
  CHECK(contains(error(reward), "num_labels = 2"));
  reward.erase("id2label");
  CHECK(contains(error(reward), "num_labels = 2"));  // transformers' default
  reward["num_labels"] = 1;
  CHECK(contains(error(reward), "(no error)"));

  nlohmann::json gpt2 = nlohmann::json::parse(std::ifstream(fixture_dir("gpt2") + "/config.json"));
  gpt2["activation_function"] = "relu";
  CHECK(contains(error(gpt2), "field 'activation_function'"));
  gpt2["activation_function"] = "gelu_new";
  gpt2["scale_attn_by_inverse_layer_idx"] = true;
  CHECK(contains(error(gpt2), "field 'scale_attn_by_inverse_layer_idx'"));
  CHECK(contains(error_of([] { io::hf_config_json(io::read_hf_config(fixture_dir("gpt2")).config, Heads::LMAndScalar); }),
                 "both an LM and a scalar head"));
}

TEST_CASE("hf fixtures: logits, values, reward, loss and every gradient match transformers (cpu f32)") {
  for (const char* name : kFixtures) compare_with_fixture(name, Precision::F32);
}

TEST_CASE("hf fixtures: the same in f64") {
  for (const char* name : kFixtures) compare_with_fixture(name, Precision::F64);
}

TEST_CASE("hf fixtures: cuda (bf16) against the cpu (f32), forward and backward") {
  if (!cuda_backend_or_skip()) return;
  for (const char* name : kFixtures) {
    const std::string dir = fixture_dir(name);
    io::SafetensorsFile fx(dir + "/fixture.safetensors");
    LoadedModel cpu(dir, DeviceKind::CPU, Precision::F32), gpu(dir, DeviceKind::CUDA, Precision::BF16);
    const Result want = run_fixture(cpu, fx), got = run_fixture(gpu, fx);
    const std::vector<int32_t> mask = ids_of(fx, "attention_mask");
    // bf16 weights and activations (8-bit mantissa) through 2 layers. Measured on the emulated device:
    // outputs 0.6e-2 (gpt2) to 2.8e-2 (qwen2_reward); per-tensor gradients up to 0.10 (small ones such
    // as a k_proj.bias), all gradients together up to 3e-2. Rounding only the weights to bf16 on the
    // CPU already gives 1.3e-2 and 0.07. A wrong kernel gives O(1).
    const double out_err = rel_l2(real_positions(got.outputs, mask), real_positions(want.outputs, mask));
    CHECK_MESSAGE(out_err < 4e-2, std::string(name), " outputs: rel_l2 ", out_err);
    std::vector<float> all_got, all_want;
    for (const auto& grad : want.grads) {  // no structured binding: doctest's messages capture it in lambdas
      const std::string& hf_name = grad.first;
      const std::vector<float>& g = grad.second;
      const std::vector<float>& gg = got.grads.at(hf_name);
      const double e = rel_l2(gg, g);
      CHECK_MESSAGE(e < 0.15, std::string(name), " grad ", hf_name, ": rel_l2 ", e);
      all_got.insert(all_got.end(), gg.begin(), gg.end());
      all_want.insert(all_want.end(), g.begin(), g.end());
    }
    const double all_err = rel_l2(all_got, all_want);
    CHECK_MESSAGE(all_err < 5e-2, std::string(name), " all gradients: rel_l2 ", all_err);
    MESSAGE(std::string(name), ": outputs rel_l2 ", out_err, ", all gradients ", all_err);
  }
}

TEST_CASE("hf export: load -> export -> load gives identical parameters and config") {
  for (const char* name : kFixtures) {
    LoadedModel a(fixture_dir(name), DeviceKind::CPU, Precision::F32);
    const std::string out = temp_dir() + "/export";
    io::export_hf_checkpoint(out, *a.model, a.spec.heads, 0);
    const io::HfModelConfig back = io::read_hf_config(out);
    CHECK(back.config.to_json() == a.spec.config.to_json());
    CHECK(back.architecture == a.hf.architecture);
    LoadedModel b(out, DeviceKind::CPU, Precision::F32);
    for (const std::string& p : a.model->parameter_names())
      CHECK_MESSAGE(a.model->get_parameter(p) == b.model->get_parameter(p), name, ": parameter ", p, " changed");
  }
}

TEST_CASE("hf export: transformers loads the exported directory and gives the same logits") {
  if (std::system("python3 -c 'import torch, transformers, safetensors' >/dev/null 2>&1") != 0) {
    std::printf("SKIP transformers export check: python3 with torch + transformers is not importable\n");
    return;
  }
  // One python start for all fixtures: export each, then run them all in transformers.
  const std::string out = temp_dir();
  std::string cmd = "python3 " + std::string(PPO_SOURCE_DIR) + "/tools/oracle/hf_forward.py";
  for (const char* name : kFixtures) {
    LoadedModel a(fixture_dir(name), DeviceKind::CPU, Precision::F32);
    io::export_hf_checkpoint(out + "/" + name, *a.model, a.spec.heads, 0);
    cmd += " " + out + "/" + name + " " + fixture_dir(name) + "/fixture.safetensors " + out + "/" + name + ".safetensors";
  }
  cmd += " >/dev/null 2>&1";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: ", cmd);
  for (const char* name : kFixtures) {
    LoadedModel a(fixture_dir(name), DeviceKind::CPU, Precision::F32);
    io::SafetensorsFile fx(fixture_dir(name) + "/fixture.safetensors"), hf(out + "/" + name + ".safetensors");
    const Result r = run_fixture(a, fx);
    const std::vector<float> logits = f32_of(hf, "logits");
    const std::vector<int32_t> mask = ids_of(fx, "attention_mask");
    // Same tolerance as the fixture comparison: transformers in f32 against the engine in f32.
    if (a.spec.has_lm())
      check_close(real_positions(r.outputs, mask), real_positions(logits, mask), 5e-5, 1e-5,
                  std::string(name) + " exported logits");
    else
      check_close(r.reward, logits, 5e-5, 1e-5, std::string(name) + " exported pooled reward");
  }
}

namespace {

// A copy of a fixture checkpoint with its tensors edited by `edit` (name -> tensor), written as
// one file or as two shards with an index.
std::string edited_checkpoint(const std::string& name, const std::function<void(std::map<std::string, io::HostTensor>&)>& edit,
                              bool sharded = false) {
  const std::string src = fixture_dir(name), dir = temp_dir();
  std::filesystem::copy_file(src + "/config.json", dir + "/config.json");
  io::SafetensorsFile f(src + "/model.safetensors");
  std::map<std::string, io::HostTensor> tensors;
  for (const auto& [n, e] : f.entries()) tensors[n] = f.load(n);
  edit(tensors);
  std::vector<io::NamedTensor> shard[2];
  nlohmann::json weight_map;
  size_t i = 0;
  for (auto& [n, t] : tensors) {
    const int s = sharded ? int(i++ % 2) : 0;
    shard[s].push_back({n, t.view()});
    weight_map[n] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  if (!sharded) {
    io::write_safetensors(dir + "/model.safetensors", shard[0]);
  } else {
    for (int s = 0; s < 2; ++s) io::write_safetensors(dir + "/model-0000" + std::to_string(s + 1) + "-of-00002.safetensors", shard[s]);
    write_text(dir + "/model.safetensors.index.json", nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump());
  }
  return dir;
}

std::string load_error(const std::string& dir, const std::string& fixture) {
  LoadedModel lm(fixture_dir(fixture), DeviceKind::CPU, Precision::F32);
  return error_of([&] { io::load_hf_checkpoint(dir, *lm.model); });
}

}  // namespace

TEST_CASE("hf load: sharded checkpoints, non-parameter buffers, stored tied heads") {
  // Two shards with an index give the same parameters as the single file.
  LoadedModel one(fixture_dir("qwen2"), DeviceKind::CPU, Precision::F32);
  const std::string sharded = edited_checkpoint("qwen2", [](auto&) {}, true);
  LoadedModel two(sharded, DeviceKind::CPU, Precision::F32);
  for (const std::string& p : one.model->parameter_names())
    CHECK_MESSAGE(one.model->get_parameter(p) == two.model->get_parameter(p), "sharded: parameter ", p);
  // GPT-2 checkpoints from the hub carry attn.bias buffers and may store the tied lm_head.
  const std::string gpt2 = edited_checkpoint("gpt2", [](std::map<std::string, io::HostTensor>& t) {
    t["transformer.h.0.attn.bias"] = t["transformer.h.0.ln_1.bias"];
    t["lm_head.weight"] = t["transformer.wte.weight"];
  });
  CHECK(load_error(gpt2, "gpt2") == "(no error)");
}

TEST_CASE("hf load: missing, extra, misshapen and mistyped tensors and a config mismatch name the file and tensor") {
  const std::string missing = edited_checkpoint("llama", [](auto& t) { t.erase("model.layers.1.self_attn.k_proj.weight"); });
  CHECK(contains(load_error(missing, "llama"), "missing tensor 'model.layers.1.self_attn.k_proj.weight'"));

  const std::string extra = edited_checkpoint("llama", [](auto& t) { t["model.layers.0.mlp.extra.weight"] = t["model.norm.weight"]; });
  const std::string e = load_error(extra, "llama");
  CHECK(contains(e, "model.safetensors: unexpected tensor 'model.layers.0.mlp.extra.weight'"));

  const std::string shape = edited_checkpoint("gpt2", [](auto& t) {
    io::HostTensor& w = t["transformer.h.1.mlp.c_fc.weight"];  // stored (in,out) = (32,128): give it (128,32)
    w.shape = {128, 32};
  });
  CHECK(contains(load_error(shape, "gpt2"), "model.safetensors: tensor 'transformer.h.1.mlp.c_fc.weight' has shape [128,32]"));

  const std::string dtype = edited_checkpoint("qwen2", [](auto& t) {
    io::HostTensor& b = t["model.layers.0.self_attn.q_proj.bias"];
    b.dtype = DType::I32;
  });
  CHECK(contains(load_error(dtype, "qwen2"), "tensor 'model.layers.0.self_attn.q_proj.bias' has dtype I32"));

  const std::string untied = edited_checkpoint("qwen2", [](auto& t) {
    t["lm_head.weight"] = t["model.embed_tokens.weight"];
    reinterpret_cast<float*>(t["lm_head.weight"].bytes.data())[5] += 1.0f;
  });
  CHECK(contains(load_error(untied, "qwen2"), "'lm_head.weight' differs from the token embedding"));

  // The llama checkpoint into the qwen2 model: the config differs (qkv_bias).
  CHECK(contains(load_error(fixture_dir("llama"), "qwen2"), "config.json: the checkpoint is not this model's config"));
  // A causal LM into the reward model's trunk: an error unless only the trunk is asked for.
  LoadedModel reward(fixture_dir("qwen2_reward"), DeviceKind::CPU, Precision::F32);
  CHECK(contains(error_of([&] { io::load_hf_checkpoint(fixture_dir("qwen2"), *reward.model); }), "has an LM head, the model a scalar head"));
  const std::vector<float> score = reward.model->get_parameter("score.weight");
  io::load_hf_checkpoint(fixture_dir("qwen2"), *reward.model, io::HeadMatch::TrunkOnly);
  CHECK(reward.model->get_parameter("score.weight") == score);  // kept: the file has none
  // The untied llama LM into a model with both heads (a value head on the policy trunk): the
  // scalar head is the model's own, but the LM head must come from the files.
  LoadedModel both(fixture_dir("llama"), DeviceKind::CPU, Precision::F32, Heads::LMAndScalar, io::HeadMatch::TrunkOnly);
  CHECK(both.model->spec().has_scalar());
  const std::string headless = edited_checkpoint("llama", [](auto& t) { t.erase("lm_head.weight"); });
  CHECK(contains(error_of([&] {
                   LoadedModel m(headless, DeviceKind::CPU, Precision::F32, Heads::LMAndScalar, io::HeadMatch::TrunkOnly);
                 }),
                 "missing tensor 'lm_head.weight'"));
}
