#include "ppo/single_model.h"

#include <algorithm>
#include "engine/device_memory.h"
#include "engine/error.h"
#include "models/plan.h"

namespace ppo {

namespace {

// The device buffers of the "batch" region: one training micro-batch, and the prompts and
// per-token buffers of one generation chunk.
std::vector<TensorSpec> batch_specs(const ModelSpec& spec, const RunShape& s, Precision p) {
  const DType stat = grad_dtype_of(p);
  const int64_t B = s.micro_batch, T = s.seq_len(), G = s.rollout_batch;
  std::vector<TensorSpec> t = {{"tokens", DType::I32, {B, T}}, {"pos", DType::I32, {B, T}},
                               {"mask", DType::I32, {B, T}},   {"targets", DType::I32, {B, T}},
                               {"grad", stat, {B, T}},         {"out", stat, {B, T}}};
  if (spec.generation == Generation::KVCache) {
    t.push_back({"gen_tokens", DType::I32, {G, s.prompt_len}});
    t.push_back({"gen_pos", DType::I32, {G, s.prompt_len}});
    t.push_back({"gen_mask", DType::I32, {G, T}});
    t.push_back({"next", DType::I32, {G}});
    t.push_back({"next_pos", DType::I32, {G}});
    t.push_back({"next_logp", stat, {G}});
  }
  return t;
}

Tensor rows_of(Tensor t, int64_t rows, int64_t cols) {
  return Tensor(t.data, t.dtype, t.device, {rows, cols}, t.name);
}

}  // namespace

DeviceKind resolve_device(DeviceChoice choice) {
  if (choice == DeviceChoice::CPU) return DeviceKind::CPU;
  const bool gpu = cuda_device_count() > 0;
  PPO_ASSERT(gpu || choice == DeviceChoice::Auto, "device 'cuda' was asked for, but ",
             cuda_compiled() ? "no GPU answers" : "this build has no CUDA backend");
  return gpu ? DeviceKind::CUDA : DeviceKind::CPU;
}

PackedRows pack_rows(const std::vector<std::vector<int32_t>>& prompts,
                     const std::vector<std::vector<int32_t>>& responses, int64_t P, int64_t R, int32_t pad) {
  PPO_ASSERT(prompts.size() == responses.size(), "pack_rows: ", prompts.size(), " prompts but ", responses.size(),
             " responses");
  PackedRows r;
  r.rows = int64_t(prompts.size());
  r.P = P;
  r.R = R;
  const int64_t T = P + R;
  r.tokens.assign(size_t(r.rows * T), pad);
  r.pos.assign(size_t(r.rows * T), 0);
  r.mask.assign(size_t(r.rows * T), 0);
  for (int64_t b = 0; b < r.rows; ++b) {
    const std::vector<int32_t>&prompt = prompts[size_t(b)], &response = responses[size_t(b)];
    const int64_t np = int64_t(prompt.size()), nr = int64_t(response.size());
    PPO_ASSERT(np >= 1 && np <= P, "row ", b, ": prompt of ", np, " tokens must hold 1 to ", P, " (prompt length)");
    PPO_ASSERT(nr <= R, "row ", b, ": response of ", nr, " tokens exceeds the response length ", R);
    r.prompt_len.push_back(np);
    r.response_len.push_back(nr);
    int32_t* tok = r.tokens.data() + b * T;
    int32_t* pos = r.pos.data() + b * T;
    int32_t* mask = r.mask.data() + b * T;
    for (int64_t i = 0; i < np + nr; ++i) {
      const int64_t col = P - np + i;  // left-padded prompt, then the response
      tok[col] = i < np ? prompt[size_t(i)] : response[size_t(i - np)];
      pos[col] = int32_t(i);
      mask[col] = 1;
    }
  }
  return r;
}

SingleModel::SingleModel(DeviceKind device, const ModelSpec& spec, const RunShape& shape, std::string owner)
    : shape_(shape), owner_(std::move(owner)) {
  const Precision p = device == DeviceKind::CUDA ? Precision::BF16 : Precision::F32;
  backend_ = std::make_unique<Backend>(device, p);
  std::vector<RegionSpec> regions = ppo_regions({{owner_, spec}}, shape, p);
  const std::vector<TensorSpec> buffers = batch_specs(spec, shape, p);
  regions.push_back({owner_, "batch", packed_bytes(buffers), Phase::Always});
  ArenaPlan plan = ArenaPlan::make(regions);
  arena_ = std::make_unique<Arena>(std::move(plan), device, device_capacity(device));
  backend_->set_scratch(arena_->carver("run", "scratch"));
  model_ = std::make_unique<Transformer>(*backend_, spec, shape, *arena_, owner_);
  Carver carver = arena_->carver(owner_, "batch");
  for (const TensorSpec& s : buffers) {
    auto it = buf_.emplace(s.name, Tensor{}).first;
    it->second = carver.take(s, it->first.c_str());
  }
}

SingleModel::Batch SingleModel::upload(const PackedRows& rows, int64_t begin, int64_t end, int32_t pad) {
  const int64_t n = end - begin, T = rows.T();
  PPO_ASSERT(begin >= 0 && n >= 1 && end <= rows.rows, owner_, ": upload of rows [", begin, ",", end, ") of ", rows.rows);
  PPO_ASSERT(n <= shape_.micro_batch && T <= shape_.seq_len(), owner_, ": a batch of (", n, ",", T,
             ") exceeds the planned micro-batch (", shape_.micro_batch, ",", shape_.seq_len(), ")");
  auto slice = [&](const std::vector<int32_t>& v) {
    return std::vector<int32_t>(v.begin() + begin * T, v.begin() + end * T);
  };
  std::vector<int32_t> targets(size_t(n * T), pad);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) targets[size_t(b * T + t)] = rows.tokens[size_t((begin + b) * T + t + 1)];
  Batch out{rows_of(buf_.at("tokens"), n, T), rows_of(buf_.at("pos"), n, T), rows_of(buf_.at("mask"), n, T),
            rows_of(buf_.at("targets"), n, T), rows_of(buf_.at("grad"), n, T), rows_of(buf_.at("out"), n, T)};
  backend_->from_host_ids(out.tokens, slice(rows.tokens));
  backend_->from_host_ids(out.pos, slice(rows.pos));
  backend_->from_host_ids(out.mask, slice(rows.mask));
  backend_->from_host_ids(out.targets, targets);
  return out;
}

