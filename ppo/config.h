// The PPO run configuration: one documented struct (cleanRL's style), read from JSON, changed by
// `--set key=value`, with the sizes derived from it computed in one place (derive()).
// Defaults follow TRL's PPOConfig and OpenRLHF where they agree on a value; the comment names the
// source where they differ.
//
// Batch legend: B = rollout_batch_size sequences per PPO step, P = prompt_length, R =
// response_length, T = P + R. One step: B rollouts -> ppo_epochs passes over num_minibatches
// minibatches of minibatch_size sequences, each accumulated over micro_batch_size slices.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "kernels/backend.h"

namespace ppo {

// Upper bounds of the integer keys: far beyond any run, and small enough that products of them
// (tokens per batch, optimizer steps of a run) cannot overflow. Token ids lie below kMaxVocabSize.
constexpr int64_t kMaxRolloutBatch = int64_t(1) << 20;  // rollout_batch_size (so also the minibatch and micro-batch)
constexpr int64_t kMaxTokens = int64_t(1) << 20;        // prompt_length, response_length
constexpr int64_t kMaxEpochs = int64_t(1) << 10;        // ppo_epochs
constexpr int64_t kMaxSteps = int64_t(1) << 31;         // total_steps, log_every, save_every
constexpr int64_t kMaxOptimizerSteps = kMaxSteps * kMaxEpochs * kMaxRolloutBatch;  // lr_warmup_steps

// What trains: the on-policy RL loop with one advantage estimator (ppo, grpo, rloo, reinforce_pp)
// or DPO on preference pairs. set_algorithm applies an algorithm's defaults (the table below).
enum class Algorithm : uint8_t { Ppo, Grpo, Rloo, ReinforcePP, Dpo };
// How step 5 turns rewards into advantages (ppo/advantages.h); only gae needs a critic.
enum class AdvantageEstimator : uint8_t { Gae, Grpo, Rloo, ReinforcePP };
// How per-token losses become a minibatch's loss (veRL's loss_agg_mode names).
enum class LossAggMode : uint8_t { TokenMean, SeqMeanTokenSum, SeqMeanTokenMean };
// The DPO loss of a pair (ppo/dpo.h): Rafailov et al.'s sigmoid, or Azar et al.'s IPO square.
enum class DpoLoss : uint8_t { Sigmoid, Ipo };
enum class DeviceChoice : uint8_t { Auto, CPU, CUDA };
enum class LrSchedule : uint8_t { Constant, Linear, Cosine };
// Where values come from: a separate value model, a scalar head on the policy trunk, or nowhere
// (the critic-free estimators: derive() sets none for them).
enum class ValueModelKind : uint8_t { Separate, PolicyHead, None };
// What a separate value model starts from: the reward model (TRL) or the SFT policy with a fresh
// scalar head (the textbook choice).
enum class ValueInit : uint8_t { Reward, Policy };

// The algorithms' defaults (set_algorithm; load_config applies the one a config names before its
// keys, so explicit keys win). Every algorithm uses the PPO clipped surrogate of ppo/update.h.
//
//   algorithm     advantage_estimator  samples_per_prompt  KL (kl_in_reward, estimator)  whiten  loss_agg_mode
//   ppo           gae (value model)    1                   reward, k1                    yes     token-mean
//   grpo          grpo                 4                   loss, k3                      no      seq-mean-token-mean
//   rloo          rloo                 4                   reward, k1                    no      token-mean
//   reinforce_pp  reinforce_pp         1                   reward, k1                    yes     token-mean
//   dpo           (ppo/dpo.h: no rollouts, no reward model)
//
// Dr. GRPO (Liu et al. 2025): algorithm grpo with norm_adv_by_std_in_grpo = false and loss_agg_mode =
// seq-mean-token-sum. Sources: GRPO, Shao et al. 2024 (DeepSeekMath) eq. 3 and 4.1.2; RLOO,
// Ahmadian et al. 2024; REINFORCE++, Hu 2025; DPO, Rafailov et al. 2023; IPO, Azar et al. 2023; the
// option names are veRL's and TRL's.
struct PpoConfig {
  // ---- run ----------------------------------------------------------------------------------------
  Algorithm algorithm = Algorithm::Ppo;  // ppo | grpo | rloo | reinforce_pp | dpo (see the table above)
  uint64_t seed = 1;                    // seeds prompts order, sampling, initialisation of fresh heads
  DeviceChoice device = DeviceChoice::Auto;  // "auto": cuda when a GPU answers, else cpu
  std::string output_dir = "runs/ppo";  // metrics.jsonl, plots, checkpoints
  int64_t total_steps = 200;            // PPO steps (each: one rollout batch + its updates)
  int64_t log_every = 1;                // metrics row and progress line every this many steps
  int64_t save_every = 0;               // checkpoint to output_dir/checkpoints every this many steps (0 = off)
  std::string resume;                   // checkpoint run directory (its latest) or step directory to continue; "" = fresh

