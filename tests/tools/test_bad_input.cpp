// Hostile input through the `ppo` command, one case per class of bad input the hardening issue
// found: each must end with exit code 1 and a message on stderr naming the file (or --set key)
// and the field, write nothing, and match its row of the README's table "Bad input" (which this
// test keeps true: every message below is quoted there).
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "io/safetensors.h"
#include "io/temp_files.h"

namespace fs = std::filesystem;
using ppo::test::contains;

namespace {

const std::string kSource = PPO_SOURCE_DIR;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Outcome {
  int exit_code;  // 128 + signal when a signal ended it
  std::string stderr_text;
};

// Runs `ppo ARGS` (a shell word list), stdout discarded.
Outcome run_ppo(const std::string& args) {
  static const std::string err = ppo::test::temp_dir() + "/stderr.txt";
  const int status = std::system((std::string(PPO_COMMAND) + " " + args + " >/dev/null 2>" + err).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_file(err)};
}

// Every file under `dir` (names and bytes), to see that a failed run wrote nothing.
std::string tree(const std::string& dir) {
  std::string all;
  if (!fs::exists(dir)) return all;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    all += e.path().string() + "\n" + (e.is_regular_file() ? read_file(e.path().string()) : "") + "\n";
  return all;
}

// The README's table of bad input.
const std::string& readme() {
  static const std::string text = read_file(kSource + "/README.md");
  return text;
}

// `ppo ARGS` fails cleanly: exit code 1, `message` (quoted in the README) and every one of `names`
// on stderr, and `watched` (a directory) unchanged.
void check_refused(const std::string& args, const std::string& message, const std::vector<std::string>& names,
                   const std::string& watched = "") {
  const std::string before = tree(watched);
  const Outcome o = run_ppo(args);
  INFO("ppo ", args.substr(0, 300), "\nstderr: ", o.stderr_text.substr(0, 2000));
  CHECK(o.exit_code == 1);
  CHECK(contains(o.stderr_text, message));
  for (const std::string& n : names) CHECK(contains(o.stderr_text, n));
  CHECK_MESSAGE(contains(readme(), "`" + message + "`"), "README.md's table lacks the message `", message, "`");
  if (!watched.empty()) CHECK_MESSAGE(tree(watched) == before, "a failed run changed ", watched);
}

// ---- tokenizer files ------------------------------------------------------------------------------

// A tokenizer.json: a BPE model of the printable ASCII bytes (no merges), the byte-level
// pre-tokenizer and decoder; `edit` changes it.
std::string tokenizer_json(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int c = '!'; c <= '~'; ++c) vocab[std::string(1, char(c))] = c - '!';
  nlohmann::json t = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
                      {"pre_tokenizer", {{"type", "ByteLevel"}}},
                      {"decoder", {{"type", "ByteLevel"}}}};
  edit(t);
  return t.dump();
}

// ---- a demo run with a checkpoint, made once ------------------------------------------------------

const std::string kDemoArgs =
    "--device cpu --set total_steps=1 --set rollout_batch_size=16 --set micro_batch_size=8 --set demo.sft_examples=64 "
    "--set demo.rm_pairs=64 --set demo.rm_eval_pairs=16 --set demo.eval_prompts=16 --set sft.epochs=1 --set rm.epochs=1";

const std::string& demo_run() {
  static const std::string dir = [] {
    const std::string d = ppo::test::temp_dir() + "/demo";
    const Outcome o = run_ppo("train " + kDemoArgs + " --set output_dir=" + d);
    REQUIRE_MESSAGE(o.exit_code == 0, o.stderr_text);
    return d;
  }();
  return dir;
}

std::string resume_args(const std::string& run) {
  return "train " + kDemoArgs + " --set output_dir=" + run + " --resume " + run + "/checkpoints";
}

// A copy of the demo run's checkpoint step directory.
std::string step_copy(const std::string& name) {
  const std::string dir = ppo::test::temp_dir() + "/" + name;
  fs::copy(demo_run() + "/checkpoints/step_1", dir, fs::copy_options::recursive);
  return dir;
}

// Rewrites a model file: `edit` changes its tensors and metadata.
void rewrite_model(const std::string& path,
                   const std::function<void(std::map<std::string, ppo::io::HostTensor>&, std::map<std::string, std::string>&)>& edit) {
  std::map<std::string, ppo::io::HostTensor> tensors;
  std::map<std::string, std::string> metadata;
  {
    const ppo::io::SafetensorsFile f(path);
    metadata = f.metadata();
    for (const auto& [name, e] : f.entries()) tensors[name] = f.load(name);
  }
  edit(tensors, metadata);
  std::vector<ppo::io::NamedTensor> named;
  for (auto& [name, t] : tensors) named.push_back({name, t.view()});
  ppo::io::write_safetensors(path, named, metadata);
}

// Changes the state.json of a run's checkpoint.
void edit_state(const std::string& run, const std::function<void(nlohmann::json&)>& edit) {
  const std::string path = run + "/checkpoints/step_1/state.json";
  nlohmann::json state = nlohmann::json::parse(read_file(path));
  edit(state);
  ppo::test::write_text(path, state.dump());
}

