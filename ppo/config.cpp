#include "ppo/config.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include "engine/error.h"
#include "io/hf_config.h"
#include "io/json_fields.h"
#include "models/config.h"

namespace ppo {

namespace {

using json = nlohmann::json;

// Name tables of the enum settings: the strings users write.
template <class E>
using NameTable = std::vector<std::pair<E, const char*>>;
const NameTable<Algorithm>& names(Algorithm) {
  static const NameTable<Algorithm> t{{Algorithm::Ppo, "ppo"}, {Algorithm::Grpo, "grpo"}, {Algorithm::Rloo, "rloo"},
                                      {Algorithm::ReinforcePP, "reinforce_pp"}, {Algorithm::Dpo, "dpo"}};
  return t;
}
const NameTable<AdvantageEstimator>& names(AdvantageEstimator) {
  static const NameTable<AdvantageEstimator> t{{AdvantageEstimator::Gae, "gae"}, {AdvantageEstimator::Grpo, "grpo"},
                                               {AdvantageEstimator::Rloo, "rloo"},
                                               {AdvantageEstimator::ReinforcePP, "reinforce_pp"}};
  return t;
}
const NameTable<LossAggMode>& names(LossAggMode) {
  static const NameTable<LossAggMode> t{{LossAggMode::TokenMean, "token-mean"},
                                        {LossAggMode::SeqMeanTokenSum, "seq-mean-token-sum"},
                                        {LossAggMode::SeqMeanTokenMean, "seq-mean-token-mean"}};
  return t;
}
const NameTable<DpoLoss>& names(DpoLoss) {
  static const NameTable<DpoLoss> t{{DpoLoss::Sigmoid, "sigmoid"}, {DpoLoss::Ipo, "ipo"}};
  return t;
}
const NameTable<DeviceChoice>& names(DeviceChoice) {
  static const NameTable<DeviceChoice> t{{DeviceChoice::Auto, "auto"}, {DeviceChoice::CPU, "cpu"}, {DeviceChoice::CUDA, "cuda"}};
  return t;
}
const NameTable<LrSchedule>& names(LrSchedule) {
  static const NameTable<LrSchedule> t{{LrSchedule::Constant, "constant"}, {LrSchedule::Linear, "linear"}, {LrSchedule::Cosine, "cosine"}};
  return t;
}
const NameTable<ValueModelKind>& names(ValueModelKind) {
  static const NameTable<ValueModelKind> t{{ValueModelKind::Separate, "separate"},
                                           {ValueModelKind::PolicyHead, "policy_head"},
                                           {ValueModelKind::None, "none"}};
  return t;
}
const NameTable<ValueInit>& names(ValueInit) {
  static const NameTable<ValueInit> t{{ValueInit::Reward, "reward"}, {ValueInit::Policy, "policy"}};
  return t;
}
const NameTable<KLEstimator>& names(KLEstimator) {
  static const NameTable<KLEstimator> t{{KLEstimator::K1, "k1"}, {KLEstimator::K2, "k2"}, {KLEstimator::K3, "k3"}};
  return t;
}

template <class E>
const char* enum_name(E v) {
  for (const auto& [e, n] : names(E{}))
    if (e == v) return n;
  return "?";
}

// Calls f(key, field) for every settable field, in declaration order. The one list of keys.
template <class Config, class F>
void visit_fields(Config& c, F&& f) {
  f("algorithm", c.algorithm);
  f("seed", c.seed);
  f("device", c.device);
  f("output_dir", c.output_dir);
  f("total_steps", c.total_steps);
  f("log_every", c.log_every);
  f("save_every", c.save_every);
  f("resume", c.resume);
  f("rollout_batch_size", c.rollout_batch_size);
  f("prompt_length", c.prompt_length);
  f("response_length", c.response_length);
  f("min_new_tokens", c.min_new_tokens);
  f("temperature", c.temperature);
  f("top_k", c.top_k);
  f("top_p", c.top_p);
  f("eos_token_id", c.eos_token_id);
  f("stop_token_ids", c.stop_token_ids);
  f("samples_per_prompt", c.samples_per_prompt);
  f("ppo_epochs", c.ppo_epochs);
  f("num_minibatches", c.num_minibatches);
  f("micro_batch_size", c.micro_batch_size);
  f("learning_rate", c.learning_rate);
  f("value_learning_rate", c.value_learning_rate);
  f("lr_warmup_steps", c.lr_warmup_steps);
  f("lr_schedule", c.lr_schedule);
  f("adam_beta1", c.adam_beta1);
  f("adam_beta2", c.adam_beta2);
  f("adam_eps", c.adam_eps);
  f("weight_decay", c.weight_decay);
  f("max_grad_norm", c.max_grad_norm);
  f("clip_eps", c.clip_eps);
  f("dual_clip", c.dual_clip);
  f("clip_value", c.clip_value);
  f("value_loss_coef", c.value_loss_coef);
  f("entropy_coef", c.entropy_coef);
  f("gamma", c.gamma);
  f("lam", c.lam);
  f("loss_agg_mode", c.loss_agg_mode);
  f("advantage_estimator", c.advantage_estimator);
  f("norm_adv_by_std_in_grpo", c.norm_adv_by_std_in_grpo);
  f("kl_coef", c.kl_coef);
  f("kl_estimator", c.kl_estimator);
  f("kl_in_reward", c.kl_in_reward);
  f("adaptive_kl", c.adaptive_kl);
  f("kl_target", c.kl_target);
  f("kl_horizon", c.kl_horizon);
  f("whiten_advantages", c.whiten_advantages);
  f("whiten_rewards", c.whiten_rewards);
  f("normalize_scores", c.normalize_scores);
  f("reward_clip", c.reward_clip);
  f("missing_eos_penalty", c.missing_eos_penalty);
  f("dpo_beta", c.dpo_beta);
  f("dpo_label_smoothing", c.dpo_label_smoothing);
  f("dpo_loss", c.dpo_loss);
  f("preferences", c.preferences);
  f("value_model", c.value_model);
  f("value_init", c.value_init);
  f("policy", c.policy);
  f("reward", c.reward);
  f("policy_checkpoint", c.policy_checkpoint);
  f("reward_checkpoint", c.reward_checkpoint);
  f("prompts", c.prompts);
  f("tokenizer", c.tokenizer);
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& source) {
  PPO_FAIL(source, ": unknown key '", key, "'; did you mean '", nearest(key, PpoConfig::keys()), "'?");
}

// ---- text -> typed value (for --set) ----------------------------------------------------------------

void parse_text(const std::string& where, const std::string& text, bool& out) {
  if (text == "true" || text == "1") out = true;
  else if (text == "false" || text == "0") out = false;
  else PPO_FAIL(where, ": expected true or false");
}
void parse_text(const std::string& where, const std::string& text, std::string& out) {
  PPO_ASSERT(!text.empty(), where, ": empty value");
  out = text;
}
void parse_text(const std::string& where, const std::string& text, json& out) {
  const json parsed = io::parse_json_or_string(text, where);
  PPO_ASSERT(parsed.is_object(), where, ": expected a JSON object (or one member: name.member=value)");
  out = parsed;
}

// A float setting from a double: finite and within float range (a larger value would not convert).
template <class T>
T finite_float(const std::string& where, double v) {
  PPO_ASSERT(std::isfinite(v) && std::fabs(v) <= double(std::numeric_limits<T>::max()), where,
             ": expected a finite number, got ", v);
  return T(v);
}
template <class T>
void parse_text(const std::string& where, const std::string& text, T& out) {
  if constexpr (std::is_enum_v<T>) {
    std::string valid;
    for (const auto& [e, n] : names(T{})) {
      if (text == n) {
        out = e;
        return;
      }
      valid += std::string(valid.empty() ? "" : " | ") + n;
    }
    PPO_FAIL(where, ": expected one of ", valid);
  } else {
    // Whole-string numeric parse: "3e-6" is fine, "3e-6x", "" and "1.5" for an integer are not.
    const char* begin = text.c_str();
    char* end = nullptr;
    errno = 0;
    if constexpr (std::is_floating_point_v<T>) {
      const double v = std::strtod(begin, &end);
      PPO_ASSERT(!text.empty() && *end == '\0' && errno == 0, where, ": expected a finite number");
      out = finite_float<T>(where, v);
    } else if constexpr (std::is_unsigned_v<T>) {
      const unsigned long long v = std::strtoull(begin, &end, 10);
      PPO_ASSERT(!text.empty() && text[0] != '-' && *end == '\0' && errno == 0, where,
                 ": expected a non-negative integer");
      out = T(v);
    } else {
      const long long v = std::strtoll(begin, &end, 10);
      PPO_ASSERT(!text.empty() && *end == '\0' && errno == 0, where, ": expected an integer");
      out = T(v);
    }
  }
}

}  // namespace

// ---- JSON value -> typed value ----------------------------------------------------------------------

template <class T>
void setting_from_json(const std::string& where, const json& j, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    PPO_ASSERT(j.is_boolean(), where, ": expected true or false, got ", io::excerpt(j));
    out = j.get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    PPO_ASSERT(j.is_string(), where, ": expected a string, got ", io::excerpt(j));
    out = j.get<std::string>();
  } else if constexpr (std::is_same_v<T, json>) {
    PPO_ASSERT(j.is_object(), where, ": expected a JSON object, got ", io::excerpt(j));
    out = j;
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    PPO_ASSERT(j.is_array(), where, ": expected a list of token ids, got ", io::excerpt(j));
    out.clear();
    for (const json& e : j) {
      PPO_ASSERT(io::is_int_in(e, {0, kMaxVocabSize - 1}), where,
                 ": expected token ids below ", kMaxVocabSize, ", got ", io::excerpt(j));
      out.push_back(e.get<int64_t>());
    }
  } else if constexpr (std::is_enum_v<T>) {
    PPO_ASSERT(j.is_string(), where, ": expected a name in quotes, got ", io::excerpt(j));
    parse_text(where, j.get<std::string>(), out);
  } else if constexpr (std::is_floating_point_v<T>) {
    PPO_ASSERT(j.is_number(), where, ": expected a number, got ", io::excerpt(j));
    out = finite_float<T>(where, j.get<double>());
  } else if constexpr (std::is_unsigned_v<T>) {
    PPO_ASSERT(j.is_number_unsigned(), where, ": expected a non-negative integer, got ", io::excerpt(j));
    out = j.get<T>();
  } else {
    PPO_ASSERT(io::is_int_in(j, {INT64_MIN, INT64_MAX}), where, ": expected an integer of 64 bits, got ", io::excerpt(j));
    out = j.get<T>();
  }
}

