// Steps 4 and 5 (ppo/rewards.h, ppo/advantages.h) on hand-computed cases: the score lands on the
// last valid token, the missing-EOS penalty and reward clip, KL folded in (or not), masked
// positions zero, whitening over valid tokens only (one valid token does not divide by zero); CUDA
// against CPU on the same inputs.
#include <doctest/doctest.h>

#include <cmath>
#include "engine/error.h"
#include "helpers.h"
#include "ppo/advantages.h"
#include "ppo/rewards.h"
#include "ppo/running_moments.h"

using namespace ppo;
using test::BackendFixture;
using test::check_close;

namespace {

// A (B,R) batch on one backend, inputs uploaded, outputs poisoned with NaN.
struct Batch {
  RewardInputs in;
  Tensor values;
  struct {
    Tensor kl, rewards, advantages, returns;
  } out;
  Batch(BackendFixture& f, int64_t B, int64_t R, const std::vector<float>& logp, const std::vector<float>& ref_logp,
        const std::vector<float>& values, const std::vector<int32_t>& mask, std::vector<float> scores,
        std::vector<uint8_t> eos) {
    const DType st = f.backend->stat_dtype();
    in.logp = f.upload(logp, st, {B, R}, "logp");
    in.ref_logp = f.upload(ref_logp, st, {B, R}, "ref_logp");
    this->values = f.upload(values, st, {B, R}, "values");
    in.mask = f.upload_ids(mask, {B, R}, "mask");
    in.scores = std::move(scores);
    in.ended_with_eos = std::move(eos);
    out.kl = f.poisoned(st, {B, R}, "kl");
    out.rewards = f.poisoned(st, {B, R}, "rewards");
    out.advantages = f.poisoned(st, {B, R}, "advantages");
    out.returns = f.poisoned(st, {B, R}, "returns");
  }
};

struct Settings {
  RewardSettings reward;
  AdvantageSettings advantage;
};

Settings plain_settings() {
  Settings s;
  s.reward.kl_coef = 0.1f;
  s.reward.kl_estimator = KLEstimator::K1;
  s.reward.kl_in_reward = true;
  s.reward.whiten_rewards = false;
  s.reward.reward_clip = 0.0f;
  s.reward.missing_eos_penalty = 0.5f;
  s.advantage.gamma = 1.0f, s.advantage.lam = 1.0f;
  s.advantage.whiten_advantages = false;
  return s;
}

struct Stats {
  RewardStats reward;
  AdvantageStats advantage;
};

// Step 4, then step 5, as the trainer runs them.
Stats run(Backend& be, const Settings& s, const Batch& b) {
  Stats st;
  st.reward = compute_rewards(be, s.reward, b.in, b.out.kl, b.out.rewards);
  st.advantage = estimate_advantages(be, s.advantage, b.out.rewards, b.values, b.in.mask, b.out.advantages, b.out.returns);
  return st;
}

// Row 0: 3 valid tokens, ends with EOS, score 2. Row 1: all 4 valid, no EOS, score 1.
// Masked entries hold values that would change every result if they leaked in.
constexpr int64_t B = 2, R = 4;
const std::vector<float> kLogp = {-1.0f, -2.0f, -0.5f, -3.0f, /**/ -1.0f, -1.0f, -1.0f, -1.0f};
const std::vector<float> kRefLogp = {-1.5f, -2.0f, -1.0f, -7.0f, /**/ -1.2f, -0.8f, -1.0f, -1.1f};
const std::vector<float> kValues = {0.5f, 1.0f, 1.5f, 9.0f, /**/ 0.1f, 0.2f, 0.3f, 0.4f};
const std::vector<int32_t> kMask = {1, 1, 1, 0, /**/ 1, 1, 1, 1};

}  // namespace

