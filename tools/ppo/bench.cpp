// `ppo bench`: timed PPO steps of a run config with random weights and random prompts (ids drawn
// from the seed, never the EOS id, full prompt_length), the engine's side of bench/peers. Prints
// the arena table, per-phase wall time (the backend synchronized before every clock read),
// response tokens/s, model TFLOP/s per phase and, on a GPU with a known peak, MFU; --json writes
// the same with the peer's phase names (generate, reference, reward, value, advantages, train,
// total; subphases generate/sampling and generate/old_logp). --trace DIR dumps the first (warm-up)
// step's tensors with the peer's names (ppo/trace.h). --save-weights DIR writes the four models
// before the first step as HF checkpoints DIR/{policy,reference,reward,value}/ (config.json +
// model.safetensors, io/hf_checkpoint.h): the peer's --weights files for the same-work check
// (bench/same_work_check.py). On a GPU with known peaks (H100/H200, or --peak-tflops and
// --peak-gbs) every phase gets its roofline: max(FLOPs / peak, bytes / bandwidth), the bytes a
// lower bound (roofline_bytes), and achieved = roofline / measured. On the emulated CUDA device
// (kernels/cuda/emu) it also reports each phase's device work per step: launches,
// synchronizations, copies and bytes, allocations. Under `mpirun -np N` the N ranks run
// the steps data-parallel (the batch stays B); rank 0 reports.
//
// FLOPs (the peer's count): N = parameters that take part in a matmul per token (every parameter
// but the embedding lookups; a tied LM head counts once more), split into the trunk's and the LM
// head's (V x C); 2 N per token for a forward, 6 N for forward + backward. The trunk runs on all
// P+R positions, the LM head only where logits are used: R sampled tokens, R+1 scored positions
// (old/reference log-probs, training). generate = sampling + the old-log-prob forward; train =
// policy + value, times ppo_epochs.
#include <cstdio>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "engine/device_memory.h"
#include "engine/philox.h"
#include "io/hf_checkpoint.h"
#include "ppo/trainer.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

namespace {

struct BenchOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string device = "";
  int64_t steps = 3, warmup = 1;
  bool fixed_response_length = false;
  std::string json;
  std::string trace;
  std::string save_weights;
  double peak_tflops = 0;
  double peak_gbs = 0;
};

// The LM head's matmul parameters (V x C, tied or not); 0 without an LM head.
double lm_head_params(Transformer& m) {
  return m.spec().has_lm() ? double(m.config().vocab_size) * double(m.config().d_model) : 0.0;
}

// Matmul parameters of a model (see the header comment).
double matmul_params(Transformer& m) {
  double n = 0;
  for (const std::string& name : m.parameter_names()) {
    const double numel = double(m.parameter(name).numel());
    const bool embedding = name == "wte.weight" || name == "wpe.weight" || name == "embed_tokens.weight";
    if (!embedding) n += numel;
    if ((name == "wte.weight" || name == "embed_tokens.weight") && m.spec().has_lm() && m.config().tied_embeddings) n += numel;
  }
  return n;
}

// Device work of one step, as counted on the emulated device (engine/device_memory.h): the mean over
// `steps` steps of the summed counters.
nlohmann::ordered_json per_step(const DeviceCounters& c, int64_t steps) {
  const double n = double(steps);
  return {{"launches", double(c.launches) / n},       {"syncs", double(c.syncs) / n},
          {"h2d_copies", double(c.h2d_copies) / n},   {"h2d_bytes", double(c.h2d_bytes) / n},
          {"d2h_copies", double(c.d2h_copies) / n},   {"d2h_bytes", double(c.d2h_bytes) / n},
          {"d2d_copies", double(c.d2d_copies) / n},   {"d2d_bytes", double(c.d2d_bytes) / n},
          {"allocations", double(c.allocations) / n}};
}