template void setting_from_json(const std::string&, const json&, int64_t&);
template void setting_from_json(const std::string&, const json&, float&);
template void setting_from_json(const std::string&, const json&, double&);
template void setting_from_json(const std::string&, const json&, bool&);

namespace {

// Token ids from --set: a JSON list, or one id.
void parse_text(const std::string& where, const std::string& text, std::vector<int64_t>& out) {
  const json parsed = io::parse_json_or_string(text, where);
  setting_from_json(where, parsed.is_array() ? parsed : json::array({parsed}), out);
}

template <class T>
json to_json_value(const T& v) {
  if constexpr (std::is_enum_v<T>) return enum_name(v);
  else return v;
}

// Whole-range checks: each names its key and the rule.
void check_positive(const char* key, double v) { PPO_ASSERT(v > 0, "config ", key, " = ", v, ": must be > 0"); }
void check_non_negative(const char* key, double v) { PPO_ASSERT(v >= 0, "config ", key, " = ", v, ": must be >= 0"); }
void check_unit(const char* key, double v, bool open_low, bool open_high) {
  const bool ok = (open_low ? v > 0 : v >= 0) && (open_high ? v < 1 : v <= 1);
  PPO_ASSERT(ok, "config ", key, " = ", v, ": must lie in ", open_low ? "(" : "[", "0, 1", open_high ? ")" : "]");
}

}  // namespace