TEST_CASE("hand-computed: KL folded in, score on the last valid token, missing-EOS penalty") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Batch b(f, B, R, kLogp, kRefLogp, kValues, kMask, {2.0f, 1.0f}, {1, 0});
  const Stats st = run(*f.backend, plain_settings(), b);
  // k1 = logp - ref_logp on valid tokens: row 0 (0.5, 0, 0.5 | masked 0), row 1 (0.2, -0.2, 0, 0.1).
  check_close(f.backend->to_host(b.out.kl), {0.5f, 0, 0.5f, 0, 0.2f, -0.2f, 0, 0.1f}, 1e-6, 0, "kl");
  // rewards = -0.1 kl; + score 2 at row 0's t=2; + (1 - 0.5 penalty) at row 1's t=3.
  check_close(f.backend->to_host(b.out.rewards), {-0.05f, 0, 1.95f, 0, -0.02f, 0.02f, 0, 0.49f}, 1e-6, 0, "rewards");
  // gamma = lam = 1: returns = reward-to-go, A = returns - V; padding stays 0.
  check_close(f.backend->to_host(b.out.returns), {1.90f, 1.95f, 1.95f, 0, 0.49f, 0.51f, 0.49f, 0.49f}, 1e-6, 0,
              "returns");
  check_close(f.backend->to_host(b.out.advantages), {1.40f, 0.95f, 0.45f, 0, 0.39f, 0.31f, 0.19f, 0.09f}, 1e-6, 0,
              "advantages");
  CHECK(st.reward.kl == doctest::Approx(0.55));  // (1.0 + 0.1) / 2
  CHECK(st.reward.non_score_reward == doctest::Approx(-0.055));
  CHECK(st.reward.score == doctest::Approx(1.5));         // raw
  CHECK(st.reward.shaped_score == doctest::Approx(1.25)); // (2 + 0.5) / 2
  CHECK(st.reward.rlhf_reward == doctest::Approx(1.195));
  CHECK(st.reward.num_eos == 1);
  CHECK(st.reward.response_length == doctest::Approx(3.5));
  CHECK((st.reward.finite && st.advantage.finite));
  // advantages over the 7 valid tokens: mean 3.78 / 7
  CHECK(st.advantage.advantage_mean == doctest::Approx(3.78 / 7).epsilon(1e-5));
  // explained variance of returns by values over the valid tokens, by the plain formula
  const std::vector<double> ret = {1.90, 1.95, 1.95, 0.49, 0.51, 0.49, 0.49}, val = {0.5, 1.0, 1.5, 0.1, 0.2, 0.3, 0.4};
  auto var = [](const std::vector<double>& x) {
    double m = 0, v = 0;
    for (double e : x) m += e / double(x.size());
    for (double e : x) v += (e - m) * (e - m) / double(x.size());
    return v;
  };
  std::vector<double> diff;
  for (size_t i = 0; i < ret.size(); ++i) diff.push_back(ret[i] - val[i]);
  CHECK(st.advantage.explained_variance == doctest::Approx(1 - var(diff) / var(ret)).epsilon(1e-5));
  CHECK(st.advantage.return_mean == doctest::Approx((1.90 + 1.95 * 2 + 0.49 * 3 + 0.51) / 7).epsilon(1e-5));
}

TEST_CASE("KL out of the reward, reward clip before the penalty, k3 estimator") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Settings s = plain_settings();
  s.reward.kl_in_reward = false;
  s.reward.reward_clip = 10.0f;
  s.reward.missing_eos_penalty = 1.0f;
  s.reward.kl_estimator = KLEstimator::K3;
  Batch b(f, B, R, kLogp, kRefLogp, kValues, kMask, {20.0f, -20.0f}, {1, 0});
  const Stats st = run(*f.backend, s, b);
  // Only the clipped scores: row 0 -> 10 at t=2; row 1 -> -10 - 1 at t=3.
  check_close(f.backend->to_host(b.out.rewards), {0, 0, 10.0f, 0, 0, 0, 0, -11.0f}, 1e-6, 0, "rewards");
  // k3 = exp(r) - 1 - r with r = ref_logp - logp, still reported
  auto k3 = [](double r) { return float(std::exp(r) - 1 - r); };
  const std::vector<float> want_kl = {k3(-0.5), 0, k3(-0.5), 0, k3(-0.2), k3(0.2), 0, k3(-0.1)};
  check_close(f.backend->to_host(b.out.kl), want_kl, 1e-6, 1e-5, "kl k3");
  double kl_total = 0;
  for (float k : want_kl) kl_total += k;
  CHECK(st.reward.kl == doctest::Approx(kl_total / 2).epsilon(1e-5));
  CHECK(st.reward.score == doctest::Approx(0.0));
  CHECK(st.reward.shaped_score == doctest::Approx(-0.5));  // (10 - 11) / 2
  CHECK(st.reward.rlhf_reward == doctest::Approx(-0.5 - 0.1 * kl_total / 2).epsilon(1e-5));
}

TEST_CASE("running score normalization: scores shifted and scaled before the clip") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Settings s = plain_settings();
  s.reward.score_shift = 4.0;
  s.reward.score_scale = 0.5;
  s.reward.reward_clip = 2.0f;
  s.reward.kl_in_reward = false;
  Batch b(f, B, R, kLogp, kRefLogp, kValues, kMask, {7.0f, 10.0f}, {1, 1});
  const Stats st = run(*f.backend, s, b);
  // row 0: (7 - 4) * 0.5 = 1.5 at t=2; row 1: (10 - 4) * 0.5 = 3 -> clipped to 2 at t=3
  check_close(f.backend->to_host(b.out.rewards), {0, 0, 1.5f, 0, 0, 0, 0, 2.0f}, 1e-6, 0, "rewards");
  CHECK(st.reward.score == doctest::Approx(8.5));  // raw
  CHECK(st.reward.shaped_score == doctest::Approx(1.75));
}