std::vector<std::vector<int32_t>> SingleModel::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                        const SamplingSettings& sampling, int32_t pad) {
  PPO_ASSERT(model_->spec().generation == Generation::KVCache, owner_, ": generate needs a model planned with a KV cache");
  PPO_ASSERT(sampling.temperature > 0, owner_, ": sampling temperature must be positive");
  const int64_t G = shape_.rollout_batch, P = shape_.prompt_len, R = shape_.response_len, S = shape_.seq_len();
  Backend& be = *backend_;
  std::vector<std::vector<int32_t>> responses;
  for (int64_t first = 0, chunk = 0; first < int64_t(prompts.size()); first += G, ++chunk) {
    const int64_t n = std::min<int64_t>(G, int64_t(prompts.size()) - first);
    const std::vector<std::vector<int32_t>> part(prompts.begin() + first, prompts.begin() + first + n);
    const PackedRows rows = pack_rows(part, std::vector<std::vector<int32_t>>(size_t(n)), P, R, pad);
    // prompt columns [0,P) of the packed rows; the (n,S) mask grows one column per new token
    std::vector<int32_t> tok, pos, mask = rows.mask;
    for (int64_t b = 0; b < n; ++b) {
      tok.insert(tok.end(), rows.tokens.begin() + b * S, rows.tokens.begin() + b * S + P);
      pos.insert(pos.end(), rows.pos.begin() + b * S, rows.pos.begin() + b * S + P);
    }
    Tensor gen_tok = rows_of(buf_.at("gen_tokens"), n, P), gen_pos = rows_of(buf_.at("gen_pos"), n, P);
    Tensor gen_mask = rows_of(buf_.at("gen_mask"), n, S);
    Tensor next = buf_.at("next").slice0(0, n), next_pos = buf_.at("next_pos").slice0(0, n);
    Tensor next_logp = buf_.at("next_logp").slice0(0, n);
    be.from_host_ids(gen_tok, tok);
    be.from_host_ids(gen_pos, pos);
    be.from_host_ids(gen_mask, mask);
    Tensor logits = model_->prefill(gen_tok, gen_pos, gen_mask);
    std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
    std::vector<bool> done(static_cast<size_t>(n), false);
    for (int64_t t = 0; t < R; ++t) {
      const uint64_t stream = (sampling.stream + uint64_t(chunk * R + t)) * uint64_t(G);
      be.sample_tokens(next, next_logp, logits, 1.0f / sampling.temperature, int(sampling.top_k), sampling.top_p,
                       sampling.seed, stream);
      const std::vector<int32_t> ids = be.to_host_ids(next);
      bool all_done = true;
      for (int64_t b = 0; b < n; ++b) {
        if (!done[size_t(b)]) out[size_t(b)].push_back(ids[size_t(b)]);
        done[size_t(b)] = done[size_t(b)] || ids[size_t(b)] == sampling.eos;
        all_done = all_done && done[size_t(b)];
      }
      if (all_done || t + 1 == R) break;
      std::vector<int32_t> npos(static_cast<size_t>(n));
      for (int64_t b = 0; b < n; ++b) {
        mask[size_t(b * S + P + t)] = 1;
        npos[size_t(b)] = int32_t(rows.prompt_len[size_t(b)] + t);
      }
      be.from_host_ids(gen_mask, mask);
      be.from_host_ids(next_pos, npos);
      logits = model_->decode(next, next_pos, gen_mask, P + t + 1);
    }
    for (auto& r : out) responses.push_back(std::move(r));
  }
  return responses;
}

}  // namespace ppo