void check_setting_range(const char* key, int64_t v, int64_t lo, int64_t hi) {
  PPO_ASSERT(v >= lo && v <= hi, "config ", key, " = ", v, ": must lie in [", lo, ", ", hi, "]");
}

const char* to_string(Algorithm v) { return enum_name(v); }
const char* to_string(AdvantageEstimator v) { return enum_name(v); }
const char* to_string(LossAggMode v) { return enum_name(v); }
const char* to_string(DpoLoss v) { return enum_name(v); }
const char* to_string(DeviceChoice v) { return enum_name(v); }
const char* to_string(LrSchedule v) { return enum_name(v); }
const char* to_string(ValueModelKind v) { return enum_name(v); }
const char* to_string(ValueInit v) { return enum_name(v); }
const char* to_string(KLEstimator v) { return enum_name(v); }

std::vector<std::string> PpoConfig::keys() {
  std::vector<std::string> k;
  PpoConfig c;
  visit_fields(c, [&](const char* key, auto&) { k.push_back(key); });
  return k;
}

json PpoConfig::to_json() const {
  json j = json::object();
  visit_fields(*this, [&](const char* key, const auto& field) { j[key] = to_json_value(field); });
  return j;
}

void PpoConfig::update_from_json(const json& j, const std::string& source) {
  PPO_ASSERT(j.is_object(), source, ": expected a JSON object at the top level");
  for (const auto& item : j.items()) {  // no structured binding: lambdas capture it only from C++20
    const std::string& key = item.key();
    const json& value = item.value();
    bool found = false;
    visit_fields(*this, [&](const char* name, auto& field) {
      if (key != name) return;
      setting_from_json(source + ": key '" + key + "'", value, field);
      found = true;
    });
    if (!found) unknown_key(key, source);
  }
}

