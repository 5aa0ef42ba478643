// Checkpoint and resume of a PPO run (CPU, tiny models): 4 steps in one trainer against 2 steps,
// a checkpoint, and a new trainer resuming for 2 more must give bitwise the same metrics rows
// (time/* aside) and final parameters; a leftover temporary directory of a crashed save is ignored;
// a run of other shapes refuses the checkpoint, naming the field; a resume from an earlier step
// directory redoes the later steps and saves over them.
#include "helpers.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include "io/checkpoint.h"
#include "ppo/trainer.h"

using namespace ppo;
namespace fs = std::filesystem;

namespace {

// Adaptive KL and running score normalization (state to restore) and a finite prompt set of 6
// walked by B = 4 per step (steps 2 and 3 cross a pass boundary mid-batch). With grpo: groups of
// 2 (2 prompts a step), the k3 KL as a loss term, seq-mean-token-mean, no value model.
PpoConfig tiny_config(const std::string& output_dir, Algorithm algorithm = Algorithm::Ppo) {
  PpoConfig c = test::tiny_ppo_config(37);
  c.adaptive_kl = true;
  c.kl_target = 0.01f;
  c.kl_horizon = 100.0f;
  c.normalize_scores = true;
  c.lr_warmup_steps = 1;
  c.total_steps = 4;
  c.seed = 7;
  c.output_dir = output_dir;
  c.set_algorithm(algorithm);
  if (algorithm == Algorithm::Grpo) c.samples_per_prompt = 2;
  c.derive();
  return c;
}

TrainerOptions options() {
  TrainerOptions o;
  o.print_plan = false;
  o.prompts = PromptSource::token_ids({{1, 2, 3}, {4, 5}, {6, 7, 8, 9}, {10}, {11, 12, 13, 14, 15}, {16, 17}});
  return o;
}

std::vector<std::pair<std::string, double>> without_times(const MetricsRow& row) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& item : row.items())
    if (item.first.rfind("time/", 0) != 0) out.push_back(item);
  return out;
}

// Bitwise equality of two rows (NaN == NaN when the bits agree); names the first differing key.
void check_same_row(const MetricsRow& a, const MetricsRow& b, int step) {
  const auto x = without_times(a), y = without_times(b);
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("step ", step, " metric ", x[i].first, ": ", x[i].second, " vs ", y[i].second);
    CHECK(x[i].first == y[i].first);
    CHECK(std::memcmp(&x[i].second, &y[i].second, sizeof(double)) == 0);
  }
}

void check_same_weights(Transformer& a, Transformer& b) {
  const HostWeights wa = read_weights(a), wb = read_weights(b);
  REQUIRE(wa.size() == wb.size());
  for (const auto& weights : wa) {  // no structured binding: doctest's messages capture it in lambdas
    const std::string& name = weights.first;
    const std::vector<float>& va = weights.second;
    const std::vector<float>& vb = wb.at(name);
    INFO(a.owner(), ": ", name);
    REQUIRE(va.size() == vb.size());
    CHECK(std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0);
  }
}

std::string temp_dir(const char* name) {
  const std::string dir = fs::temp_directory_path() / name;
  fs::remove_all(dir);
  return dir;
}

}  // namespace

TEST_CASE("2 steps + checkpoint + a new trainer resuming for 2 steps == 4 steps, bitwise") {
  Algorithm algorithm = Algorithm::Ppo;
  SUBCASE("ppo") { algorithm = Algorithm::Ppo; }
  SUBCASE("grpo") { algorithm = Algorithm::Grpo; }
  const std::string straight_dir = temp_dir("ppo_resume_straight"), run_dir = temp_dir("ppo_resume_run");

  PpoTrainer straight(tiny_config(straight_dir, algorithm), options());
  for (int i = 0; i < 4; ++i) straight.step();
  CHECK(!fs::exists(straight_dir + "/checkpoints"));  // save_every = 0: off

  PpoConfig first = tiny_config(run_dir, algorithm);
  first.save_every = 2;
  {
    PpoTrainer t(first, options());
    for (int i = 0; i < 2; ++i) check_same_row(t.step(), straight.metrics()[size_t(i)], i);
  }
  const std::string ckpt = run_dir + "/checkpoints";
  REQUIRE(fs::exists(ckpt + "/step_2/state.json"));

  // a save of step 4 killed half-way: its temporary directory holds junk; `latest` still names step_2
  fs::create_directories(ckpt + "/.tmp_step_4");
  std::ofstream(ckpt + "/.tmp_step_4/policy.safetensors") << "truncated";
  std::ofstream(ckpt + "/.tmp_step_4/state.json") << "{\"steps_done\": 4";

  PpoConfig resumed = first;
  resumed.resume = ckpt;
  PpoTrainer t(resumed, options());
  CHECK(t.steps_done() == 2);
  CHECK(t.optimizer_steps_done() == 2 * first.optimizer_steps_per_step);
  for (int i = 2; i < 4; ++i) check_same_row(t.step(), straight.metrics()[size_t(i)], i);
  CHECK(t.kl_controller().coef() == straight.kl_controller().coef());
  CHECK(t.kl_controller().coef() != double(first.kl_coef));  // adaptive: the coefficient moved
  check_same_weights(t.policy(), straight.policy());
  check_same_weights(t.reference(), straight.reference());
  check_same_weights(t.reward_model(), straight.reward_model());
  CHECK(t.has_separate_value_model() == (algorithm == Algorithm::Ppo));
  if (t.has_separate_value_model()) check_same_weights(t.value_model(), straight.value_model());

  // the save of step 4 replaced the leftover
  CHECK(fs::exists(ckpt + "/step_4/state.json"));
  CHECK(!fs::exists(ckpt + "/.tmp_step_4"));
}