TEST_CASE("running moments: batches merged equal one pass over all; the state round-trips") {
  const std::vector<float> a = {1, 2, 3, 4}, b = {10, -2, 0.5f};
  RunningMoments m;
  m.update(a);
  m.update(b);
  m.update({});
  double mean = 0, var = 0;
  std::vector<float> all = a;
  all.insert(all.end(), b.begin(), b.end());
  for (float x : all) mean += x / double(all.size());
  for (float x : all) var += (x - mean) * (x - mean) / double(all.size());
  CHECK(m.count == 7);
  CHECK(m.mean == doctest::Approx(mean).epsilon(1e-14));
  CHECK(m.var() == doctest::Approx(var).epsilon(1e-14));
  RunningMoments r;
  r.load_state(nlohmann::json::parse(m.state().dump()), "state");
  CHECK((r.count == m.count && r.mean == m.mean && r.m2 == m.m2));
  CHECK_THROWS_WITH_AS(r.load_state({{"count", 1}}, "state.json"), doctest::Contains("state.json"), Error);
}

TEST_CASE("GAE with gamma, lambda < 1 matches the textbook loop; whitening over valid tokens") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Settings s = plain_settings();
  s.advantage.gamma = 0.9f, s.advantage.lam = 0.8f;
  Batch raw(f, B, R, kLogp, kRefLogp, kValues, kMask, {2.0f, 1.0f}, {1, 0});
  run(*f.backend, s, raw);
  const std::vector<float> rewards = f.backend->to_host(raw.out.rewards);
  // Textbook GAE per row over its valid prefix (bootstrap 0 past the end).
  std::vector<float> want_adv(size_t(B * R), 0.0f);
  for (int64_t r = 0; r < B; ++r) {
    int64_t len = 0;
    while (len < R && kMask[size_t(r * R + len)]) ++len;
    double next_value = 0, next_adv = 0;
    for (int64_t t = len - 1; t >= 0; --t) {
      const size_t i = size_t(r * R + t);
      const double delta = rewards[i] + 0.9 * next_value - kValues[i];
      next_adv = delta + 0.9 * 0.8 * next_adv;
      next_value = kValues[i];
      want_adv[i] = float(next_adv);
    }
  }
  check_close(f.backend->to_host(raw.out.advantages), want_adv, 1e-5, 1e-5, "gae");

  s.advantage.whiten_advantages = true;
  Batch w(f, B, R, kLogp, kRefLogp, kValues, kMask, {2.0f, 1.0f}, {1, 0});
  run(*f.backend, s, w);
  check_close(f.backend->to_host(w.out.advantages), test::whitened(want_adv, kMask), 1e-5, 1e-4, "whitened advantages");
  // returns are those of the raw advantages: whitening comes after
  check_close(f.backend->to_host(w.out.returns), f.backend->to_host(raw.out.returns), 1e-6, 0, "returns");
}

TEST_CASE("reward whitening: unit variance over valid tokens, mean kept, padding zero") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Settings s = plain_settings();
  s.reward.whiten_rewards = true;
  Batch b(f, B, R, kLogp, kRefLogp, kValues, kMask, {2.0f, 1.0f}, {1, 0});
  run(*f.backend, s, b);
  const std::vector<float> raw = {-0.05f, 0, 1.95f, 0, -0.02f, 0.02f, 0, 0.49f};
  double mean = 0, var = 0;
  for (size_t i = 0; i < raw.size(); ++i) mean += kMask[i] ? raw[i] / 7.0 : 0;
  for (size_t i = 0; i < raw.size(); ++i) var += kMask[i] ? (raw[i] - mean) * (raw[i] - mean) / 7.0 : 0;
  std::vector<float> want(raw.size(), 0.0f);
  for (size_t i = 0; i < raw.size(); ++i)
    if (kMask[i]) want[i] = float((raw[i] - mean) / std::sqrt(var + 1e-8) + mean);
  check_close(f.backend->to_host(b.out.rewards), want, 1e-5, 1e-4, "whitened rewards");
}