void PpoConfig::apply_override(const std::string& assignment) {
  const size_t eq = assignment.find('=');
  PPO_ASSERT(eq != std::string::npos && eq > 0, "--set ", assignment, ": expected key=value");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  const size_t bad = io::first_invalid_utf8(assignment);
  PPO_ASSERT(bad == std::string::npos, "--set ", key.substr(0, std::min(eq, bad)), ": invalid UTF-8 at byte offset ", bad);
  // policy.n_layer=4: one member of a model config.
  const size_t dot = key.find('.');
  if (dot != std::string::npos) {
    const std::string model = key.substr(0, dot), member = key.substr(dot + 1);
    if (model != "policy" && model != "reward") unknown_key(model, "--set " + assignment);
    PPO_ASSERT(!member.empty(), "--set ", assignment, ": empty member name after '", model, ".'");
    json& target = model == "policy" ? policy : reward;
    target[member] = io::parse_json_or_string(text, "--set " + assignment);
    return;
  }
  bool found = false;
  visit_fields(*this, [&](const char* name, auto& field) {
    if (key != name) return;
    parse_text("--set " + assignment, text, field);
    found = true;
  });
  if (!found) unknown_key(key, "--set " + assignment);
}

namespace {

// `model` (the config's "policy" or "reward") from a Hugging Face checkpoint's config.json; members
// given as well must agree with it (derive() may run again on a derived config).
void adopt_checkpoint_config(const char* key, const std::string& dir, Heads heads, const char* model_key,
                                          json& model) {
  const io::HfModelConfig h = io::read_hf_config(dir);
  PPO_ASSERT(h.heads == heads, "config ", key, " = '", dir, "': ", h.architecture, " is not ",
             heads == Heads::LM ? "a causal language model" : "a sequence classifier (a reward model)");
  const json from_file = h.config.to_json();
  PPO_ASSERT(model.is_object(), "config ", model_key, " must be a JSON object");
  for (const auto& [member, value] : model.items())
    PPO_ASSERT(from_file.contains(member) && from_file.at(member) == value, "config ", model_key, ".", member, " = ",
               io::excerpt(value), " disagrees with ", key, " '", dir, "' (",
               from_file.contains(member) ? io::excerpt(from_file.at(member)) : "no such field", "); leave ", model_key, " out");
  model = from_file;
}

}  // namespace

void PpoConfig::set_algorithm(Algorithm a) {
  // The table of config.h, a row per algorithm of the RL loop (dpo leaves these keys as they are).
  struct Defaults {
    Algorithm algorithm;
    AdvantageEstimator estimator;
    int64_t samples_per_prompt;
    bool kl_in_reward;
    KLEstimator kl_estimator;
    bool whiten_advantages;
    LossAggMode loss_agg_mode;
  };
  static const Defaults table[] = {
      {Algorithm::Ppo, AdvantageEstimator::Gae, 1, true, KLEstimator::K1, true, LossAggMode::TokenMean},
      {Algorithm::Grpo, AdvantageEstimator::Grpo, 4, false, KLEstimator::K3, false, LossAggMode::SeqMeanTokenMean},
      {Algorithm::Rloo, AdvantageEstimator::Rloo, 4, true, KLEstimator::K1, false, LossAggMode::TokenMean},
      {Algorithm::ReinforcePP, AdvantageEstimator::ReinforcePP, 1, true, KLEstimator::K1, true, LossAggMode::TokenMean}};
  algorithm = a;
  for (const Defaults& d : table) {
    if (d.algorithm != a) continue;
    advantage_estimator = d.estimator;
    samples_per_prompt = d.samples_per_prompt;
    kl_in_reward = d.kl_in_reward;
    kl_estimator = d.kl_estimator;
    whiten_advantages = d.whiten_advantages;
    loss_agg_mode = d.loss_agg_mode;
  }
  if (advantage_estimator == AdvantageEstimator::Gae && value_model == ValueModelKind::None)
    value_model = ValueModelKind::Separate;  // a derived critic-free config back to one with a critic
}

