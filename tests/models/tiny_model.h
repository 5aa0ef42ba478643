// Tiny models for the model tests: T=7, C=24, V=37, 2 layers; an arena planned by model_regions
// plus the scratch, on a CPU backend; parameters set to seeded random values (never the init's
// ones and zeros, so every bias and norm weight matters).
#pragma once
#include <memory>
#include "helpers.h"
#include "models/plan.h"
#include "models/transformer.h"

namespace ppo::test {

inline ModelConfig tiny_config(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.n_layer = 2;
  c.n_head = arch == Arch::GPT2 ? 3 : 4;  // HS 8 / 6
  c.n_kv_head = arch == Arch::GPT2 ? 3 : 2;  // llama: grouped-query, 2 query heads per kv head
  c.d_model = 24;
  c.d_ff = arch == Arch::GPT2 ? 40 : 20;
  c.vocab_size = 37;
  c.max_seq_len = 16;
  c.tied_embeddings = arch == Arch::GPT2;  // llama: a separate lm_head
  c.qkv_bias = true;
  return c;
}

struct TinyModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Arena> arena;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Pool> pool;  // inputs and outputs of the test

  TinyModel(const ModelSpec& spec, const RunShape& shape, Precision precision, uint64_t seed = 7) {
    backend = std::make_unique<Backend>(DeviceKind::CPU, precision);
    const std::vector<PlannedModel> models = {{"m", spec}};
    arena = std::make_unique<Arena>(ArenaPlan::make(ppo_regions(models, shape, precision)), DeviceKind::CPU,
                                    size_t(1) << 30);
    backend->set_scratch(arena->carver("run", "scratch"));
    model = std::make_unique<Transformer>(*backend, spec, shape, *arena, "m");
    pool = std::make_unique<Pool>(DeviceKind::CPU, size_t(4) << 20);
    randomize(seed);
  }

  void randomize(uint64_t seed) {
    for (size_t i = 0; i < model->parameter_names().size(); ++i) {
      const std::string& name = model->parameter_names()[i];
      const Tensor p = model->parameter(name);
      std::vector<float> v = randn(size_t(p.numel()), seed * 1000 + i, p.ndim == 2 ? 0.3f : 0.1f);
      if (p.ndim == 1 && name.find("bias") == std::string::npos)
        for (float& x : v) x += 1.0f;  // norm weights around 1
      model->set_parameter(name, v);
    }
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
  Tensor stat_out(std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool->take(backend->stat_dtype(), dims, name);
    backend->fill(t, std::nanf(""));
    return t;
  }
};

// A batch of 2 rows of T=7: row 0 left-padded by 2 (positions count from its first real token),
// row 1 full. Pads hold token 0, position 0, mask 0.
struct TinyBatch {
  static constexpr int64_t B = 2, T = 7;
  std::vector<int32_t> tokens, pos, mask, targets;
  explicit TinyBatch(uint64_t seed, int32_t vocab = 37) {
    tokens = randint(size_t(B * T), seed, 0, vocab);
    targets = randint(size_t(B * T), seed + 1, 0, vocab);
    pos = {0, 0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6};
    mask = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    tokens[0] = tokens[1] = 0;
  }
};

}  // namespace ppo::test