// A fresh copy of the demo run (its checkpoints and demo_stages.json), to resume.
std::string run_copy(const std::string& name) {
  const std::string dir = ppo::test::temp_dir() + "/" + name;
  fs::copy(demo_run(), dir, fs::copy_options::recursive);
  return dir;
}

}  // namespace

TEST_CASE("class 1: tokenizer ids out of range are errors, never out-of-bounds writes or wrapped ids") {
  const std::string dir = ppo::test::temp_dir();
  const std::string negative = ppo::test::write_text(dir + "/negative_id.json", tokenizer_json([](nlohmann::json& t) {
    t["added_tokens"] = {{{"id", -1}, {"content", "<x>"}}};
  }));
  check_refused("tokenize --tokenizer " + negative + " ab", "added_tokens[0]: field 'id' = -1 must lie in [0, 4194303]",
                {"negative_id.json"});
  const std::string huge = ppo::test::write_text(dir + "/huge_id.json", tokenizer_json([](nlohmann::json& t) {
    t["added_tokens"] = {{{"id", int64_t(1) << 40}, {"content", "<x>"}}};
  }));
  check_refused("tokenize --tokenizer " + huge + " ab", "field 'id' = 1099511627776 must lie in [0, 4194303]", {"huge_id.json"});
  const std::string vocab = ppo::test::write_text(dir + "/vocab_id.json", tokenizer_json([](nlohmann::json& t) {
    t["model"]["vocab"]["!"] = int64_t(1) << 32;
  }));
  check_refused("tokenize --tokenizer " + vocab + " ab", "field 'vocab': field '!' = 4294967296 must lie in [0, 4194303]",
                {"vocab_id.json"});
}

TEST_CASE("class 2: wrongly typed JSON fields are errors naming the file and the field") {
  const std::string dir = ppo::test::temp_dir();
  struct TypeCase {
    const char* file;
    std::function<void(nlohmann::json&)> edit;
    const char* message;
  };
  const TypeCase cases[] = {
      {"normalizer.json", [](nlohmann::json& t) { t["normalizer"] = 5; }, "field 'normalizer' must be an object, got 5"},
      {"model.json", [](nlohmann::json& t) { t["model"] = "BPE"; }, "field 'model' must be an object, got \"BPE\""},
      {"pre.json", [](nlohmann::json& t) { t["pre_tokenizer"] = {1}; }, "field 'pre_tokenizer' must be an object, got [1]"},
      {"added.json", [](nlohmann::json& t) { t["added_tokens"] = {{"id", 3}}; },
       "field 'added_tokens' must be an array, got {\"id\":3}"},
  };
  for (const TypeCase& c : cases)
    check_refused("tokenize --tokenizer " + ppo::test::write_text(dir + "/" + c.file, tokenizer_json(c.edit)) + " ab",
                  c.message, {c.file});

  const std::string run = run_copy("wrong_type_state");
  edit_state(run, [](nlohmann::json& s) { s["kl_controller"]["coef"] = "0.02"; });
  check_refused(resume_args(run), "kl_controller: field 'coef' must be a number, got \"0.02\"", {"state.json"}, run);

  check_refused("train --set policy.arch='\xff'", "--set policy.arch: invalid UTF-8 at byte offset 12", {});
}

TEST_CASE("class 3: deeply nested JSON is an error, not a stack overflow") {
  const std::string dir = ppo::test::temp_dir();
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  const std::string config = ppo::test::write_text(dir + "/deep.json", "{\"policy\": " + deep + "}");
  check_refused("plan --config " + config, "JSON nested deeper than 64 levels", {"deep.json"});

  const std::string step = step_copy("deep_metadata");
  rewrite_model(step + "/policy.safetensors", [&](auto&, auto& metadata) { metadata["config"] = deep; });
  check_refused("export --checkpoint " + step + " --out " + dir + "/out", "JSON nested deeper than 64 levels",
                {"policy.safetensors: metadata 'config'"}, dir + "/out");
}

TEST_CASE("class 4: sizes have upper bounds; plans never overflow") {
  const std::string tiny = kSource + "/bench/configs/tiny.json";
  check_refused("plan --config " + tiny + " --set rollout_batch_size=4611686018427387904",
                "config rollout_batch_size = 4611686018427387904: must lie in [1, 1048576]", {});
  check_refused("plan --config " + tiny + " --set policy.n_layer=2147483648", "field 'n_layer' = 2147483648 must lie in [1, 1024]",
                {"policy"});
  check_refused("plan --config " + tiny + " --set total_steps=4294967296", "config total_steps = 4294967296: must lie in [1, 2147483648]", {});

  const std::string dir = ppo::test::temp_dir();
  const std::string step = step_copy("more_layers");
  rewrite_model(step + "/policy.safetensors", [](auto&, auto& metadata) {
    const size_t at = metadata["config"].find("\"n_layer\":2");
    REQUIRE(at != std::string::npos);
    metadata["config"].replace(at, 11, "\"n_layer\":3");
  });
  check_refused("export --checkpoint " + step + " --out " + dir + "/out", "missing tensor 'weight.h.2.ln_1.weight'",
                {"policy.safetensors"}, dir + "/out");
}