TEST_CASE("one valid token: whitening gives 0, not NaN") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Settings s = plain_settings();
  s.advantage.whiten_advantages = true, s.reward.whiten_rewards = true;
  Batch b(f, 1, 3, {-1.0f, -2.0f, -3.0f}, {-1.5f, -1.0f, -1.0f}, {0.3f, 5.0f, 5.0f}, {1, 0, 0}, {0.7f}, {1});
  const Stats st = run(*f.backend, s, b);
  // reward = -0.1 * 0.5 + 0.7 = 0.65 (whitening keeps a lone value); A = 0.65 - 0.3 -> whitened 0
  check_close(f.backend->to_host(b.out.rewards), {0.65f, 0, 0}, 1e-6, 0, "rewards");
  check_close(f.backend->to_host(b.out.returns), {0.65f, 0, 0}, 1e-6, 0, "returns");
  check_close(f.backend->to_host(b.out.advantages), {0, 0, 0}, 1e-6, 0, "advantages");
  CHECK((st.reward.finite && st.advantage.finite));
  CHECK(st.advantage.advantage_std == 0);
}

TEST_CASE("NaN in the log-probs is reported; malformed masks are errors") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  std::vector<float> logp = kLogp;
  logp[1] = NAN;
  Batch nan_batch(f, B, R, logp, kRefLogp, kValues, kMask, {2.0f, 1.0f}, {1, 0});
  CHECK_FALSE(run(*f.backend, plain_settings(), nan_batch).reward.finite);
  logp = kLogp;
  logp[3] = NAN;  // on padding: ignored
  Batch pad_nan(f, B, R, logp, kRefLogp, kValues, kMask, {2.0f, 1.0f}, {1, 0});
  CHECK(run(*f.backend, plain_settings(), pad_nan).reward.finite);

  Batch holes(f, B, R, kLogp, kRefLogp, kValues, {1, 0, 1, 0, 1, 1, 1, 1}, {2.0f, 1.0f}, {1, 0});
  CHECK_THROWS_AS(run(*f.backend, plain_settings(), holes), Error);
  Batch empty_row(f, B, R, kLogp, kRefLogp, kValues, {1, 1, 1, 0, 0, 0, 0, 0}, {2.0f, 1.0f}, {1, 0});
  CHECK_THROWS_AS(run(*f.backend, plain_settings(), empty_row), Error);
  Batch few_scores(f, B, R, kLogp, kRefLogp, kValues, kMask, {2.0f}, {1, 0});
  CHECK_THROWS_AS(run(*f.backend, plain_settings(), few_scores), Error);
}

TEST_CASE("CUDA matches CPU on random inputs with ragged responses") {
  auto gpu = test::cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const int64_t b = 5, r = 37;
  const std::vector<float> logp = test::randn(size_t(b * r), 1, 0.5f), ref = test::randn(size_t(b * r), 2, 0.5f),
                           values = test::randn(size_t(b * r), 3);
  std::vector<int32_t> mask(size_t(b * r), 0);
  const int64_t lengths[] = {1, 37, 12, 30, 5};
  for (int64_t i = 0; i < b; ++i)
    for (int64_t t = 0; t < lengths[i]; ++t) mask[size_t(i * r + t)] = 1;
  const std::vector<float> scores = test::randn(size_t(b), 4, 2.0f);
  const std::vector<uint8_t> eos = {1, 0, 1, 1, 0};
  Settings s = plain_settings();
  s.advantage.gamma = 0.99f, s.advantage.lam = 0.95f, s.advantage.whiten_advantages = true;
  s.reward.whiten_rewards = true, s.reward.kl_estimator = KLEstimator::K3;
  Batch on_cpu(cpu, b, r, logp, ref, values, mask, scores, eos), on_gpu(*gpu, b, r, logp, ref, values, mask, scores, eos);
  const Stats want = run(*cpu.backend, s, on_cpu);
  const Stats got = run(*gpu->backend, s, on_gpu);
  // f32 on both sides; the GPU's reductions run in another order: relative L2 well below 1e-4.
  for (const auto& [label, c, g] : {std::tuple{"kl", on_cpu.out.kl, on_gpu.out.kl},
                            std::tuple{"rewards", on_cpu.out.rewards, on_gpu.out.rewards},
                            std::tuple{"advantages", on_cpu.out.advantages, on_gpu.out.advantages},
                            std::tuple{"returns", on_cpu.out.returns, on_gpu.out.returns}}) {
    const double err = test::rel_l2(gpu->backend->to_host(g), cpu.backend->to_host(c));
    const char* name = label;  // no structured binding: doctest's messages capture it in lambdas
    CHECK_MESSAGE(err < 1e-4, name, ": relative L2 ", err);
  }
  CHECK(got.reward.kl == doctest::Approx(want.reward.kl).epsilon(1e-4));
  CHECK(got.advantage.explained_variance == doctest::Approx(want.advantage.explained_variance).epsilon(1e-3));
}
