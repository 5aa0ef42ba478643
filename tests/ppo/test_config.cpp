// PpoConfig: defaults, JSON round trip, --set typed parsing, unknown keys, invalid values, derived
// sizes and the learning-rate schedule.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include "engine/error.h"
#include "ppo/config.h"

using namespace ppo;

// The message of the ppo::Error that f throws ("" when it throws none).
template <class F>
static std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

static bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST_CASE("defaults are valid and derive the sizes") {
  PpoConfig c;
  c.derive();
  CHECK(c.minibatch_size == c.rollout_batch_size / c.num_minibatches);
  CHECK(c.grad_accum_steps * c.micro_batch_size == c.minibatch_size);
  CHECK(c.sequence_length == c.prompt_length + c.response_length);
}

TEST_CASE("derived sizes for a 48 x 3 minibatches x micro 4 run") {
  PpoConfig c;
  c.rollout_batch_size = 48, c.num_minibatches = 3, c.micro_batch_size = 4, c.ppo_epochs = 2, c.total_steps = 10;
  c.prompt_length = 7, c.response_length = 9;
  c.derive();
  CHECK(c.minibatch_size == 16);
  CHECK(c.grad_accum_steps == 4);
  CHECK(c.optimizer_steps_per_step == 6);
  CHECK(c.total_optimizer_steps == 60);
  CHECK(c.sequence_length == 16);
}

TEST_CASE("--set parses by the key's type") {
  PpoConfig c;
  c.apply_override("learning_rate=3e-5");
  c.apply_override("rollout_batch_size=12");
  c.apply_override("whiten_rewards=true");
  c.apply_override("kl_in_reward=0");
  c.apply_override("kl_estimator=k3");
  c.apply_override("lr_schedule=cosine");
  c.apply_override("device=cpu");
  c.apply_override("value_model=policy_head");
  c.apply_override("output_dir=runs/x=1");  // only the first '=' splits
  c.apply_override("seed=18446744073709551615");
  c.apply_override("policy.n_layer=2");
  c.apply_override("policy.family=gpt2");
  c.apply_override("reward={\"n_embd\": 32}");
  c.apply_override("stop_token_ids=[128008, 128009]");
  CHECK(c.learning_rate == doctest::Approx(3e-5f));
  CHECK(c.rollout_batch_size == 12);
  CHECK(c.whiten_rewards);
  CHECK_FALSE(c.kl_in_reward);
  CHECK(c.kl_estimator == KLEstimator::K3);
  CHECK(c.lr_schedule == LrSchedule::Cosine);
  CHECK(c.device == DeviceChoice::CPU);
  CHECK(c.value_model == ValueModelKind::PolicyHead);
  CHECK(c.output_dir == "runs/x=1");
  CHECK(c.seed == 18446744073709551615ull);
  CHECK(c.policy["n_layer"] == 2);
  CHECK(c.policy["family"] == "gpt2");
  CHECK(c.reward["n_embd"] == 32);
  CHECK(c.stop_token_ids == std::vector<int64_t>{128008, 128009});
  c.apply_override("stop_token_ids=7");
  CHECK(c.stop_token_ids == std::vector<int64_t>{7});

  // Each malformed value names its key.
  for (const char* bad : {"rollout_batch_size=1.5", "rollout_batch_size=12x", "learning_rate=fast", "learning_rate=",
                          "whiten_rewards=yes", "kl_estimator=k4", "seed=-1", "temperature=nan", "policy=[1]",
                          "stop_token_ids=[-1]", "stop_token_ids=eot"}) {
    const std::string key = std::string(bad).substr(0, std::string(bad).find('='));
    const std::string msg = error_of([&] { c.apply_override(bad); });
    CHECK_MESSAGE(contains(msg, key), bad, " -> '", msg, "'");
  }
  CHECK(contains(error_of([&] { c.apply_override("no_equals_sign"); }), "key=value"));
}

TEST_CASE("unknown keys are errors that suggest the nearest key") {
  PpoConfig c;
  const std::string msg = error_of([&] { c.apply_override("learnig_rate=1e-5"); });
  CHECK(contains(msg, "unknown key 'learnig_rate'"));
  CHECK(contains(msg, "did you mean 'learning_rate'"));
  CHECK(contains(error_of([&] { c.apply_override("clip_epsilon=0.1"); }), "'clip_eps'"));
  CHECK(contains(error_of([&] { c.apply_override("polcy.n_layer=2"); }), "'policy'"));
  const std::string from_json = error_of([&] { c.update_from_json({{"ppo_epoch", 2}}, "my.json"); });
  CHECK(contains(from_json, "my.json"));
  CHECK(contains(from_json, "'ppo_epochs'"));
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(nearest("gama", PpoConfig::keys()) == "gamma");
}