  // ---- rollout ------------------------------------------------------------------------------------
  int64_t rollout_batch_size = 64;  // B: prompts (one response each) per PPO step
  int64_t prompt_length = 64;       // P: prompts are left-padded (or rejected) to this many tokens
  int64_t response_length = 53;     // R: max new tokens per response (TRL: 53)
  int64_t min_new_tokens = 0;       // EOS is not sampled before this many new tokens
  float temperature = 0.7f;         // sampling temperature; log-probs use logits / temperature (TRL: 0.7)
  int64_t top_k = 0;                // keep the k most probable tokens when sampling (0 = off)
  float top_p = 1.0f;               // nucleus sampling mass in (0, 1] (1 = off)
  int64_t eos_token_id = -1;        // stop token (it also pads); -1: from policy_checkpoint (config.json,
                                    // else generation_config.json), else the demo's <eos> or the last id
  std::vector<int64_t> stop_token_ids;  // more stop tokens (e.g. Llama 3's <|eot_id|>; 15 at most); when
                                        // empty and eos_token_id is -1: the rest of policy_checkpoint's list

  int64_t samples_per_prompt = 1;   // G: responses per prompt; B / G prompts per step, the G rows of one
                                    // prompt kept together (a group: the baseline of grpo and rloo)

  // ---- update -------------------------------------------------------------------------------------
  int64_t ppo_epochs = 4;           // passes over the rollout batch per step (TRL num_ppo_epochs)
  int64_t num_minibatches = 1;      // optimizer steps per epoch (TRL num_mini_batches)
  int64_t micro_batch_size = 8;     // sequences per forward/backward; gradients accumulate to a minibatch
  float learning_rate = 3e-6f;      // policy AdamW learning rate (TRL example: 3e-6)
  float value_learning_rate = 9e-6f;  // value AdamW learning rate (OpenRLHF critic: 9e-6)
  int64_t lr_warmup_steps = 0;      // linear warmup, in optimizer steps
  LrSchedule lr_schedule = LrSchedule::Linear;  // after warmup: constant | linear to 0 | cosine to 0
  float adam_beta1 = 0.9f;          // AdamW beta1
  float adam_beta2 = 0.999f;        // AdamW beta2
  float adam_eps = 1e-8f;           // AdamW epsilon
  float weight_decay = 0.0f;        // AdamW decoupled weight decay
  float max_grad_norm = 1.0f;       // global gradient-norm clip per model (0 = off)

