// The embedding API: a PPO-RLHF trainer in one object.
//
//   ppo::PpoConfig cfg = ppo::load_config("run.json", {});
//   ppo::TrainerOptions opt;
//   opt.reward = [](const auto& prompt, const auto& response, const std::string& text) { return ...; };
//   ppo::PpoTrainer trainer(cfg, opt);          // backend, arena (plan printed), four models
//   for (int i = 0; i < 10; ++i) ppo::MetricsRow row = trainer.step();
//
// PpoTrainer owns the Backend (cfg.device: auto | cpu | cuda), the one Arena (models/plan.h
// ppo_regions + the run's experience region; a device too small stops in the constructor, before
// any work, with the plan table and the shortfall) and the four models of classic RLHF:
//   policy    trained, generates; init_random(seed), config.policy_checkpoint, or load_policy_weights
//   reference frozen copy of the policy (load_policy_weights sets both)
//   reward    frozen scalar head; init_random(seed + 1), config.reward_checkpoint, or
//             load_reward_weights; not allocated when a reward callback is given
//   value     trained scalar head; from the reward model's weights (value_init = reward, TRL) or
//             the policy's trunk with a fresh head (value_init = policy); absent with
//             value_model = policy_head (the value head sits on the policy trunk) and with the
//             critic-free advantage estimators (grpo, rloo, reinforce_pp: value_model = none)
//
// One step() reads top to bottom in ppo/step.cpp (DESIGN.md "The PPO step"): prompts -> generate
// -> score -> rewards -> advantages -> update, then the KL controller and one metrics row. This
// file holds the rest: construction (ppo/run_plan.h: device, plan), weights and checkpoints
// (ppo/run_state.h).
//
// Data parallel (`mpirun -np N`, DESIGN.md "Distributed"): every rank builds the same trainer; the
// batch is global (rollout_batch_size and the minibatches do not depend on N, which must divide
// rollout_batch_size); each rank generates and scores its B / N rows, every rank then holds the
// whole batch, so rewards, advantages and every statistic are the one-rank run's; the update splits
// each minibatch's micro-batches over the ranks (ZeRO-1: gradients reduce-scattered, AdamW on each
// rank's shard, weights all-gathered). Checkpoints and metrics are the same files one rank writes
// (rank 0 writes). Every public call is made by every rank.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "engine/arena.h"
#include "kernels/backend.h"
#include "models/plan.h"
#include "models/transformer.h"
#include "ppo/config.h"
#include "ppo/kl_controller.h"
#include "ppo/metrics.h"
#include "ppo/prompts.h"
#include "ppo/run_plan.h"
#include "ppo/run_state.h"
#include "ppo/running_moments.h"
#include "ppo/step_metrics.h"
#include "ppo/train_loop.h"

namespace ppo {

// A user reward: (prompt ids without padding, response ids up to and including the EOS when there
// is one, the response decoded by the prompt source) -> score. Replaces the reward model.
using RewardFn = std::function<double(const std::vector<int32_t>& prompt, const std::vector<int32_t>& response,
                                      const std::string& response_text)>;

struct TrainerOptions {
  RewardFn reward;                      // when set, replaces the reward model's score
  std::optional<PromptSource> prompts;  // default: config.prompts (JSONL) when set, else PromptSource::demo_task
  std::string trace_dir;                // when set, the first step() writes DIR/trace.safetensors (ppo/trace.h)
  bool fixed_response_length = false;   // EOS off: every response has response_length tokens (bench)
  size_t device_memory = 0;             // arena capacity; 0: the GPU's free memory, or the host's available memory
  bool print_plan = true;               // the arena table on stdout at construction (rank 0)
  Ranks ranks = Ranks::World;           // data parallel over every rank mpirun started (engine/communicator.h)
};

class PpoTrainer : public StepTrainer {
 public:
  // config.derive() must have run (load_config does it).
  explicit PpoTrainer(const PpoConfig& config, TrainerOptions options = {});
  ~PpoTrainer() override;
  PpoTrainer(const PpoTrainer&) = delete;
  PpoTrainer& operator=(const PpoTrainer&) = delete;

  // One PPO step: rollout, scoring, advantages, updates. Returns its metrics row (also kept in
  // metrics()). A NaN/Inf in log-probs, values, losses or a gradient norm skips the remaining
  // optimizer steps of the step (weights untouched from there) and sets `skipped` = 1. With
  // save_every > 0, a step whose count is a multiple of it ends with save_checkpoint.
  MetricsRow step() override;

