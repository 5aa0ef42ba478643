// DPO (ppo/dpo.h): the pair losses against their formulas and their derivative against finite
// differences; the gradient of a batch's mean loss through a tiny model in f64 against finite
// differences of the loss; the reference computed once (the starting policy: h = 0, loss log 2);
// training raises the implicit reward margin; 2 steps + checkpoint + 2 resumed == 4, bitwise.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include "../io/temp_files.h"
#include "helpers.h"
#include "ppo/demo_pipeline.h"
#include "ppo/dpo.h"

using namespace ppo;

namespace {

ModelConfig tiny_policy() {
  nlohmann::json j = demo_policy_config();
  j["d_model"] = 16;
  j["d_ff"] = 32;
  j["n_head"] = 2;
  j["n_layer"] = 1;
  return ModelConfig::from_json(j, "test policy");
}

ModelSpec lm_spec() { return {tiny_policy(), Heads::LM, Training::Trained, Generation::None}; }

// 4 pairs per step in micro-batches of 2 pairs, the demo's prompt and response lengths.
PpoConfig dpo_config(const std::string& output_dir) {
  PpoConfig c;
  c.set_algorithm(Algorithm::Dpo);
  c.device = DeviceChoice::CPU;
  c.policy = demo_policy_config();
  c.rollout_batch_size = 4;
  c.micro_batch_size = 2;
  c.prompt_length = DemoTask::max_prompt_length();
  c.response_length = 8;
  c.learning_rate = 1e-2f;
  c.lr_schedule = LrSchedule::Constant;
  c.dpo_beta = 0.5f;
  c.total_steps = 4;
  c.seed = 3;
  c.output_dir = output_dir;
  c.derive();
  return c;
}

std::vector<PreferenceExample> pairs(int64_t n) { return demo_preference_examples(DemoTask(7), 0, n, 0.0); }

}  // namespace

TEST_CASE("dpo_pair_loss: sigmoid (with label smoothing) and IPO equal their formulas; L'(h) by finite differences") {
  for (DpoLoss loss : {DpoLoss::Sigmoid, DpoLoss::Ipo}) {
    for (double eps : {0.0, 0.2}) {
      const DpoSettings s{0.3, eps, loss};
      for (double h : {-7.0, -0.4, 0.0, 1.3, 30.0}) {
        const double want = loss == DpoLoss::Ipo
                                ? (h - 1 / 0.6) * (h - 1 / 0.6)
                                : -(1 - eps) * std::log(1 / (1 + std::exp(-0.3 * h))) - eps * std::log(1 / (1 + std::exp(0.3 * h)));
        const PairLoss l = dpo_pair_loss(h, s);
        CHECK(l.loss == doctest::Approx(want).epsilon(1e-12));
        const double d = 1e-6, fd = (dpo_pair_loss(h + d, s).loss - dpo_pair_loss(h - d, s).loss) / (2 * d);
        CHECK(l.dloss_dh == doctest::Approx(fd).epsilon(1e-6));
      }
    }
  }
  CHECK(dpo_pair_loss(0.0, {0.1, 0.0, DpoLoss::Sigmoid}).loss == doctest::Approx(std::log(2.0)));
  CHECK(std::isfinite(dpo_pair_loss(-1e4, {0.1, 0.0, DpoLoss::Sigmoid}).loss));  // no overflow
}

TEST_CASE("the DPO gradient through the model matches finite differences of the mean loss (f64)") {
  SingleModel m(DeviceKind::CPU, lm_spec(), {1, DemoTask::max_prompt_length(), 8, 4}, "policy", Precision::F64);
  m.model().init_random(11);
  const std::vector<PreferenceExample> batch = pairs(3);
  const DpoSettings s{0.5, 0.1, DpoLoss::Sigmoid};
  std::vector<PairLogps> reference;
  dpo_pass(m, batch, nullptr, s, 2, DemoTask::kPad, Gradients::None, &reference);
  m.model().init_random(12);  // a policy away from the reference: h != 0
  m.model().zero_grad();
  const DpoSums sums = dpo_pass(m, batch, &reference, s, 2, DemoTask::kPad, Gradients::Accumulate);
  CHECK(sums.pairs == 3);
  auto mean_loss = [&] { return dpo_pass(m, batch, &reference, s, 2, DemoTask::kPad, Gradients::None).loss / 3; };
  for (const char* name : {"h.0.mlp.c_fc.weight", "wte.weight", "h.0.attn.c_attn.bias"}) {
    Tensor w = m.model().parameter(name), g = m.model().gradient(name);
    REQUIRE(w.dtype == DType::F64);
    for (int64_t i : {int64_t(0), w.numel() / 3, w.numel() - 1}) {
      double* p = w.ptr<double>() + i;
      const double x = *p, h = 1e-5;
      *p = x + h;
      const double up = mean_loss();
      *p = x - h;
      const double down = mean_loss();
      *p = x;
      const double fd = (up - down) / (2 * h), got = g.ptr<double>()[i];
      INFO(std::string(name), "[", i, "]: backward ", got, ", finite differences ", fd);
      CHECK(std::fabs(got - fd) <= 1e-7 + 1e-5 * std::fabs(fd));
    }
  }
}