void PpoConfig::derive() {
  check_setting_range("total_steps", total_steps, 1, kMaxSteps);
  check_setting_range("log_every", log_every, 1, kMaxSteps);
  check_setting_range("save_every", save_every, 0, kMaxSteps);
  check_setting_range("rollout_batch_size", rollout_batch_size, 1, kMaxRolloutBatch);
  check_setting_range("prompt_length", prompt_length, 1, kMaxTokens);
  check_setting_range("response_length", response_length, 1, kMaxTokens);
  check_setting_range("min_new_tokens (at most response_length)", min_new_tokens, 0, response_length);
  check_positive("temperature", temperature);
  check_setting_range("top_k", top_k, 0, kMaxVocabSize);
  check_unit("top_p", top_p, /*open_low=*/true, /*open_high=*/false);
  check_setting_range("eos_token_id (a token id, or -1: from the model)", eos_token_id, -1, kMaxVocabSize - 1);
  check_setting_range("ppo_epochs", ppo_epochs, 1, kMaxEpochs);
  check_setting_range("num_minibatches", num_minibatches, 1, rollout_batch_size);
  check_setting_range("micro_batch_size", micro_batch_size, 1, rollout_batch_size);
  PPO_ASSERT(rollout_batch_size % num_minibatches == 0, "config num_minibatches = ", num_minibatches,
             ": must divide rollout_batch_size (", rollout_batch_size, ")");
  minibatch_size = rollout_batch_size / num_minibatches;
  PPO_ASSERT(minibatch_size % micro_batch_size == 0, "config micro_batch_size = ", micro_batch_size,
             ": must divide the minibatch size rollout_batch_size / num_minibatches = ", minibatch_size);
  grad_accum_steps = minibatch_size / micro_batch_size;
  check_positive("learning_rate", learning_rate);
  check_positive("value_learning_rate", value_learning_rate);
  check_setting_range("lr_warmup_steps", lr_warmup_steps, 0, kMaxOptimizerSteps);
  check_unit("adam_beta1", adam_beta1, false, true);
  check_unit("adam_beta2", adam_beta2, false, true);
  check_positive("adam_eps", adam_eps);
  check_non_negative("weight_decay", weight_decay);
  check_non_negative("max_grad_norm", max_grad_norm);
  check_positive("clip_eps", clip_eps);
  PPO_ASSERT(dual_clip == 0 || dual_clip > 1, "config dual_clip = ", dual_clip, ": must be 0 (off) or > 1");
  check_positive("clip_value", clip_value);
  check_non_negative("value_loss_coef", value_loss_coef);
  check_non_negative("entropy_coef", entropy_coef);
  check_unit("gamma", gamma, false, false);
  check_unit("lam", lam, false, false);
  check_non_negative("kl_coef", kl_coef);
  check_setting_range("samples_per_prompt", samples_per_prompt, 1, rollout_batch_size);
  PPO_ASSERT(rollout_batch_size % samples_per_prompt == 0, "config samples_per_prompt = ", samples_per_prompt,
             ": must divide rollout_batch_size (", rollout_batch_size, ")");
  const bool group = advantage_estimator == AdvantageEstimator::Grpo || advantage_estimator == AdvantageEstimator::Rloo;
  PPO_ASSERT(!group || samples_per_prompt >= 2, "config advantage_estimator = ", to_string(advantage_estimator),
             ": the baseline is the other responses to the same prompt; set samples_per_prompt >= 2 (is ",
             samples_per_prompt, ")");
  prompts_per_step = rollout_batch_size / samples_per_prompt;
  if (advantage_estimator != AdvantageEstimator::Gae) value_model = ValueModelKind::None;  // critic-free
  PPO_ASSERT(advantage_estimator != AdvantageEstimator::Gae || value_model != ValueModelKind::None,
             "config value_model = none: advantage_estimator gae needs a critic (separate or policy_head)");
  check_positive("kl_target", kl_target);
  check_positive("kl_horizon", kl_horizon);
  check_non_negative("reward_clip", reward_clip);
  check_non_negative("missing_eos_penalty", missing_eos_penalty);
  if (!policy_checkpoint.empty()) {
    adopt_checkpoint_config("policy_checkpoint", policy_checkpoint, Heads::LM, "policy", policy);
    if (eos_token_id < 0) {
      const std::vector<int64_t> ids = io::checkpoint_eos_token_ids(policy_checkpoint);
      PPO_ASSERT(!ids.empty(), "config policy_checkpoint = '", policy_checkpoint,
                 "': neither its config.json nor its generation_config.json names an eos_token_id; set eos_token_id");
      eos_token_id = ids[0];
      if (stop_token_ids.empty()) stop_token_ids.assign(ids.begin() + 1, ids.end());
    }
  }
  if (!reward_checkpoint.empty()) adopt_checkpoint_config("reward_checkpoint", reward_checkpoint, Heads::Scalar, "reward", reward);
  PPO_ASSERT(prompts.empty() || !tokenizer.empty() || !policy_checkpoint.empty(), "config prompts = '", prompts,
             "': set tokenizer (or policy_checkpoint, whose directory holds tokenizer.json)");
  PPO_ASSERT(preferences.empty() || !tokenizer.empty() || !policy_checkpoint.empty(), "config preferences = '",
             preferences, "': set tokenizer (or policy_checkpoint, whose directory holds tokenizer.json)");
  if ((!prompts.empty() || !preferences.empty()) && tokenizer.empty()) tokenizer = policy_checkpoint;
  check_positive("dpo_beta", dpo_beta);
  PPO_ASSERT(dpo_label_smoothing >= 0 && dpo_label_smoothing < 0.5, "config dpo_label_smoothing = ",
             dpo_label_smoothing, ": must lie in [0, 0.5)");
  optimizer_steps_per_step = algorithm == Algorithm::Dpo ? 1 : ppo_epochs * num_minibatches;
  total_optimizer_steps = total_steps * optimizer_steps_per_step;
  sequence_length = prompt_length + response_length;
}

