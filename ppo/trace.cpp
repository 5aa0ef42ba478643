#include "ppo/trace.h"

#include <filesystem>
#include <fstream>
#include <list>
#include "engine/error.h"
#include "io/safetensors.h"

namespace ppo {

void write_trace(const std::string& dir, const PpoConfig& cfg, int32_t eos_token_id, const Experience& exp,
                 const UpdateTrace& trace) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  PPO_ASSERT(!ec, "trace directory '", dir, "' cannot be created: ", ec.message());
  const int64_t B = exp.B, P = exp.P, R = exp.R;
  // Owned host copies (std::list: stable addresses for the views and their names).
  std::list<std::vector<float>> floats;
  std::list<std::vector<int32_t>> ids;
  std::list<std::string> names;
  std::vector<io::NamedTensor> tensors;
  auto add_f = [&](const std::string& name, const std::vector<float>& v, std::initializer_list<int64_t> dims) {
    floats.push_back(v);
    names.push_back(name);
    Tensor t(floats.back().data(), DType::F32, DeviceKind::CPU, dims, names.back().c_str());
    PPO_ASSERT(size_t(t.numel()) == v.size(), "trace: ", name, " has ", v.size(), " values for ", t.shape_str());
    tensors.push_back({name, t});
  };
  auto add_i = [&](const std::string& name, const std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
    ids.push_back(v);
    names.push_back(name);
    Tensor t(ids.back().data(), DType::I32, DeviceKind::CPU, dims, names.back().c_str());
    PPO_ASSERT(size_t(t.numel()) == v.size(), "trace: ", name, " has ", v.size(), " values for ", t.shape_str());
    tensors.push_back({name, t});
  };
  std::vector<int32_t> prompt_ids, prompt_mask;  // columns [0,P) of the sequences
  for (int64_t b = 0; b < B; ++b) {
    const auto row = size_t(b * exp.T());
    prompt_ids.insert(prompt_ids.end(), exp.seq.tokens.begin() + row, exp.seq.tokens.begin() + row + P);
    prompt_mask.insert(prompt_mask.end(), exp.seq.mask.begin() + row, exp.seq.mask.begin() + row + P);
  }
  add_i("prompt_ids", prompt_ids, {B, P});
  add_i("prompt_mask", prompt_mask, {B, P});
  add_i("response_ids", exp.response_ids, {B, R});
  add_i("response_mask", exp.response_mask, {B, R});
  add_f("sampler_logp", exp.sampler_logp, {B, R});
  add_f("old_logp", exp.old_logp, {B, R});
  add_f("ref_logp", exp.ref_logp, {B, R});
  add_f("values", exp.values, {B, R});
  add_f("scores", exp.scores, {B});
  add_f("kl", exp.kl, {B, R});
  add_f("rewards", exp.rewards, {B, R});
  add_f("advantages", exp.advantages, {B, R});
  add_f("returns", exp.returns, {B, R});
  if (!trace.minibatch_indices.empty()) {
    const int64_t M = int64_t(trace.minibatch_indices.size());
    add_i("epoch0/minibatch_indices", trace.minibatch_indices, {M});
    add_f("epoch0/new_logp", trace.new_logp, {M, R});
    add_f("epoch0/ratio", trace.ratio, {M, R});
    add_f("epoch0/policy_loss", {float(trace.policy_loss)}, {1});
    add_f("epoch0/value_loss", {float(trace.value_loss)}, {1});
    for (size_t e = 1; e < trace.epoch_indices.size(); ++e) {
      const std::string p = "epoch" + std::to_string(e) + "/";
      add_i(p + "minibatch_indices", trace.epoch_indices[e], {M});
      add_f(p + "new_logp", trace.epoch_new_logp[e], {M, R});
      add_f(p + "ratio", trace.epoch_ratio[e], {M, R});
    }
  }
  io::write_safetensors(dir + "/trace.safetensors", tensors, {{"format", "ppo-engine trace"}});

  nlohmann::json j = cfg.to_json();
  j["eos_token_id"] = eos_token_id;
  j["kl_coef_used"] = exp.kl_coef;
  std::ofstream out(dir + "/config.json");
  out << j.dump(2) << "\n";
  PPO_ASSERT(out.good(), "trace: writing '", dir, "/config.json' failed");
}

}  // namespace ppo