// Bytes each phase must move through device memory at least (the roofline's other axis, beside the
// FLOPs above): weights read in bf16 (2 bytes per matmul parameter) once per forward pass over a
// micro-batch and per decoded token, the KV cache read by each decode step, and in training per
// micro-batch the weights once more (dinp) and the f32 gradients read and written (12 bytes per
// parameter), per optimizer step AdamW's 30 bytes (bench/kernels/README.md) plus the gradient norm
// and zeroing (8). Activations are left out: the bound is a lower one.
std::map<std::string, double> roofline_bytes(PpoTrainer& trainer, const PpoConfig& cfg) {
  const double B = double(cfg.rollout_batch_size), P = double(cfg.prompt_length), R = double(cfg.response_length);
  const double micro_batches = std::ceil(B / double(cfg.micro_batch_size));
  const ModelConfig& c = trainer.policy().config();
  const double kv_bytes_per_position = 2.0 * double(c.n_layer) * double(c.n_kv_head) * double(c.head_size()) * 2.0;
  const double w_policy = matmul_params(trainer.policy()), w_reference = matmul_params(trainer.reference());
  const double w_reward = matmul_params(trainer.reward_model());
  const double w_value = trainer.has_separate_value_model() ? matmul_params(trainer.value_model()) : 0.0;
  const double decode_kv = B * kv_bytes_per_position * (R * P + R * (R - 1) / 2);
  const double trained = w_policy + w_value, epochs = double(cfg.ppo_epochs);
  std::map<std::string, double> b = {
      {"generate", 2 * w_policy * (1 + R + micro_batches) + decode_kv},
      {"reference", 2 * w_reference * micro_batches},
      {"reward", 2 * w_reward * micro_batches},
      {"value", 2 * w_value * micro_batches},
      {"advantages", 0.0},
      {"train", epochs * (micro_batches * 12 * trained + double(cfg.num_minibatches) * 38 * trained)}};
  b["total"] = b["generate"] + b["reference"] + b["reward"] + b["value"] + b["train"];
  return b;
}

