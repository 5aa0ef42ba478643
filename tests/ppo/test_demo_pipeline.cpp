// The demo pipeline of `ppo train`: its configuration (file sections, --set routing, errors that
// suggest the nearest key), determinism (one seed, identical metrics), and the files it writes.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include "../io/temp_files.h"
#include "io/safetensors.h"
#include "ppo/demo_pipeline.h"

using namespace ppo;

namespace {

// A reduced pipeline: seconds on one core.
DemoRunConfig reduced(const std::string& output_dir, const std::string& algorithm = "ppo") {
  return load_demo_config("", {"device=cpu", "total_steps=2", "rollout_batch_size=16", "micro_batch_size=8",
                               "demo.sft_examples=256", "demo.rm_pairs=256", "demo.rm_eval_pairs=64",
                               "demo.eval_prompts=64", "sft.epochs=1", "rm.epochs=1", "output_dir=" + output_dir,
                               "algorithm=" + algorithm});
}

}  // namespace

TEST_CASE("demo config: defaults, file sections, --set routing and errors with suggestions") {
  const DemoRunConfig d = load_demo_config("", {});
  CHECK(d.ppo.prompt_length == DemoTask::max_prompt_length());
  CHECK(d.ppo.eos_token_id == DemoTask::kEos);
  CHECK(d.ppo.policy.at("vocab_size") == DemoTask::vocab_size());

  const std::string dir = test::temp_dir();
  const std::string path = test::write_text(dir + "/run.json",
      R"({"total_steps": 7, "kl_coef": 0.1, "sft": {"epochs": 2}, "rm": {"learning_rate": 0.002}, "demo": {"label_noise": 0.2}})");
  const DemoRunConfig c = load_demo_config(path, {"sft.batch_size=8", "policy.n_layer=1", "total_steps=9"});
  CHECK(c.ppo.total_steps == 9);  // --set after the file
  CHECK(c.ppo.kl_coef == doctest::Approx(0.1));
  CHECK(c.ppo.policy.at("n_layer") == 1);
  CHECK(c.settings.sft.epochs == 2);
  CHECK(c.settings.sft.batch_size == 8);
  CHECK(c.settings.rm.learning_rate == doctest::Approx(0.002));
  CHECK(c.settings.label_noise == doctest::Approx(0.2));

  using test::contains;
  using test::error_of;
  CHECK(contains(error_of([] { load_demo_config("", {"totl_steps=2"}); }), "did you mean 'total_steps'"));
  CHECK(contains(error_of([] { load_demo_config("", {"sft.epoch=2"}); }), "did you mean 'sft.epochs'"));
  CHECK(contains(error_of([] { load_demo_config("", {"demo.eval_prompt=2"}); }), "did you mean 'demo.eval_prompts'"));
  CHECK(contains(error_of([] { load_demo_config("", {"sft.epochs=two"}); }), "expected an integer"));
  CHECK(contains(error_of([] { load_demo_config("", {"demo.label_noise=0.7"}); }), "[0, 0.5]"));
  CHECK(contains(error_of([] { load_demo_config("", {"total_steps"}); }), "expected key=value"));
  const std::string bad = test::write_text(dir + "/bad.json", R"({"sft": {"epochz": 2}})");
  CHECK(contains(error_of([&] { load_demo_config(bad, {}); }), "did you mean 'sft.epochs'"));
  const std::string broken = test::write_text(dir + "/broken.json", "{\"sft\": ");
  CHECK(contains(error_of([&] { load_demo_config(broken, {}); }), "not valid JSON"));
}