TEST_CASE("class 5: a plan larger than the host's available memory stops before any work") {
  const std::string huge = "--set policy.n_layer=64 --set policy.d_model=65536 --set policy.d_ff=262144 --set policy.n_head=64";
  check_refused("plan --device cpu --config " + kSource + "/bench/configs/tiny.json " + huge, "SHORTFALL", {"too small for this run"});
  const std::string out = ppo::test::temp_dir() + "/huge_demo";
  check_refused("train --device cpu " + huge + " --set output_dir=" + out,
                "the cpu device is too small for this run (available host memory)", {"SHORTFALL", "arena total"}, out);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("class 6: what was silently accepted is refused") {
  const std::string dir = ppo::test::temp_dir();
  SUBCASE("NaN weights in a checkpoint") {
    const std::string run = run_copy("nan_weights");
    rewrite_model(run + "/checkpoints/step_1/policy.safetensors", [](auto& tensors, auto&) {
      reinterpret_cast<float*>(tensors.at("weight.wte.weight").bytes.data())[5] = NAN;
    });
    check_refused(resume_args(run), "tensor 'weight.wte.weight' holds nan at index 5", {"policy.safetensors"}, run);
  }
  SUBCASE("stored shapes and extra tensors on export") {
    const std::string step = step_copy("extra_tensor");
    rewrite_model(step + "/policy.safetensors", [](auto& tensors, auto&) {
      tensors["weight.extra"] = tensors.at("weight.ln_f.bias");
      tensors["weight.extra"].name = "weight.extra";
    });
    check_refused("export --checkpoint " + step + " --out " + dir + "/out1", "unexpected tensor 'weight.extra'",
                  {"policy.safetensors"}, dir + "/out1");
    const std::string shaped = step_copy("wrong_shape");
    rewrite_model(shaped + "/policy.safetensors", [](auto& tensors, auto&) {
      std::swap(tensors.at("weight.wte.weight").shape[0], tensors.at("weight.wte.weight").shape[1]);
    });
    check_refused("export --checkpoint " + shaped + " --out " + dir + "/out2", "tensor 'weight.wte.weight' has shape [64,44]",
                  {"policy.safetensors"}, dir + "/out2");
  }
  SUBCASE("steps_done of 2^64-1 and a negative KL coefficient on resume") {
    const std::string run = run_copy("huge_steps");
    edit_state(run, [](nlohmann::json& s) { s["steps_done"] = UINT64_MAX; });
    check_refused(resume_args(run), "field 'steps_done' = 18446744073709551615 must lie in [0, 2147483648]", {"state.json"}, run);
    const std::string negative = run_copy("negative_kl");
    edit_state(negative, [](nlohmann::json& s) { s["kl_controller"]["coef"] = -0.5; });
    check_refused(resume_args(negative), "kl_controller: field 'coef' = -0.5 must be a finite number in [0,", {"state.json"},
                  negative);
  }
  SUBCASE("bytes after a NUL in a JSONL line or a safetensors header") {
    const std::string prompts = ppo::test::write_text(dir + "/prompts.jsonl", std::string("{\"prompt\": \"hi\"}\0{\"x\n", 21));
    const std::string models = kSource + "/tests/data";
    check_refused("train --set prompts=" + prompts + " --set tokenizer=" + models + "/tokenizers/gpt2 --set policy_checkpoint=" +
                      models + "/models/gpt2 --set reward_checkpoint=" + models + "/models/qwen2_reward --set output_dir=" +
                      dir + "/real",
                  "prompts.jsonl:1: not valid JSON: a NUL byte at offset 16", {}, dir + "/real");
    const std::string step = step_copy("nul_header");
    const std::string path = step + "/policy.safetensors";
    const std::string bytes = read_file(path);
    uint64_t length = 0;
    std::memcpy(&length, bytes.data(), 8);
    const std::string data = bytes.substr(8 + length);
    std::string header = bytes.substr(8, length);
    header.erase(header.find_last_not_of(' ') + 1);  // the JSON, then after a NUL some bytes, padded again
    header += std::string("\0{\"x", 4) + std::string((8 - (header.size() + 4) % 8) % 8, ' ');
    length = header.size();
    ppo::test::write_text(path, std::string(reinterpret_cast<const char*>(&length), 8) + header + data);
    check_refused("export --checkpoint " + step + " --out " + dir + "/out3", "header: not valid JSON: a NUL byte at offset",
                  {"policy.safetensors"}, dir + "/out3");
  }
  SUBCASE("// comments: read alike by ppo plan and ppo train") {
    const std::string config = ppo::test::write_text(dir + "/commented.json", "{\n  // a comment\n  \"totl_steps\": 2\n}\n");
    check_refused("plan --config " + config, "unknown key 'totl_steps'; did you mean 'total_steps'?", {"commented.json"});
    check_refused("train --config " + config, "unknown key 'totl_steps'; did you mean 'total_steps'?", {"commented.json"});
  }
}
