#include "ppo/run_plan.h"

#include <cstdio>
#include "engine/device_memory.h"
#include "engine/error.h"
#include "ppo/dpo.h"
#include "ppo/experience.h"

namespace ppo {

DeviceKind resolve_device(DeviceChoice choice) {
  if (choice == DeviceChoice::CPU) return DeviceKind::CPU;
  const bool gpu = cuda_device_count() > 0;
  PPO_ASSERT(gpu || choice == DeviceChoice::Auto, "device 'cuda' was asked for, but ",
             cuda_compiled() ? "no GPU answers" : "this build has no CUDA backend");
  return gpu ? DeviceKind::CUDA : DeviceKind::CPU;
}

Precision precision_of(DeviceKind device) { return device == DeviceKind::CUDA ? Precision::BF16 : Precision::F32; }

std::vector<RegionSpec> run_regions(const PpoConfig& cfg, Precision precision, Scoring scoring, int64_t ranks) {
  if (cfg.algorithm == Algorithm::Dpo)
    return single_model_regions("policy", dpo_policy_spec(cfg), dpo_shape(cfg, ranks), precision);
  std::vector<RegionSpec> r = ppo_regions(ppo_models(cfg, "config", scoring), run_shape(cfg, ranks), precision);
  r.push_back(ExperienceBuffers::region(cfg, precision, ranks));
  return r;
}

namespace {
// What one of several data-parallel ranks holds (ZeRO-1), and what one rank alone would need.
std::string ranks_line(const PpoConfig& cfg, DeviceKind device, Scoring scoring, const ArenaPlan& plan, int64_t ranks) {
  const size_t one_rank = ArenaPlan::make(run_regions(cfg, precision_of(device), scoring, 1)).total_bytes;
  const long long B = (long long)cfg.rollout_batch_size;
  char work[128], line[768];
  if (cfg.algorithm == Algorithm::Dpo)
    std::snprintf(work, sizeof work, "its share of the %lld pairs a step", B);
  else
    std::snprintf(work, sizeof work, "its %lld of the %lld rollouts a step", B / (long long)ranks, B);
  std::snprintf(line, sizeof line,
                "data parallel: %lld ranks, each with this arena (%s): %s; the trained models' weights and gradients "
                "whole, their %s a 1/%lld shard (ZeRO-1); one rank alone: %s\n",
                (long long)ranks, format_bytes(plan.total_bytes).c_str(), work,
                device == DeviceKind::CUDA ? "f32 master weights and AdamW moments" : "AdamW moments", (long long)ranks,
                format_bytes(one_rank).c_str());
  return line;
}
}  // namespace

std::string plan_report(const PpoConfig& cfg, DeviceKind device, Scoring scoring, const ArenaPlan& plan,
                        std::optional<size_t> capacity, int64_t ranks) {
  const bool cuda = device == DeviceKind::CUDA;
  const RunShape shape = run_shape(cfg, ranks);
  const std::string parallel = ranks > 1 ? ranks_line(cfg, device, scoring, plan, ranks) : "";
  char line[512];
  if (cfg.algorithm == Algorithm::Dpo) {
    std::snprintf(line, sizeof line,
                  "arena plan for %s (%s): dpo, %lld pairs a step in micro-batches of %lld pairs (%lld rows of %lld + "
                  "%lld tokens); the policy alone (the reference: log-probs computed once)\n",
                  device_name(device), cuda ? "bf16 weights/activations, f32 master/grads/AdamW" : "f32",
                  (long long)cfg.rollout_batch_size, (long long)cfg.micro_batch_size, (long long)dpo_shape(cfg).micro_batch,
                  (long long)shape.prompt_len, (long long)shape.response_len);
    return line + parallel + plan.table(capacity);
  }
  std::snprintf(line, sizeof line,
                "arena plan for %s (%s): rollout %lld x (%lld prompt + %lld response) tokens, micro-batch %lld, value: %s\n",
                device_name(device), cuda ? "bf16 weights/activations, f32 master/grads/AdamW" : "f32",
                (long long)shape.rollout_batch, (long long)shape.prompt_len, (long long)shape.response_len,
                (long long)shape.micro_batch, to_string(cfg.value_model));
  std::string out = line;
  for (const PlannedModel& m : ppo_models(cfg, "config", scoring)) {
    const ModelConfig& c = m.spec.config;
    std::snprintf(line, sizeof line, "  %-10s %s L=%lld C=%lld NH=%lld NKV=%lld F=%lld V=%lld (%s%s)\n", m.owner.c_str(),
                  arch_name(c.arch), (long long)c.n_layer, (long long)c.d_model, (long long)c.n_head,
                  (long long)c.n_kv_head, (long long)c.d_ff, (long long)c.vocab_size,
                  m.spec.training == Training::Trained ? "trained" : "frozen",
                  m.spec.heads == Heads::LM ? ", LM head" : m.spec.heads == Heads::Scalar ? ", scalar head" : ", LM + scalar heads");
    out += line;
  }
  if (!cfg.has_critic()) {  // what the critic-free estimator saves: PPO's separate value model
    PpoConfig with_critic = cfg;
    with_critic.advantage_estimator = AdvantageEstimator::Gae;
    with_critic.value_model = ValueModelKind::Separate;
    const size_t ppo_total =
        ArenaPlan::make(run_regions(with_critic, precision_of(device), scoring, ranks)).total_bytes;
    std::snprintf(line, sizeof line, "  no value model: %s is critic-free; a separate value model would add %s (%zu bytes)\n",
                  to_string(cfg.advantage_estimator), format_bytes(ppo_total - plan.total_bytes).c_str(),
                  ppo_total - plan.total_bytes);
    out += line;
  }
  return out + parallel + plan.table(capacity);
}

}  // namespace ppo