  // ---- checkpoints (io/checkpoint.h) -----------------------------------------------------------------
  // Saves every model (parameters, f32 master weights, AdamW moments) and a state JSON as
  // run_dir/step_<steps_done>: steps and optimizer steps done, the data position (next prompt of
  // the stream, as pass and index within it for a finite set), the KL controller, the running
  // score moments (absent in older checkpoints: they load with none), and the run's shapes (model
  // configs, value model, B/P/R, seed, prompt-set size). step() calls it with
  // output_dir/checkpoints every save_every steps.
  void save_checkpoint(const std::string& run_dir) override;
  // Restores a checkpoint (a run directory: its `latest`; or a step directory). The saved shapes
  // are checked against this run first: a mismatch is an error naming the field. Every sample
  // after it is a pure function of (seed, step), so the next step() continues the saved run
  // bit-exactly. A step directory of output_dir/checkpoints older than its `latest` becomes the
  // latest again (io::rewind_latest): the later steps are redone and saved over the old ones. The
  // constructor calls it when config.resume is set.
  void load_checkpoint(const std::string& path);

  // Steps 2-5 only (generate, score, rewards, advantages), for the given prompts (B of them) or,
  // with `responses`, for forced responses (no sampling; each response up to and including its
  // EOS, <= response_length). Updates nothing but the running score moments (normalize_scores):
  // each call counts as a step's batch for them; the KL controller moves in step() only.
  Experience make_experience(const std::vector<std::vector<int32_t>>& prompts,
                             const std::vector<std::vector<int32_t>>* responses = nullptr);

  // ---- weights from host vectors, by parameter name (missing names keep their values; unknown
  // names are errors; after a resume every call is an error: it would overwrite the checkpoint) ----
  // Policy and reference (the reference is the SFT policy); with value_init = policy also the
  // value model's trunk (score.weight stays fresh).
  void load_policy_weights(const HostWeights& weights);
  // The reward model (when there is one); with value_init = reward also the value model.
  void load_reward_weights(const HostWeights& weights);
  void load_reference_weights(const HostWeights& weights);
  void load_value_weights(const HostWeights& weights);  // the value model, or the policy's score head

  // ---- accessors ---------------------------------------------------------------------------------
  const PpoConfig& config() const override { return cfg_; }
  Backend& backend() { return *backend_; }
  Communicator& ranks() override { return *comm_; }
  const Arena& arena() const { return *arena_; }
  Transformer& policy() { return *policy_; }
  Transformer& reference() { return *reference_; }
  Transformer& reward_model();  // an error when a reward callback scores (no reward model)
  bool has_reward_model() const { return reward_ != nullptr; }
  // The value model, or the policy when the value head sits on its trunk; an error without a
  // critic (the critic-free estimators).
  Transformer& value_model();
  bool has_separate_value_model() const { return value_ != nullptr; }
  KlController& kl_controller() { return kl_; }
  const PromptSource& prompts() const { return prompts_; }
  int32_t eos_token_id() const { return eos_; }
  // The tokens that end a response: the EOS, then config.stop_token_ids.
  const std::vector<int32_t>& stop_token_ids() const { return stop_ids_; }
  bool is_stop(int32_t id) const;
  int64_t steps_done() const override { return progress_.steps_done; }
  int64_t optimizer_steps_done() const { return progress_.optimizer_steps_done; }
  const std::vector<MetricsRow>& metrics() const { return metrics_; }
  const PhaseTimes& last_phase_times() const { return times_; }
  ExperienceBuffers& buffers() { return *buffers_; }  // the run's experience region (ppo/experience.h)

 private:
  // The phases of step() (ppo/step.cpp), each timed into times_.
  std::vector<std::vector<int32_t>> next_prompts();
  Experience rollout(const std::vector<std::vector<int32_t>>& prompts,
                     const std::vector<std::vector<int32_t>>* responses);
  void score(Experience& exp);
  void add_rewards(Experience& exp);
  void add_advantages(Experience& exp);
  UpdateStats update(const Experience& exp);
  Transformer* critic();  // value_model(), or null without a critic
  std::map<std::string, Transformer*> checkpoint_models();
  nlohmann::json run_shapes() const;  // what a checkpoint must match to be resumed by this run
  void refuse_after_resume(const char* what) const;

  PpoConfig cfg_;
  TrainerOptions opt_;
  PromptSource prompts_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Communicator> comm_;  // the data-parallel ranks (after the backend: it uses its stream)
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<Transformer> policy_, reference_, reward_, value_;
  std::unique_ptr<ExperienceBuffers> buffers_;
  KlController kl_;
  RunningMoments score_moments_;  // of every score so far (normalize_scores)
  int32_t eos_ = -1;
  std::vector<int32_t> stop_ids_;
  RunProgress progress_;      // steps, optimizer steps, the next prompt of the stream (the data position)
  bool resumed_ = false;      // load_checkpoint ran: the load_*_weights calls would clobber it
  std::vector<MetricsRow> metrics_;
  PhaseTimes times_;
};

}  // namespace ppo