TEST_CASE("demo pipeline: one seed gives identical results; the files are written") {
  set_cpu_threads(1);  // tiny models: threads only add synchronisation
  const std::string dir = test::temp_dir();
  const DemoRunConfig c = reduced(dir + "/a");
  const DemoResult a = run_demo(c.ppo, c.settings, DemoFiles::Write);
  const DemoResult b = run_demo(c.ppo, c.settings, DemoFiles::None);
  CHECK(a.sft_gold == b.sft_gold);
  CHECK(a.final_gold == b.final_gold);
  CHECK(a.rm_accuracy == b.rm_accuracy);
  CHECK(a.policy == b.policy);
  REQUIRE(a.rows.size() == b.rows.size());
  for (size_t i = 0; i < a.rows.size(); ++i)
    for (const auto& item : a.rows[i].items())  // no structured binding: doctest's messages capture it in lambdas
      if (item.first.rfind("time/", 0) != 0)
        CHECK_MESSAGE(item.second == b.rows[i].get(item.first), item.first, " at row ", i);
  CHECK(a.sft_gold > a.random_gold);
  // the held-out yardsticks of a fresh run: the reward model's score, the KL to the SFT policy
  CHECK(std::isfinite(a.sft_proxy));
  CHECK(std::isfinite(a.final_proxy));
  CHECK(std::isfinite(a.final_kl));
  CHECK(a.arena_bytes > 0);
  CHECK(a.train_seconds > 0);

  for (const char* f : {"sft_metrics.jsonl", "reward_metrics.jsonl", "metrics.svg", "policy.safetensors",
                        "policy_config.json"})
    CHECK_MESSAGE(std::filesystem::exists(c.ppo.output_dir + "/" + f), f);
  CHECK(read_metrics_jsonl(c.ppo.output_dir + "/sft_metrics.jsonl").size() == 256 / 32);
  const io::SafetensorsFile saved(c.ppo.output_dir + "/policy.safetensors");
  CHECK(saved.entries().size() == a.policy.size());
  const io::HostTensor wte = saved.load("wte.weight");
  CHECK(wte.shape == std::vector<int64_t>{DemoTask::vocab_size(), 64});
  CHECK(std::vector<float>((const float*)wte.bytes.data(), (const float*)wte.bytes.data() + wte.numel()) ==
        a.policy.at("wte.weight"));
}

TEST_CASE("demo pipeline: a resumed run continues bit-exactly; rows after the checkpoint are redone") {
  std::string algorithm = "ppo";
  SUBCASE("ppo") { algorithm = "ppo"; }
  SUBCASE("dpo") { algorithm = "dpo"; }
  set_cpu_threads(1);
  const std::string dir = test::temp_dir();
  auto config = [&](const std::string& out, int64_t steps, const std::string& resume) {
    DemoRunConfig c = reduced(out, algorithm);
    c.ppo.total_steps = steps;
    c.ppo.save_every = 2;
    c.ppo.resume = resume;
    c.ppo.derive();
    return c;
  };
  const DemoRunConfig whole = config(dir + "/whole", 4, "");
  const DemoResult a = run_demo(whole.ppo, whole.settings, DemoFiles::Write);

  const DemoRunConfig first = config(dir + "/split", 3, "");  // saves after step 2, ...
  run_demo(first.ppo, first.settings, DemoFiles::Write);      // ... then "crashes" after step 3
  const DemoRunConfig rest = config(dir + "/split", 4, dir + "/split/checkpoints/step_2");
  const DemoResult b = run_demo(rest.ppo, rest.settings, DemoFiles::Write);

  CHECK(b.policy == a.policy);
  CHECK(b.final_gold == a.final_gold);
  CHECK(b.sft_gold == a.sft_gold);  // from demo_stages.json
  const std::vector<MetricsRow> rows = read_metrics_jsonl(dir + "/split/metrics.jsonl");
  REQUIRE(rows.size() == 4);  // step 3's first row is gone, not duplicated
  REQUIRE(b.rows.size() == 4);
  for (size_t i = 0; i < rows.size(); ++i) {
    CHECK(rows[i].get(metric::kStep) == double(i + 1));
    for (const auto& item : a.rows[i].items())  // no structured binding: doctest's messages capture it in lambdas
      if (item.first.rfind("time/", 0) != 0) CHECK_MESSAGE(item.second == rows[i].get(item.first), item.first, " at row ", i);
  }
  // The run ended on a checkpoint: step 4 (save_every) here; a resume of a run dir takes its latest.
  CHECK(std::filesystem::exists(dir + "/split/checkpoints/step_4/state.json"));

  using test::contains;
  using test::error_of;
  // a fresh run into a directory with checkpoints stops before any work
  CHECK(contains(error_of([&] { run_demo(whole.ppo, whole.settings, DemoFiles::Write); }), "resume it"));
  const DemoRunConfig elsewhere = config(dir + "/other", 4, dir + "/split/checkpoints");
  CHECK(contains(error_of([&] { run_demo(elsewhere.ppo, elsewhere.settings, DemoFiles::Write); }),
                 "is not a checkpoint of output_dir"));
}