  // ---- losses -------------------------------------------------------------------------------------
  float clip_eps = 0.2f;            // policy ratio clip: ratio in [1 - clip_eps, 1 + clip_eps]
  float dual_clip = 0.0f;           // dual-clip bound c > 1 for negative advantages (0 = off; Ye et al. use 3)
  float clip_value = 0.2f;          // value clip around the rollout values (TRL cliprange_value)
  float value_loss_coef = 0.1f;     // weight of the value loss (TRL vf_coef)
  float entropy_coef = 0.0f;        // weight of the entropy bonus (0 = off)
  float gamma = 1.0f;               // discount
  float lam = 0.95f;                // GAE lambda
  LossAggMode loss_agg_mode = LossAggMode::TokenMean;  // token-mean: over the minibatch's valid tokens;
                                    // seq-mean-token-sum: sum per sequence, mean over sequences (Dr. GRPO);
                                    // seq-mean-token-mean: mean per sequence, then over sequences (GRPO)

  // ---- advantages ----------------------------------------------------------------------------------
  AdvantageEstimator advantage_estimator = AdvantageEstimator::Gae;  // gae | grpo | rloo | reinforce_pp
  bool norm_adv_by_std_in_grpo = true;  // grpo: divide by the group's std (false: Dr. GRPO, Liu et al. 2025)

  // ---- KL and reward shaping ------------------------------------------------------------------------
  float kl_coef = 0.05f;            // initial KL coefficient beta (TRL: 0.05)
  KLEstimator kl_estimator = KLEstimator::K1;  // per-token KL estimator: k1 | k2 | k3 (Schulman's)
  bool kl_in_reward = true;         // true: -beta*KL folded into per-token rewards; false: beta*KL added to the loss
  bool adaptive_kl = false;         // Ziegler et al. 2019 adaptive beta (else fixed)
  float kl_target = 6.0f;           // adaptive: target KL per sequence (nats)
  float kl_horizon = 10000.0f;      // adaptive: horizon, in sequences
  bool whiten_advantages = true;    // advantages to zero mean, unit variance over valid tokens
  bool whiten_rewards = false;      // rewards scaled to unit variance over valid tokens (mean kept, TRL)
  bool normalize_scores = false;    // scores -> (score - mean) / std over every score so far, this batch
                                    // included (running statistics; TRL use_score_scaling + use_score_norm)
  float reward_clip = 10.0f;        // scores clipped to [-reward_clip, reward_clip] after normalization
                                    // (0 = off; OpenRLHF: 10)
  float missing_eos_penalty = 0.0f; // subtracted from the score of a response with no EOS (0 = off)

  // ---- DPO (algorithm dpo, ppo/dpo.h): rollout_batch_size pairs per optimizer step, micro_batch_size
  //      pairs (2x rows) per forward, total_steps optimizer steps; the learning-rate and AdamW keys above
  float dpo_beta = 0.1f;            // beta: the implicit reward's scale (TRL: 0.1)
  float dpo_label_smoothing = 0.0f; // sigmoid loss: the assumed share of flipped labels, in [0, 0.5) (cDPO)
  DpoLoss dpo_loss = DpoLoss::Sigmoid;  // sigmoid | ipo
  std::string preferences;          // JSONL pairs {"prompt"|"messages", "chosen", "rejected"} (real models;
                                    // the demo uses its own pairs)

  // ---- models ---------------------------------------------------------------------------------------
  ValueModelKind value_model = ValueModelKind::Separate;  // separate | policy_head | none (no critic: the
                                                          // critic-free estimators; derive() sets it)
  ValueInit value_init = ValueInit::Reward;               // separate value model starts from: reward | policy
  nlohmann::json policy = nlohmann::json::object();       // policy model config (parsed by models/)
  nlohmann::json reward = nlohmann::json::object();       // reward model config (parsed by models/)

  // ---- models and data from files (a run on real checkpoints; all "" = the built-in demo task) ------
  std::string policy_checkpoint;  // Hugging Face directory (io/hf_checkpoint.h): policy and reference start
                                  // from it; its config.json gives `policy` (and the EOS, see eos_token_id)
  std::string reward_checkpoint;  // Hugging Face *ForSequenceClassification directory: the reward model (and
                                  // the value model with value_init = reward); its config.json gives `reward`
  std::string prompts;            // JSONL prompt set: {"prompt": ...} or chat {"messages": [...]} (io/jsonl.h)
  std::string tokenizer;          // tokenizer.json or a GPT-2 vocabulary directory; "" = policy_checkpoint