TEST_CASE("resuming with other shapes fails naming the field") {
  const std::string run_dir = temp_dir("ppo_resume_shapes");
  PpoConfig c = tiny_config(run_dir);
  {
    PpoTrainer t(c, options());
    t.step();
    t.save_checkpoint(run_dir + "/checkpoints");
  }
  PpoConfig wider = c;
  wider.policy["d_model"] = 24;
  wider.resume = run_dir + "/checkpoints";
  CHECK_THROWS_WITH_AS(PpoTrainer(wider, options()), doctest::Contains("field 'models.policy.d_model'"), Error);

  PpoConfig longer = c;
  longer.response_length = 5;
  longer.derive();
  longer.resume = run_dir + "/checkpoints";
  CHECK_THROWS_WITH_AS(PpoTrainer(longer, options()), doctest::Contains("field 'response_length'"), Error);

  PpoConfig grouped = c;
  grouped.samples_per_prompt = 2;
  grouped.derive();
  grouped.resume = run_dir + "/checkpoints";
  CHECK_THROWS_WITH_AS(PpoTrainer(grouped, options()), doctest::Contains("field 'samples_per_prompt'"), Error);

  TrainerOptions other_prompts = options();
  other_prompts.prompts = PromptSource::token_ids({{1, 2}, {3}});
  PpoConfig same = c;
  same.resume = run_dir + "/checkpoints";
  CHECK_THROWS_WITH_AS(PpoTrainer(same, other_prompts), doctest::Contains("field 'prompt_set_size'"), Error);

  // the matching config resumes (from the step directory too)
  same.resume = run_dir + "/checkpoints/step_1";
  PpoTrainer ok(same, options());
  CHECK(ok.steps_done() == 1);
  // loading weights into a resumed run would silently replace the checkpoint's
  CHECK_THROWS_WITH_AS(ok.load_policy_weights(read_weights(ok.policy())), doctest::Contains("resumed"), Error);

  PpoConfig missing = c;
  missing.resume = run_dir + "/nowhere";
  CHECK_THROWS_WITH_AS(PpoTrainer(missing, options()), doctest::Contains("nowhere"), Error);
}

TEST_CASE("resuming from an earlier step directory redoes the later steps and saves over them") {
  const std::string run_dir = temp_dir("ppo_resume_rewind"), ckpt = run_dir + "/checkpoints";
  PpoConfig c = tiny_config(run_dir);
  c.save_every = 2;
  std::vector<MetricsRow> rows;
  {
    PpoTrainer t(c, options());
    for (int i = 0; i < 4; ++i) rows.push_back(t.step());
  }
  REQUIRE(io::checkpoint_step_dir(ckpt) == ckpt + "/step_4");

  PpoConfig again = c;
  again.resume = ckpt + "/step_2";
  PpoTrainer t(again, options());
  CHECK(io::checkpoint_step_dir(ckpt) == ckpt + "/step_2");  // latest rewound
  for (int i = 2; i < 4; ++i) check_same_row(t.step(), rows[size_t(i)], i);  // step 4 saves over the old step_4
  CHECK(io::checkpoint_step_dir(ckpt) == ckpt + "/step_4");

  // a step directory of another run leaves this run's latest alone
  const std::string other = temp_dir("ppo_resume_rewind_other");
  PpoConfig elsewhere = again;
  elsewhere.output_dir = other;
  PpoTrainer o(elsewhere, options());
  CHECK(io::checkpoint_step_dir(ckpt) == ckpt + "/step_4");
  CHECK(!fs::exists(other + "/checkpoints/latest"));
}

TEST_CASE("a checkpoint without score moments and estimator shapes (saved before they existed) loads") {
  const std::string run_dir = temp_dir("ppo_resume_old_format");
  PpoConfig c = tiny_config(run_dir);
  c.normalize_scores = false;
  c.save_every = 1;
  {
    PpoTrainer t(c, options());
    t.step();
  }
  const std::string state_path = run_dir + "/checkpoints/step_1/state.json";
  nlohmann::json state = nlohmann::json::parse(std::ifstream(state_path));
  REQUIRE(state.erase("score_moments") == 1);
  for (const char* later : {"advantage_estimator", "samples_per_prompt"}) REQUIRE(state["shapes"].erase(later) == 1);
  std::ofstream(state_path) << state.dump();
  PpoConfig resumed = c;
  resumed.resume = run_dir + "/checkpoints";
  PpoTrainer t(resumed, options());
  CHECK(t.steps_done() == 1);
}