TEST_CASE("demo pipeline with dpo: no reward model in its arena, TRL's metrics and the gold of samples") {
  set_cpu_threads(1);
  const std::string dir = test::temp_dir();
  const DemoRunConfig c = reduced(dir + "/dpo", "dpo");
  const DemoRunConfig p = reduced(dir + "/ppo", "ppo");
  const DemoResult d = run_demo(c.ppo, c.settings, DemoFiles::Write);
  const DemoResult r = run_demo(p.ppo, p.settings, DemoFiles::None);
  REQUIRE(d.rows.size() == 2);
  for (const char* m : {metric::kDpoLoss, metric::kRewardsChosen, metric::kRewardsRejected, metric::kRewardsMargins,
                        metric::kRewardsAccuracies, metric::kLogpsChosen, metric::kLogpsRejected, metric::kGoldScores})
    CHECK_MESSAGE(d.rows.back().has(m), m);
  CHECK(d.rows.front().get(metric::kDpoLoss) == doctest::Approx(std::log(2.0)).epsilon(1e-4));
  CHECK(d.arena_bytes < r.arena_bytes);  // one trained policy (2x rows a micro-batch) against four models
  CHECK(d.policy != r.policy);
  CHECK(std::filesystem::exists(c.ppo.output_dir + "/checkpoints/step_2/state.json"));
  CHECK(read_metrics_jsonl(c.ppo.output_dir + "/metrics.jsonl").size() == 2);
}

// The demo's own SFT and reward-model settings and half its PPO steps. (With a weaker reward model,
// e.g. half the preference pairs, PPO raises the proxy reward but hardly the gold one.)
// About 30 s on one core: SFT 6 s, reward model 12 s, 30 PPO steps 9 s.
TEST_CASE("the demo learns: the gold reward after PPO beats the SFT policy's") {
  set_cpu_threads(1);
  const DemoRunConfig c = load_demo_config("", {"device=cpu", "total_steps=30"});
  const DemoResult r = run_demo(c.ppo, c.settings, DemoFiles::None);
  MESSAGE("gold reward: SFT ", r.sft_gold, " -> after PPO ", r.final_gold, "; reward model accuracy ",
          r.rm_gold_accuracy, "; ", r.seconds, " s");
  REQUIRE(r.rows.size() == 30);
  for (const char* m : {metric::kScores, metric::kGoldScores, metric::kKl, metric::kEntropy, metric::kPolicyClipfrac})
    CHECK_MESSAGE(r.rows.back().has(m), m);
  CHECK(r.final_gold > r.sft_gold + 0.05);
  // The gold reward of the rollouts rises during PPO, too (means of the first and last 5 steps).
  auto mean_gold = [&](size_t first) {
    double sum = 0;
    for (size_t i = first; i < first + 5; ++i) sum += r.rows[i].get(metric::kGoldScores);
    return sum / 5;
  };
  CHECK(mean_gold(25) > mean_gold(0) + 0.05);
}