  // ---- derived by derive(); not settable ---------------------------------------------------------------
  int64_t minibatch_size = 0;           // B / num_minibatches sequences per optimizer step
  int64_t grad_accum_steps = 0;         // minibatch_size / micro_batch_size micro-batches per optimizer step
  int64_t optimizer_steps_per_step = 0;  // ppo_epochs * num_minibatches
  int64_t total_optimizer_steps = 0;    // total_steps * optimizer_steps_per_step (the lr schedule's length)
  int64_t sequence_length = 0;          // T = prompt_length + response_length
  int64_t prompts_per_step = 0;         // B / samples_per_prompt

  // The algorithm and its defaults (the table above): advantage_estimator, samples_per_prompt,
  // kl_in_reward, kl_estimator, whiten_advantages, loss_agg_mode.
  void set_algorithm(Algorithm a);
  // Whether the run trains a value model (or head): gae does, the other estimators do not.
  bool has_critic() const { return value_model != ValueModelKind::None; }

  // Checks every value (errors name the key) and computes the derived sizes; reads the config.json of
  // policy_checkpoint / reward_checkpoint into `policy` / `reward` (a model config given as well must
  // agree with it).
  void derive();
  // `key=value` from --set. Numbers, booleans (true/false/1/0) and names parse strictly for the
  // key's type; `policy.key=value` / `reward.key=value` set a member of the model config (the
  // value is JSON when it parses, else a string). Unknown keys suggest the nearest valid one.
  void apply_override(const std::string& assignment);
  // The settable keys as JSON (derived sizes are left out).
  nlohmann::json to_json() const;
  // Sets the keys present in `j` (others keep their values); `source` names j in errors.
  void update_from_json(const nlohmann::json& j, const std::string& source = "config");
  // The settable key names, in declaration order.
  static std::vector<std::string> keys();
  // Learning rate multiplier in [0, 1] at a 0-based optimizer step (warmup, then the schedule).
  double lr_factor(int64_t optimizer_step) const;
};

// One setting from a JSON value, strictly by the setting's type: an integer must be an integer of
// 64 bits, a float a finite number in float range, a bool true or false; errors name `where`.
// Defined for int64_t, float, double and bool (and used for every PpoConfig key).
template <class T>
void setting_from_json(const std::string& where, const nlohmann::json& j, T& out);

// Fails with "config <key> = <value>: must lie in [lo, hi]" unless lo <= value <= hi.
void check_setting_range(const char* key, int64_t value, int64_t lo, int64_t hi);

// Defaults, the defaults of the algorithm the JSON file or a --set names (the last --set wins), then
// the JSON file (if any), then each --set, then derive().
PpoConfig load_config(const std::string& path, const std::vector<std::string>& overrides);
// The algorithm step of load_config, for configs with more sections (the demo's): set_algorithm of
// `file`'s "algorithm" or the last --set algorithm=..., when either names one.
void apply_named_algorithm(PpoConfig& config, const nlohmann::json& file, const std::vector<std::string>& overrides);

// Levenshtein distance and the nearest candidate (for "did you mean ...?").
size_t edit_distance(const std::string& a, const std::string& b);
std::string nearest(const std::string& word, const std::vector<std::string>& candidates);

const char* to_string(Algorithm v);
const char* to_string(AdvantageEstimator v);
const char* to_string(LossAggMode v);
const char* to_string(DpoLoss v);
const char* to_string(DeviceChoice v);
const char* to_string(LrSchedule v);
const char* to_string(ValueModelKind v);
const char* to_string(ValueInit v);
const char* to_string(KLEstimator v);

}  // namespace ppo
