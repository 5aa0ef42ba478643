// The advantage estimators (ppo/advantages.h) and the loss aggregation (ppo/update.h loss_weights)
// against their textbook formulas, written here as plain loops: GRPO's group normalization (with
// and without the std, Dr. GRPO), RLOO's leave-one-out baseline, REINFORCE++'s discounted returns
// with batch whitening; the sequence returns carry the KL of the rewards; padding stays 0. CUDA
// against CPU on the same inputs (skips without a GPU).
#include "helpers.h"

#include <cmath>
#include <numeric>
#include "ppo/advantages.h"
#include "ppo/update.h"

using namespace ppo;
using namespace ppo::test;

namespace {

// Two groups of G = 3 rows, R = 4, ragged responses; rewards hold a -beta*KL term on every valid
// token and the score on the last one. Padding holds values that would show if they leaked in.
constexpr int64_t B = 6, R = 4, G = 3;
const std::vector<int32_t> kMask = {1, 1, 1, 0, /**/ 1, 0, 0, 0, /**/ 1, 1, 1, 1,
                                    1, 1, 0, 0, /**/ 1, 1, 1, 1, /**/ 1, 1, 1, 0};
const std::vector<float> kRewards = {-0.1f, 0.05f, 1.0f, 9.0f, /**/ 0.3f, 9.0f, 9.0f, 9.0f, /**/ 0.0f, -0.2f, 0.1f, 2.0f,
                                     0.02f, -1.0f, 9.0f, 9.0f, /**/ 0.0f, 0.0f, 0.0f, 0.5f, /**/ -0.05f, 0.01f, 1.5f, 9.0f};

std::vector<double> sequence_returns() {
  std::vector<double> r(B, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < R; ++t) r[size_t(b)] += kMask[size_t(b * R + t)] ? kRewards[size_t(b * R + t)] : 0.0;
  return r;
}

// The per-token layout of per-sequence values: v_b on the valid tokens of row b, 0 elsewhere.
std::vector<float> on_valid_tokens(const std::vector<double>& v) {
  std::vector<float> out(B * R, 0.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < R; ++t)
      if (kMask[size_t(b * R + t)]) out[size_t(b * R + t)] = float(v[size_t(b)]);
  return out;
}

struct Outputs {
  std::vector<float> advantages, returns;
  AdvantageStats stats;
};

Outputs run(BackendFixture& f, const AdvantageSettings& s) {
  const DType st = f.backend->stat_dtype();
  Tensor adv = f.poisoned(st, {B, R}, "advantages"), ret = f.poisoned(st, {B, R}, "returns");
  const AdvantageStats stats = estimate_advantages(*f.backend, s, f.upload(kRewards, st, {B, R}, "rewards"),
                                                   f.upload(std::vector<float>(B * R, 0.0f), st, {B, R}, "values"),
                                                   f.upload_ids(kMask, {B, R}, "mask"), adv, ret);
  return {f.backend->to_host(adv), f.backend->to_host(ret), stats};
}

AdvantageSettings settings(AdvantageEstimator e) {
  AdvantageSettings s;
  s.estimator = e;
  s.group_size = G;
  s.gamma = 1.0f;
  s.whiten_advantages = false;
  return s;
}

}  // namespace

TEST_CASE("group_advantages: GRPO (std and Dr. GRPO) and RLOO equal their formulas") {
  const std::vector<double> r = {1.0, 2.0, 4.0, -1.0, -1.0, 5.0};
  const std::vector<double> grpo = group_advantages(r, 3, AdvantageEstimator::Grpo, true);
  const std::vector<double> dr = group_advantages(r, 3, AdvantageEstimator::Grpo, false);
  const std::vector<double> rloo = group_advantages(r, 3, AdvantageEstimator::Rloo, false);
  // group 1: mean 7/3, Bessel std sqrt(((4/3)^2 + (1/3)^2 + (5/3)^2) / 2) = sqrt(21/9)
  const double mean1 = 7.0 / 3, std1 = std::sqrt(21.0 / 9);
  CHECK(grpo[0] == doctest::Approx((1 - mean1) / (std1 + 1e-6)));
  CHECK(grpo[2] == doctest::Approx((4 - mean1) / (std1 + 1e-6)));
  CHECK(dr[1] == doctest::Approx(2 - mean1));
  // group 2: mean 1, std sqrt((4 + 4 + 16) / 2) = sqrt(12)
  CHECK(grpo[5] == doctest::Approx(4 / (std::sqrt(12.0) + 1e-6)));
  // RLOO: own return minus the mean of the other two
  CHECK(rloo[0] == doctest::Approx(1 - (2 + 4) / 2.0));
  CHECK(rloo[3] == doctest::Approx(-1 - (-1 + 5) / 2.0));
  CHECK(rloo[5] == doctest::Approx(5 - (-1 - 1) / 2.0));
  // RLOO = G/(G-1) * (R - group mean): zero-mean per group
  CHECK(rloo[0] + rloo[1] + rloo[2] == doctest::Approx(0).epsilon(1e-12));
  // equal returns: a zero advantage, not a NaN
  for (double a : group_advantages({3, 3, 3, 3}, 2, AdvantageEstimator::Grpo, true)) CHECK(a == 0.0);
  CHECK_THROWS_WITH_AS(group_advantages(r, 4, AdvantageEstimator::Grpo, true), doctest::Contains("groups of 4"), Error);
  CHECK_THROWS_WITH_AS(group_advantages(r, 1, AdvantageEstimator::Rloo, true), doctest::Contains("at least 2"), Error);
}

