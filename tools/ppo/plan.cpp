// `ppo plan`: the arena plan of a PPO run (every region of the policy, reference, reward and value
// models and the scratch), before any work, with the free bytes or the shortfall (exit code 1) of
// the capacity: --device-memory, else the host's available memory (cpu) or the GPU's free memory.
// --ranks N: the plan of one of N data-parallel ranks (ZeRO-1 shards, its rollout share).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/communicator.h"
#include "engine/device_memory.h"
#include "ppo/run_plan.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

namespace {
struct PlanOptions {
  std::string config;
  std::string device = "auto";
  std::vector<std::string> overrides;
  size_t device_memory = 0;  // 0: the host's available memory, or the free memory of a GPU that answers
  int64_t ranks = 0;         // data-parallel ranks; 0: the ranks mpirun started (1 without it)
};

void run_plan(const PlanOptions& o) {
  const PpoConfig cfg = load_config(o.config, o.overrides);
  const bool cuda = o.device == "cuda" || (o.device == "auto" && cuda_device_count() > 0);
  std::optional<size_t> capacity;
  if (o.device_memory > 0) capacity = o.device_memory;
  else if (!cuda) capacity = host_available_bytes();
  else if (cuda_device_count() > 0) capacity = cuda_free_bytes();
  const DeviceKind device = cuda ? DeviceKind::CUDA : DeviceKind::CPU;
  const int64_t ranks = o.ranks > 0 ? o.ranks : ProcessGroup::world().size;
  const ArenaPlan plan = ArenaPlan::make(run_regions(cfg, precision_of(device), Scoring::RewardModel, ranks));
  std::fputs(plan_report(cfg, device, Scoring::RewardModel, plan, capacity, ranks).c_str(), stdout);  // one rank's
  if (capacity && *capacity < plan.total_bytes)
    PPO_FAIL("the ", cuda ? "cuda" : "cpu", " device is too small for this run: SHORTFALL ",
             format_bytes(plan.total_bytes - *capacity), " (arena plan above)");
}
}  // namespace

void add_plan_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("plan", "Print the arena plan (bytes per region, per model, total) of a PPO run config");
  auto o = std::make_shared<PlanOptions>();
  cmd->add_option("--config", o->config, "PPO run config (JSON)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--device", o->device, "plan for cpu (f32) or cuda (bf16); auto: cuda when a GPU answers")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--device-memory", o->device_memory, "device capacity in bytes: report the free bytes or the shortfall (exit 1)");
  cmd->add_option("--set", o->overrides, "override a config key: key=value (repeatable)");
  cmd->add_option("--ranks", o->ranks,
                  "plan one of N data-parallel ranks (mpirun -np N): its rollout share, ZeRO-1 optimizer shards "
                  "(default: the ranks mpirun started, else 1)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->callback([o] { run_plan(*o); });
}

}  // namespace ppo::tools