void run_bench(const BenchOptions& o) {
  std::vector<std::string> overrides = o.overrides;
  if (!o.device.empty()) overrides.push_back("device=" + o.device);
  PpoConfig cfg = load_config(o.config, overrides);
  PPO_ASSERT(o.steps >= 1 && o.warmup >= 0, "ppo bench: --steps must be >= 1 and --warmup >= 0");
  cfg.total_steps = std::max(cfg.total_steps, o.steps + o.warmup);
  cfg.derive();

  // random prompts: ids in [0, V) without the EOS id (vocab - 1 unless the config names one)
  const ModelConfig policy_cfg = ModelConfig::from_json(cfg.policy, "config '" + o.config + "': policy");
  const int64_t V = policy_cfg.vocab_size, B = cfg.rollout_batch_size, P = cfg.prompt_length;
  const int32_t eos = int32_t(cfg.eos_token_id >= 0 ? cfg.eos_token_id : V - 1);
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t i = 0; i < B * (o.steps + o.warmup); ++i) {
    std::vector<int32_t> p(static_cast<size_t>(P));
    for (int64_t j = 0; j < P; ++j) {
      const int32_t id = int32_t(philox_draw(cfg.seed, uint64_t(1) << 42, uint64_t(i * P + j)).v[0] % uint32_t(V - 1));
      p[size_t(j)] = id >= eos ? id + 1 : id;
    }
    prompts.push_back(std::move(p));
  }
  TrainerOptions opt;
  opt.prompts = PromptSource::token_ids(std::move(prompts));
  opt.fixed_response_length = o.fixed_response_length;
  opt.trace_dir = o.trace;
  PpoTrainer trainer(cfg, opt);
  const bool cuda = trainer.backend().device() == DeviceKind::CUDA;
  if (!o.save_weights.empty()) {
    io::export_hf_checkpoint(o.save_weights + "/policy", trainer.policy(), Heads::LM);
    io::export_hf_checkpoint(o.save_weights + "/reference", trainer.reference(), Heads::LM);
    io::export_hf_checkpoint(o.save_weights + "/reward", trainer.reward_model(), Heads::Scalar);
    if (trainer.has_separate_value_model())
      io::export_hf_checkpoint(o.save_weights + "/value", trainer.value_model(), Heads::Scalar);
  }
  const std::string device = cuda ? cuda_device_name() : "cpu";

  const double head = lm_head_params(trainer.policy()), trunk_policy = matmul_params(trainer.policy()) - head;
  const double trunk_reference = matmul_params(trainer.reference()) - head;
  const double n_reward = matmul_params(trainer.reward_model());
  const double n_value = trainer.has_separate_value_model() ? matmul_params(trainer.value_model()) : 0.0;
  const double tokens = double(B * cfg.sequence_length), sampled = double(B * cfg.response_length),
               scored = double(B * (cfg.response_length + 1));
  const std::vector<std::string> phases = {"generate", "reference", "reward", "value", "advantages", "train", "total"};
  std::map<std::string, double> flops = {
      {"generate", 2 * (2 * trunk_policy * tokens + head * (sampled + scored))},
      {"reference", 2 * (trunk_reference * tokens + head * scored)},
      {"reward", 2 * n_reward * tokens}, {"value", 2 * n_value * tokens}, {"advantages", 0},
      {"train", 6 * (trunk_policy * tokens + head * scored + n_value * tokens) * double(cfg.ppo_epochs)}};
  flops["total"] = flops["generate"] + flops["reference"] + flops["reward"] + flops["value"] + flops["train"];
  const std::map<std::string, double> bytes = roofline_bytes(trainer, cfg);
  double peak = o.peak_tflops * 1e12, bandwidth = o.peak_gbs * 1e9;
  const bool hopper = device.find("H100") != std::string::npos || device.find("H200") != std::string::npos;
  if (peak == 0 && cuda && hopper) peak = 989.4e12;  // dense bf16 tensor-core peak, SXM
  if (bandwidth == 0 && cuda && hopper) bandwidth = device.find("H200") != std::string::npos ? 4.8e12 : 3.35e12;  // HBM

  std::map<std::string, std::vector<double>> seconds;
  std::map<std::string, DeviceCounters> work;  // summed over the timed steps
  double valid_tokens = 0;
  MetricsRow last;
  for (int64_t i = 0; i < o.warmup + o.steps; ++i) {
    last = trainer.step();
    const PhaseTimes& t = trainer.last_phase_times();
    const bool timed = i >= o.warmup;
    std::printf("step %lld%s: %.1f ms  kl %.4g  score %.4g  vloss %.4g  response_length %.3g\n", (long long)i,
                timed ? "" : " (warmup)", t.total.seconds * 1e3, last.get(metric::kKl), last.get(metric::kScores),
                last.get(metric::kValueLoss), last.get(metric::kResponseLength));
    if (!timed) continue;
    PhaseCost generate = t.sampling;
    generate.seconds += t.old_logp.seconds;
    generate.work += t.old_logp.work;
    const std::map<std::string, PhaseCost> s = {
        {"generate", generate}, {"reference", t.reference}, {"reward", t.reward}, {"value", t.value},
        {"advantages", t.advantages}, {"train", t.train}, {"total", t.total},
        {"generate/sampling", t.sampling}, {"generate/old_logp", t.old_logp}};
    for (const auto& [k, v] : s) {
      seconds[k].push_back(v.seconds);
      work[k] += v.work;
    }
    valid_tokens += last.get(metric::kResponseLength) * double(B);
  }
  valid_tokens /= double(o.steps);
  auto mean = [&](const std::string& k) {
    double s = 0;
    for (double v : seconds[k]) s += v;
    return s / double(seconds[k].size());
  };

  nlohmann::ordered_json report = {{"engine", "ppo-engine"}, {"version", PPO_VERSION}, {"device", device},
                                   {"dtype", cuda ? "bf16" : "fp32"}, {"fixed_response_length", o.fixed_response_length},
                                   {"steps", o.steps}, {"warmup", o.warmup}, {"config", cfg.to_json()},
                                   {"matmul_params", {{"policy", trunk_policy + head}, {"reference", trunk_reference + head},
                                                      {"reward", n_reward}, {"value", n_value}}},
                                   {"arena_bytes", trainer.arena().plan().total_bytes}};
  std::printf("\n%-20s%10s%7s%12s%8s  %s\n", "phase", "ms", "%", cuda ? "TFLOP/s" : "GFLOP/s", "MFU",
              peak > 0 && bandwidth > 0 ? "roofline (achieved/roofline)" : "");
  const double total = mean("total");
  for (const std::string& k : {"generate", "reference", "reward", "value", "advantages", "train", "total",
                               "generate/sampling", "generate/old_logp"}) {
    const double s = mean(k);
    nlohmann::ordered_json row = {{"seconds", s}, {"seconds_all", seconds[k]}};
    if (cuda_emulated()) row["device_work_per_step"] = per_step(work[k], o.steps);
    std::string rate = "", mfu = "";
    if (flops.count(k)) {
      const double f = flops[k], per_s = s > 0 ? f / s : 0;
      row["flops"] = f;
      row["tflops_per_s"] = s > 0 ? nlohmann::json(per_s / 1e12) : nlohmann::json(nullptr);
      row["mfu"] = peak > 0 && s > 0 ? nlohmann::json(per_s / peak) : nlohmann::json(nullptr);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2f", cuda ? per_s / 1e12 : per_s / 1e9);
      rate = buf;
      if (peak > 0) {
        std::snprintf(buf, sizeof buf, "%.1f%%", 100 * per_s / peak);
        mfu = buf;
      }
    }
    std::string roof = "";
    if (bytes.count(k) && peak > 0 && bandwidth > 0) {  // the phase's lower bound on this device
      const double bound = std::max(flops[k] / peak, bytes.at(k) / bandwidth);
      row["bytes"] = bytes.at(k);
      row["roofline_seconds"] = bound;
      row["achieved_over_roofline"] = s > 0 ? nlohmann::json(bound / s) : nlohmann::json(nullptr);
      char buf[48];
      std::snprintf(buf, sizeof buf, "%.3f ms  %.1f%%", bound * 1e3, s > 0 ? 100 * bound / s : 0.0);
      roof = buf;
    }
    report[k.find('/') == std::string::npos ? "phases" : "subphases"][k] = row;
    std::printf("%-20s%10.1f%7.1f%12s%8s  %s\n", k.c_str(), s * 1e3, total > 0 ? 100 * s / total : 0.0, rate.c_str(),
                mfu.c_str(), roof.c_str());
  }
  if (cuda_emulated()) {
    std::printf("\ndevice work per step (emulated device: counted, not timed)\n%-20s%10s%8s%8s%12s%8s%12s%8s\n", "phase",
                "launches", "syncs", "h2d", "h2d bytes", "d2h", "d2h bytes", "allocs");
    for (const std::string& k : {"generate", "reference", "reward", "value", "advantages", "train", "total",
                                 "generate/sampling", "generate/old_logp"}) {
      const nlohmann::ordered_json w = per_step(work[k], o.steps);
      std::printf("%-20s%10.0f%8.0f%8.0f%12.0f%8.0f%12.0f%8.0f\n", k.c_str(), double(w["launches"]), double(w["syncs"]),
                  double(w["h2d_copies"]), double(w["h2d_bytes"]), double(w["d2h_copies"]), double(w["d2h_bytes"]),
                  double(w["allocations"]));
    }
  }
  report["response_tokens"] = valid_tokens;
  report["response_tokens_per_s"] = valid_tokens / total;
  report["generate_tokens_per_s"] = valid_tokens / mean("generate/sampling");
  nlohmann::ordered_json metrics = nlohmann::ordered_json::object();
  for (const auto& [k, v] : last.items()) metrics[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  report["metrics"] = metrics;
  std::printf("response tokens/s (valid tokens / step time): %.1f; sampling tokens/s: %.1f\n",
              double(report["response_tokens_per_s"]), double(report["generate_tokens_per_s"]));
  if (!cuda) std::printf("train phase: %.2f GFLOP/s achieved (no MFU on the CPU)\n", flops["train"] / mean("train") / 1e9);
  if (!o.json.empty() && trainer.ranks().is_root()) {
    std::ofstream out(o.json);
    out << report.dump(2) << "\n";
    PPO_ASSERT(out.good(), "ppo bench: writing '", o.json, "' failed");
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("bench", "Time PPO steps of a run config (random weights and prompts): per phase, tokens/s, MFU");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("--config", o->config, "PPO run config (JSON)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--set", o->overrides, "override a config key: key=value (repeatable)");
  cmd->add_option("--device", o->device, "cpu | cuda | auto (default: the config's)")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--steps", o->steps, "timed PPO steps (default 3)");
  cmd->add_option("--warmup", o->warmup, "untimed PPO steps first (default 1)");
  cmd->add_flag("--fixed-response-length", o->fixed_response_length, "EOS off: every response has response_length tokens");
  cmd->add_option("--json", o->json, "write the report as JSON (the peer's phase names)");
  cmd->add_option("--trace", o->trace, "write every tensor of the first step to DIR/trace.safetensors (ppo/trace.h)");
  cmd->add_option("--save-weights", o->save_weights,
                  "write the initial models as HF checkpoints DIR/{policy,reference,reward,value}/");
  cmd->add_option("--peak-tflops", o->peak_tflops, "device peak for MFU and the roofline (default: 989.4 on H100/H200)");
  cmd->add_option("--peak-gbs", o->peak_gbs, "device memory bandwidth in GB/s for the roofline (default: 4800 on H200, 3350 on H100)");
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace ppo::tools