TEST_CASE("JSON round trip and typed JSON errors") {
  PpoConfig a;
  a.apply_override("top_p=0.9");
  a.apply_override("adaptive_kl=true");
  a.apply_override("kl_estimator=k2");
  a.apply_override("policy.n_layer=3");
  a.apply_override("stop_token_ids=[5, 6]");
  const nlohmann::json j = a.to_json();
  CHECK(j["stop_token_ids"] == nlohmann::json::array({5, 6}));
  CHECK(j["kl_estimator"] == "k2");
  CHECK(j.size() == PpoConfig::keys().size());
  CHECK_FALSE(j.contains("minibatch_size"));  // derived, not settable
  PpoConfig b;
  b.update_from_json(j);
  CHECK(b.to_json() == j);

  CHECK(contains(error_of([&] { b.update_from_json({{"ppo_epochs", 2.5}}); }), "ppo_epochs"));
  CHECK(contains(error_of([&] { b.update_from_json({{"whiten_advantages", 1}}); }), "whiten_advantages"));
  CHECK(contains(error_of([&] { b.update_from_json({{"kl_estimator", 3}}); }), "kl_estimator"));
  CHECK(contains(error_of([&] { b.update_from_json({{"seed", -4}}); }), "seed"));
  CHECK(contains(error_of([&] { b.update_from_json({{"stop_token_ids", 5}}); }), "stop_token_ids"));
}

TEST_CASE("load_config: file, then --set, then derive") {
  const std::string path = "test_config_load.json";
  {
    std::ofstream f(path);
    f << "{\n  // comments are allowed\n  \"rollout_batch_size\": 32, \"num_minibatches\": 4, \"micro_batch_size\": 2\n}\n";
  }
  const PpoConfig c = load_config(path, {"micro_batch_size=4"});
  CHECK(c.rollout_batch_size == 32);
  CHECK(c.minibatch_size == 8);
  CHECK(c.grad_accum_steps == 2);
  CHECK(contains(error_of([&] { load_config(path, {"micro_batch_size=3"}); }), "micro_batch_size"));
  CHECK(contains(error_of([&] { load_config("does_not_exist.json", {}); }), "does_not_exist.json"));
  std::remove(path.c_str());
}

TEST_CASE("each invalid value names its key") {
  struct Case {
    const char* set;
    const char* key;
  };
  const Case cases[] = {
      {"num_minibatches=5", "num_minibatches"},      // 64 % 5 != 0
      {"micro_batch_size=48", "micro_batch_size"},   // does not divide 64
      {"clip_eps=0", "clip_eps"},
      {"clip_eps=-0.2", "clip_eps"},
      {"temperature=0", "temperature"},
      {"top_p=0", "top_p"},
      {"top_p=1.5", "top_p"},
      {"top_k=-1", "top_k"},
      {"rollout_batch_size=0", "rollout_batch_size"},
      {"ppo_epochs=0", "ppo_epochs"},
      {"learning_rate=0", "learning_rate"},
      {"value_learning_rate=-1", "value_learning_rate"},
      {"gamma=1.5", "gamma"},
      {"lam=-0.1", "lam"},
      {"adam_beta1=1", "adam_beta1"},
      {"adam_beta2=1.2", "adam_beta2"},
      {"dual_clip=0.5", "dual_clip"},
      {"clip_value=0", "clip_value"},
      {"kl_coef=-0.1", "kl_coef"},
      {"kl_target=0", "kl_target"},
      {"reward_clip=-1", "reward_clip"},
      {"missing_eos_penalty=-1", "missing_eos_penalty"},
      {"min_new_tokens=1000", "min_new_tokens"},
      {"eos_token_id=-2", "eos_token_id"},
      {"max_grad_norm=-1", "max_grad_norm"},
      {"log_every=0", "log_every"},
      {"save_every=-1", "save_every"},
  };
  for (const Case& k : cases) {
    PpoConfig c;
    c.apply_override(k.set);
    const std::string msg = error_of([&] { c.derive(); });
    CHECK_MESSAGE(contains(msg, std::string("config ") + k.key), k.set, " -> '", msg, "'");
  }
  PpoConfig ok;
  ok.apply_override("dual_clip=3");
  ok.derive();  // valid: dual clip on
}

