// Training-state checkpoints: bit-exact round trips of weights and AdamW moments (f32 and f64), the
// state JSON, a simulated crash (leftover temporary directory, orphan step directory) that still
// loads the previous checkpoint, errors naming the file for missing or corrupt pieces, and export
// of a checkpoint's model as a Hugging Face directory.
#include <algorithm>
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include "../models/tiny_model.h"
#include "io/checkpoint.h"
#include "io/hf_checkpoint.h"
#include "temp_files.h"

using namespace ppo;
using namespace ppo::test;
namespace fs = std::filesystem;

namespace {

const RunShape kShape{2, 4, 3, 2};  // T = 7

ModelSpec trained(Arch arch, Heads heads) {
  ModelSpec s;
  s.config = tiny_config(arch);
  s.heads = heads;
  s.training = Training::Trained;
  return s;
}

// One training step, so that the AdamW moments are not zero.
void train_step(TinyModel& tm) {
  Transformer& m = *tm.model;
  const TinyBatch batch(5);
  const int64_t B = TinyBatch::B, T = TinyBatch::T;
  m.zero_grad();
  m.forward(tm.ids(batch.tokens, {B, T}, "tokens"), tm.ids(batch.pos, {B, T}, "pos"), tm.ids(batch.mask, {B, T}, "mask"));
  if (m.spec().has_lm()) {
    m.lm_logprobs(tm.ids(batch.targets, {B, T}, "targets"), 1.0f, tm.stat_out({B, T}, "logp"), Tensor{});
    m.lm_logprobs_backward(tm.stat(randn(size_t(B * T), 3), {B, T}, "g"), Tensor{}, 1.0f);
  }
  if (m.spec().has_scalar()) {
    m.scalar(tm.stat_out({B, T}, "values"));
    m.scalar_backward(tm.stat(randn(size_t(B * T), 4), {B, T}, "gv"));
  }
  m.backward();
  AdamWParams hp;
  hp.lr = 1e-2f;
  hp.weight_decay = 0.1f;
  m.adamw_step(hp, 1.0f, 9);
}

// Every tensor a checkpoint holds, as raw bytes (CPU models).
std::vector<std::vector<uint8_t>> state_bytes(const Transformer& m) {
  std::vector<std::vector<uint8_t>> out;
  for (const std::string& n : m.parameter_names())
    for (const Tensor& t : {m.parameter(n), m.adam_m(n), m.adam_v(n)}) {
      const uint8_t* p = static_cast<const uint8_t*>(t.data);
      out.emplace_back(p, p + t.bytes());
    }
  return out;
}

const nlohmann::json kState = {{"step", 3}, {"data_position", 17}, {"rng", {{"seed", 1234}, {"offset", 99}}},
                               {"kl_coef", 0.05}};

}  // namespace

TEST_CASE("checkpoint: weights, AdamW moments and state round trip bit-exactly (f32 and f64)") {
  for (Precision p : {Precision::F32, Precision::F64})
    for (const ModelSpec& spec : {trained(Arch::Llama, Heads::LMAndScalar), trained(Arch::GPT2, Heads::Scalar)}) {
      TinyModel model(spec, kShape, p, 1);
      train_step(model);
      train_step(model);
      // the moments are really there (the test could not fail on zeros)
      const std::vector<float> v0 = model.backend->to_host(model.model->adam_v(model.model->parameter_names()[0]));
      REQUIRE(std::any_of(v0.begin(), v0.end(), [](float x) { return x > 0; }));
      const std::string run = temp_dir();
      io::save_checkpoint(run, 3, {{"m", model.model.get()}}, kState);
      CHECK(io::checkpoint_step_dir(run) == run + "/step_3");

      TinyModel fresh(spec, kShape, p, 77);
      REQUIRE(state_bytes(*fresh.model) != state_bytes(*model.model));
      const nlohmann::json back = io::load_checkpoint(run, {{"m", fresh.model.get()}});
      CHECK(back == kState);
      CHECK(state_bytes(*fresh.model) == state_bytes(*model.model));
    }
}