TEST_CASE("DPO training: the reference is the starting policy; the implicit reward margin grows") {
  const std::string dir = test::temp_dir();
  PpoConfig c = dpo_config(dir);
  c.total_steps = 30;
  SingleModel m(DeviceKind::CPU, lm_spec(), {1, c.prompt_length, c.response_length, 2 * c.micro_batch_size});
  m.model().init_random(5);
  DpoTrainer t(m, c, pairs(16), DemoTask::kPad);
  REQUIRE(t.reference().size() == 16);
  const MetricsRow first = t.step();  // before its update: the policy is the reference
  CHECK(first.get(metric::kDpoLoss) == doctest::Approx(std::log(2.0)).epsilon(1e-5));
  CHECK(std::fabs(first.get(metric::kRewardsMargins)) < 1e-5);
  for (const char* name : {metric::kRewardsChosen, metric::kRewardsRejected, metric::kRewardsAccuracies,
                           metric::kLogpsChosen, metric::kLogpsRejected, metric::kGradNorm, metric::kLr})
    CHECK_MESSAGE(first.has(name), name);
  CHECK(first.get(metric::kLogpsChosen) < 0);
  MetricsRow last;
  for (int i = 1; i < 30; ++i) last = t.step();
  MESSAGE("DPO: loss ", first.get(metric::kDpoLoss), " -> ", last.get(metric::kDpoLoss), ", margin ",
          last.get(metric::kRewardsMargins), ", accuracy ", last.get(metric::kRewardsAccuracies));
  CHECK(last.get(metric::kDpoLoss) < 0.5 * first.get(metric::kDpoLoss));
  CHECK(last.get(metric::kRewardsMargins) > 1.0);
  CHECK(last.get(metric::kRewardsAccuracies) == 1.0);
  CHECK(last.get(metric::kSkipped) == 0.0);
}

TEST_CASE("DPO: 2 steps + checkpoint + a new trainer resuming for 2 == 4 steps, bitwise; other shapes refused") {
  const std::string dir = test::temp_dir();
  const PpoConfig c = dpo_config(dir + "/straight");
  const RunShape shape{1, c.prompt_length, c.response_length, 2 * c.micro_batch_size};
  SingleModel a(DeviceKind::CPU, lm_spec(), shape);
  a.model().init_random(5);
  DpoTrainer straight(a, c, pairs(6), DemoTask::kPad);  // 6 pairs, 4 a step: passes cross mid-batch
  for (int i = 0; i < 4; ++i) straight.step();

  PpoConfig first = dpo_config(dir + "/run");
  first.save_every = 2;
  {
    SingleModel b(DeviceKind::CPU, lm_spec(), shape);
    b.model().init_random(5);
    DpoTrainer t(b, first, pairs(6), DemoTask::kPad);
    t.step();
    t.step();
  }
  PpoConfig resumed = first;
  resumed.resume = first.output_dir + "/checkpoints";
  SingleModel b(DeviceKind::CPU, lm_spec(), shape);
  b.model().init_random(99);  // overwritten by the checkpoint
  DpoTrainer t(b, resumed, pairs(6), DemoTask::kPad);
  CHECK(t.steps_done() == 2);
  for (int i = 2; i < 4; ++i) {
    const MetricsRow row = t.step();
    for (const auto& item : straight.metrics()[size_t(i)].items()) {
      const std::string& name = item.first;  // a named copy: clang 14 cannot capture bindings in INFO
      const double value = item.second;
      if (name.rfind("time/", 0) == 0) continue;
      INFO("step ", i + 1, " ", name);
      const double other = row.get(name);
      CHECK(std::memcmp(&value, &other, sizeof(double)) == 0);
    }
  }
  const HostWeights wa = read_weights(a.model()), wb = read_weights(b.model());
  for (const auto& entry : wa) CHECK_MESSAGE(wb.at(entry.first) == entry.second, entry.first);

  SingleModel d(DeviceKind::CPU, lm_spec(), shape);
  CHECK_THROWS_WITH_AS(DpoTrainer(d, resumed, pairs(5), DemoTask::kPad), doctest::Contains("field 'pairs'"), Error);
}