TEST_CASE("learning-rate schedules: warmup, then constant / linear / cosine to zero") {
  PpoConfig c;
  c.total_steps = 10, c.ppo_epochs = 1, c.num_minibatches = 1, c.micro_batch_size = 1, c.rollout_batch_size = 1;
  c.lr_warmup_steps = 3;
  c.lr_schedule = LrSchedule::Linear;
  c.derive();  // 10 optimizer steps: 3 warmup, 7 decay
  CHECK(c.lr_factor(0) == doctest::Approx(0.25));
  CHECK(c.lr_factor(2) == doctest::Approx(0.75));
  CHECK(c.lr_factor(3) == doctest::Approx(1.0));
  CHECK(c.lr_factor(3 + 7) == doctest::Approx(0.0));
  CHECK(c.lr_factor(3 + 3) == doctest::Approx(4.0 / 7.0));
  c.lr_schedule = LrSchedule::Cosine;
  CHECK(c.lr_factor(3) == doctest::Approx(1.0));
  CHECK(c.lr_factor(3 + 7) == doctest::Approx(0.0));
  CHECK(c.lr_factor(3 + 3) == doctest::Approx(0.5 * (1 + std::cos(M_PI * 3.0 / 7.0))));
  c.lr_schedule = LrSchedule::Constant;
  CHECK(c.lr_factor(9) == doctest::Approx(1.0));
}

TEST_CASE("algorithm: one key sets its defaults; explicit keys win, in any order") {
  PpoConfig ppo;
  PpoConfig c = load_config("", {"algorithm=grpo"});
  CHECK(c.algorithm == Algorithm::Grpo);
  CHECK(c.advantage_estimator == AdvantageEstimator::Grpo);
  CHECK(c.samples_per_prompt == 4);
  CHECK(c.prompts_per_step == c.rollout_batch_size / 4);
  CHECK_FALSE(c.kl_in_reward);
  CHECK(c.kl_estimator == KLEstimator::K3);
  CHECK(c.loss_agg_mode == LossAggMode::SeqMeanTokenMean);
  CHECK(c.value_model == ValueModelKind::None);  // critic-free
  CHECK_FALSE(c.has_critic());

  // an explicit key wins whether it comes before or after the algorithm
  c = load_config("", {"samples_per_prompt=8", "algorithm=rloo", "loss_agg_mode=seq-mean-token-sum"});
  CHECK(c.advantage_estimator == AdvantageEstimator::Rloo);
  CHECK(c.samples_per_prompt == 8);
  CHECK(c.loss_agg_mode == LossAggMode::SeqMeanTokenSum);
  CHECK(c.kl_in_reward);
  const std::string path = "/tmp/ppo_config_algorithm.json";
  std::ofstream(path) << R"({"whiten_advantages": false, "algorithm": "reinforce_pp"})";
  c = load_config(path, {});
  CHECK(c.advantage_estimator == AdvantageEstimator::ReinforcePP);
  CHECK_FALSE(c.whiten_advantages);
  c = load_config(path, {"algorithm=ppo"});  // the last --set wins over the file
  CHECK(c.advantage_estimator == AdvantageEstimator::Gae);
  CHECK(c.has_critic());
  std::remove(path.c_str());

  // ppo's defaults are the struct's, also from a derived grpo config
  c = load_config("", {"algorithm=grpo"});
  c.set_algorithm(Algorithm::Ppo);
  CHECK(c.to_json() == ppo.to_json());

  CHECK(contains(error_of([] { load_config("", {"algorithm=grpo", "samples_per_prompt=1"}); }),
                 "set samples_per_prompt >= 2"));
  CHECK(contains(error_of([] { load_config("", {"samples_per_prompt=3"}); }), "must divide rollout_batch_size"));
  CHECK(contains(error_of([] { load_config("", {"value_model=none"}); }), "gae needs a critic"));
  CHECK(contains(error_of([] { load_config("", {"algorithm=a2c"}); }), "ppo | grpo | rloo | reinforce_pp | dpo"));
  CHECK(contains(error_of([] { load_config("", {"loss_agg_mode=seq-mean"}); }), "seq-mean-token-mean"));
}