TEST_CASE("checkpoint: a kill during the next save leaves the previous checkpoint loadable") {
  TinyModel m(trained(Arch::GPT2, Heads::LM), kShape, Precision::F32, 1);
  train_step(m);
  const std::string run = temp_dir();
  io::save_checkpoint(run, 1, {{"m", m.model.get()}}, {{"step", 1}});
  const auto saved = state_bytes(*m.model);
  train_step(m);  // the model moves on

  // Killed while writing step 2: a partial temporary directory with a truncated file.
  fs::create_directory(run + "/.tmp_step_2");
  write_text(run + "/.tmp_step_2/m.safetensors", "\x10\x00\x00");
  TinyModel r1(trained(Arch::GPT2, Heads::LM), kShape, Precision::F32, 5);
  CHECK(io::load_checkpoint(run, {{"m", r1.model.get()}}) == nlohmann::json{{"step", 1}});
  CHECK(state_bytes(*r1.model) == saved);

  // Killed after the rename but before `latest` moved: step_2 is an orphan, latest still step_1.
  fs::rename(run + "/.tmp_step_2", run + "/step_2");
  write_text(run + "/step_2/state.json", "{\"step\": 2}");
  TinyModel r2(trained(Arch::GPT2, Heads::LM), kShape, Precision::F32, 6);
  CHECK(io::load_checkpoint(run, {{"m", r2.model.get()}}) == nlohmann::json{{"step", 1}});

  // The resumed run saves step 2 again: the orphan is replaced, the temporary leftovers removed.
  fs::create_directory(run + "/.tmp_step_3");
  io::save_checkpoint(run, 2, {{"m", m.model.get()}}, {{"step", 2}});
  CHECK(!fs::exists(run + "/.tmp_step_3"));
  TinyModel r3(trained(Arch::GPT2, Heads::LM), kShape, Precision::F32, 7);
  CHECK(io::load_checkpoint(run, {{"m", r3.model.get()}}) == nlohmann::json{{"step", 2}});
  CHECK(state_bytes(*r3.model) == state_bytes(*m.model));
  // Saving the step `latest` names again is refused.
  CHECK(contains(error_of([&] { io::save_checkpoint(run, 2, {{"m", m.model.get()}}, {}); }), "already saved"));
}

TEST_CASE("checkpoint: missing or corrupt files and a wrong model name the file") {
  TinyModel m(trained(Arch::Llama, Heads::LM), kShape, Precision::F32, 1);
  const std::string run = temp_dir();
  io::save_checkpoint(run, 4, {{"m", m.model.get()}}, {{"step", 4}});
  TinyModel other(trained(Arch::Llama, Heads::LM), kShape, Precision::F32, 2);
  auto load = [&](const std::string& path, const std::string& owner = "m") {
    return error_of([&] { io::load_checkpoint(path, {{owner, other.model.get()}}); });
  };
  CHECK(contains(load(temp_dir()), "neither a checkpoint step directory"));
  CHECK(contains(load(run, "policy"), "/step_4/policy.safetensors: missing"));

  // a model of another config
  ModelSpec wider = trained(Arch::Llama, Heads::LM);
  wider.config.d_ff = 28;
  TinyModel w(wider, kShape, Precision::F32, 3);
  CHECK(contains(error_of([&] { io::load_checkpoint(run, {{"m", w.model.get()}}); }), "m.safetensors: the checkpoint's config"));
  // an f64 model cannot take f32 state bit-exactly
  TinyModel d(trained(Arch::Llama, Heads::LM), kShape, Precision::F64, 3);
  CHECK(contains(error_of([&] { io::load_checkpoint(run, {{"m", d.model.get()}}); }), "has dtype F32"));

  const std::string file = run + "/step_4/m.safetensors";
  fs::resize_file(file, fs::file_size(file) - 8);  // truncated
  CHECK(contains(load(run), file));
  write_text(run + "/step_4/state.json", "{\"step\": ");
  CHECK(contains(load(run), "step_4/state.json: not valid JSON"));
  write_text(run + "/latest", "garbage");
  CHECK(contains(load(run), run + "/latest: corrupt"));
  fs::remove(run + "/latest");
  CHECK(contains(load(run), "neither a checkpoint step directory"));
}

TEST_CASE("checkpoint: export writes the model as a Hugging Face directory that loads back identically") {
  for (Arch arch : {Arch::GPT2, Arch::Llama}) {
    TinyModel m(trained(arch, Heads::LMAndScalar), kShape, Precision::F32, 1);
    train_step(m);
    const std::string run = temp_dir(), out = temp_dir() + "/hf";
    io::save_checkpoint(run, 7, {{"policy", m.model.get()}}, {});
    CHECK(io::checkpoint_heads(run, "policy") == Heads::LMAndScalar);
    io::export_checkpoint_to_hf(run, "policy", out, Heads::LM);
    ModelSpec lm = trained(arch, Heads::LM);
    lm.config = io::read_hf_config(out).config;
    TinyModel back(lm, kShape, Precision::F32, 9);
    io::load_hf_checkpoint(out, *back.model);
    for (const std::string& n : back.model->parameter_names())
      CHECK_MESSAGE(back.model->get_parameter(n) == m.model->get_parameter(n), "parameter ", n);
    CHECK(contains(error_of([&] { io::export_checkpoint_to_hf(run, "policy", out, Heads::LMAndScalar); }),
                   "cannot be exported as 'lm+scalar'"));
  }
}