TEST_CASE("estimate_advantages: grpo and rloo broadcast the group advantage of the sequence return") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const std::vector<double> returns = sequence_returns();
  for (AdvantageEstimator e : {AdvantageEstimator::Grpo, AdvantageEstimator::Rloo}) {
    // the textbook loop over each group
    std::vector<double> want(B);
    for (int64_t g = 0; g < B / G; ++g) {
      const double* x = &returns[size_t(g * G)];
      const double mean = (x[0] + x[1] + x[2]) / 3;
      const double var = ((x[0] - mean) * (x[0] - mean) + (x[1] - mean) * (x[1] - mean) + (x[2] - mean) * (x[2] - mean)) / 2;
      for (int64_t i = 0; i < G; ++i) {
        double others = 0;
        for (int64_t j = 0; j < G; ++j) others += j == i ? 0 : x[j];
        want[size_t(g * G + i)] = e == AdvantageEstimator::Rloo ? x[i] - others / 2 : (x[i] - mean) / (std::sqrt(var) + 1e-6);
      }
    }
    const Outputs o = run(f, settings(e));
    check_close(o.advantages, on_valid_tokens(want), 1e-5, 1e-5, to_string(e));
    check_close(o.returns, on_valid_tokens(returns), 1e-6, 1e-6, "sequence returns");
    CHECK(std::isnan(o.stats.explained_variance));  // no critic
    CHECK(o.stats.finite);
  }
}

TEST_CASE("estimate_advantages: reinforce_pp is the discounted reward-to-go, whitened over the batch") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  AdvantageSettings s = settings(AdvantageEstimator::ReinforcePP);
  s.gamma = 0.9f;
  s.lam = 0.5f;  // ignored: no critic, lambda 1
  const Outputs raw = run(f, s);
  std::vector<float> want(B * R, 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    double g = 0;
    for (int64_t t = R - 1; t >= 0; --t) {
      if (!kMask[size_t(b * R + t)]) continue;
      g = kRewards[size_t(b * R + t)] + 0.9 * g;
      want[size_t(b * R + t)] = float(g);
    }
  }
  check_close(raw.advantages, want, 1e-6, 1e-5, "reward-to-go");
  check_close(raw.returns, want, 1e-6, 1e-5, "returns");

  s.whiten_advantages = true;
  const Outputs white = run(f, s);
  check_close(white.advantages, whitened(want, kMask), 1e-5, 1e-4, "whitened");
}

TEST_CASE("loss_weights: token-mean, seq-mean-token-sum, seq-mean-token-mean") {
  const std::vector<int32_t> rows = {5, 1, 2};  // lengths 3, 1, 4
  auto weight = [&](LossAggMode m, size_t i) {
    const LossWeights w = loss_weights(m, kMask, R, rows);
    return (w.row.empty() ? 1.0 : double(w.row[i])) / w.denominator;
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    CHECK(weight(LossAggMode::TokenMean, i) == doctest::Approx(1.0 / 8));
    CHECK(weight(LossAggMode::SeqMeanTokenSum, i) == doctest::Approx(1.0 / 3));
  }
  // every sequence weighs 1/3 in all, its tokens equally
  CHECK(weight(LossAggMode::SeqMeanTokenMean, 0) * 3 == doctest::Approx(1.0 / 3));
  CHECK(weight(LossAggMode::SeqMeanTokenMean, 1) * 1 == doctest::Approx(1.0 / 3));
  CHECK(weight(LossAggMode::SeqMeanTokenMean, 2) * 4 == doctest::Approx(1.0 / 3));
  CHECK(loss_weights(LossAggMode::TokenMean, kMask, R, rows).row.empty());
}

TEST_CASE("estimators: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  for (AdvantageEstimator e : {AdvantageEstimator::Grpo, AdvantageEstimator::Rloo, AdvantageEstimator::ReinforcePP}) {
    AdvantageSettings s = settings(e);
    s.gamma = 0.95f;
    s.whiten_advantages = true;
    const Outputs c = run(cpu, s), g = run(*gpu, s);
    CHECK_MESSAGE(rel_l2(g.advantages, c.advantages) < 1e-5, to_string(e));
    CHECK_MESSAGE(rel_l2(g.returns, c.returns) < 1e-5, to_string(e));
  }
}