double PpoConfig::lr_factor(int64_t optimizer_step) const {
  if (optimizer_step < lr_warmup_steps) return double(optimizer_step + 1) / double(lr_warmup_steps + 1);
  const int64_t decay_steps = std::max<int64_t>(1, total_optimizer_steps - lr_warmup_steps);
  const double progress = std::min(1.0, double(optimizer_step - lr_warmup_steps) / double(decay_steps));
  switch (lr_schedule) {
    case LrSchedule::Constant: return 1.0;
    case LrSchedule::Linear: return 1.0 - progress;
    case LrSchedule::Cosine: return 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return 1.0;
}

void apply_named_algorithm(PpoConfig& c, const json& file, const std::vector<std::string>& overrides) {
  std::optional<std::string> name;
  if (file.is_object() && file.contains("algorithm") && file["algorithm"].is_string())
    name = file["algorithm"].get<std::string>();
  for (const std::string& o : overrides)
    if (o.rfind("algorithm=", 0) == 0) name = o.substr(std::string("algorithm=").size());
  if (!name) return;
  Algorithm a = c.algorithm;
  parse_text("algorithm = " + *name, *name, a);
  c.set_algorithm(a);
}

PpoConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  PpoConfig c;
  json j = json::object();
  if (!path.empty()) {
    j = io::read_json_file(path, io::JsonComments::Allowed);
  }
  apply_named_algorithm(c, j, overrides);
  if (!path.empty()) c.update_from_json(j, path);
  for (const std::string& o : overrides) c.apply_override(o);
  c.derive();
  return c;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  // One row of the Wagner-Fischer table at a time.
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string nearest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) best = c, best_d = d;
  }
  return best;
}

}  // namespace ppo
