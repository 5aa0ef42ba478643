// PPO per-token math: KL estimators, GAE, masked moments and whitening, the clipped policy and
// value losses. Hand-computed cases for every regime, an independent GAE loop, finite differences
// of the loss gradients in f64, input validation, and CUDA against CPU.
#include "helpers.h"

#include <cmath>
#include "engine/dtype.h"
#include "fd_check.h"

using namespace ppo;
using namespace ppo::test;

namespace {

const float kNaN = std::nanf("");

// The loss ops' sums, accumulated from zero into f64 tensors of the fixture and read back.
template <class Fixture>
PolicyLossSums policy_loss(Fixture& fx, Tensor dlogp, Tensor logp, Tensor old, Tensor adv, Tensor mask, float clip_eps,
                           float dual_clip, float weight) {
  Tensor sums = fx.pool->take(DType::F64, {5}, "policy_sums");
  fx.backend->zero(sums);
  fx.backend->ppo_policy_loss(dlogp, sums, logp, old, adv, mask, clip_eps, dual_clip, weight);
  const std::vector<double> s = fx.backend->to_host_f64(sums);
  return {s[0], s[1], s[2], s[3], s[4]};
}
template <class Fixture>
ValueLossSums value_loss(Fixture& fx, Tensor dv, Tensor values, Tensor old, Tensor returns, Tensor mask,
                         float clip_value, float weight) {
  Tensor sums = fx.pool->take(DType::F64, {3}, "value_sums");
  fx.backend->zero(sums);
  fx.backend->ppo_value_loss(dv, sums, values, old, returns, mask, clip_value, weight);
  const std::vector<double> s = fx.backend->to_host_f64(sums);
  return {s[0], s[1], s[2]};
}

// Uniform-ish values in [lo, hi) from a seed.
std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::vector<int32_t> k = randint(n, seed, 0, 1 << 20);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * float(k[i]) / float(1 << 20);
  return v;
}

// Rows whose valid tokens are a prefix of random length in [0, T] (the first row empty, the
// second full).
std::vector<int32_t> prefix_mask(int64_t B, int64_t T, uint64_t seed) {
  std::vector<int32_t> len = randint(size_t(B), seed, 0, int32_t(T) + 1), mask(size_t(B * T));
  len[0] = 0;
  if (B > 1) len[1] = int32_t(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) mask[size_t(b * T + t)] = t < len[size_t(b)];
  return mask;
}

}  // namespace

TEST_CASE("kl_penalty: k1, k2, k3 on known numbers, zero where masked") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  // r = ref - logp = {-0.5, 1, 0 | masked, 2, -3}
  Tensor logp = f.upload({-1.0f, -2.0f, -0.5f, -0.3f, -4.0f, -1.0f}, DType::F32, {2, 3}, "logp");
  Tensor ref = f.upload({-1.5f, -1.0f, -0.5f, kNaN, -2.0f, -4.0f}, DType::F32, {2, 3}, "ref_logp");
  Tensor mask = f.upload_ids({1, 1, 1, 0, 1, 1}, {2, 3}, "mask");
  Tensor kl = f.poisoned(DType::F32, {2, 3}, "kl");
  f.backend->kl_penalty(kl, logp, ref, mask, KLEstimator::K1);
  check_close(f.backend->to_host(kl), {0.5f, -1.0f, 0, 0, -2.0f, 3.0f}, 1e-6, 1e-6, "k1 = -r");
  f.backend->kl_penalty(kl, logp, ref, mask, KLEstimator::K2);
  check_close(f.backend->to_host(kl), {0.125f, 0.5f, 0, 0, 2.0f, 4.5f}, 1e-6, 1e-6, "k2 = r^2/2");
  f.backend->kl_penalty(kl, logp, ref, mask, KLEstimator::K3);
  // exp(-0.5) + 0.5 - 1 = 0.1065307;  e - 2 = 0.7182818;  e^2 - 3 = 4.3890561;  e^-3 + 2 = 2.0497871
  check_close(f.backend->to_host(kl), {0.1065307f, 0.7182818f, 0, 0, 4.3890561f, 2.0497871f}, 1e-6, 1e-6, "k3");
}

TEST_CASE("gae_reverse_scan: a short masked row by hand") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  // gamma = lambda = 0.5. Row 0 valid for t < 3 (padding holds NaN, which must not leak in):
  //   t=2: delta = 2 - (-1) = 3;                 A = 3;                        R = 2
  //   t=1: delta = 0 + 0.5*(-1) - 1 = -1.5;      A = -1.5 + 0.25*3 = -0.75;     R = 0.25
  //   t=0: delta = 1 + 0.5*1 - 0.5 = 1;          A = 1 + 0.25*(-0.75) = 0.8125; R = 1.3125
  // Row 1 fully valid, rewards only at the end: r = {0,0,0,4}, V = {1,1,1,1}
  //   t=3: delta = 4 - 1 = 3, A = 3;  t=2: delta = 0.5 - 1 = -0.5, A = -0.5 + 0.75 = 0.25;
  //   t=1: delta = -0.5, A = -0.5 + 0.0625 = -0.4375;  t=0: delta = -0.5, A = -0.5 - 0.109375 = -0.609375
  Tensor rewards = f.upload({1, 0, 2, kNaN, 0, 0, 0, 4}, DType::F64, {2, 4}, "rewards");
  Tensor values = f.upload({0.5f, 1, -1, kNaN, 1, 1, 1, 1}, DType::F64, {2, 4}, "values");
  Tensor mask = f.upload_ids({1, 1, 1, 0, 1, 1, 1, 1}, {2, 4}, "mask");
  Tensor adv = f.poisoned(DType::F64, {2, 4}, "advantages"), ret = f.poisoned(DType::F64, {2, 4}, "returns");
  f.backend->gae_reverse_scan(adv, ret, rewards, values, mask, 0.5f, 0.5f);
  check_close(f64_values(adv), {0.8125f, -0.75f, 3, 0, -0.609375f, -0.4375f, 0.25f, 3}, 1e-12, 0, "advantages");
  check_close(f64_values(ret), {1.3125f, 0.25f, 2, 0, 0.390625f, 0.5625f, 1.25f, 4}, 1e-12, 0, "returns");
}

TEST_CASE("gae_reverse_scan matches the forward sum A_t = sum_l (gamma lambda)^l delta_{t+l}") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  constexpr int64_t B = 5, T = 9;
  const float gamma = 0.97f, lambda = 0.9f;
  const std::vector<int32_t> mask_h = prefix_mask(B, T, 1);
  std::vector<float> r_h = randn(B * T, 2), v_h = randn(B * T, 3);
  for (size_t i = 0; i < mask_h.size(); ++i)
    if (!mask_h[i]) r_h[i] = v_h[i] = 1e6f;  // padding garbage
  Tensor mask = f.upload_ids(mask_h, {B, T}, "mask");
  Tensor rewards = f.upload(r_h, DType::F32, {B, T}, "rewards"), values = f.upload(v_h, DType::F32, {B, T}, "values");
  Tensor adv = f.poisoned(DType::F32, {B, T}, "advantages"), ret = f.poisoned(DType::F32, {B, T}, "returns");
  f.backend->gae_reverse_scan(adv, ret, rewards, values, mask, gamma, lambda);

  std::vector<float> adv_ref(size_t(B * T), 0), ret_ref(size_t(B * T), 0);
  for (int64_t b = 0; b < B; ++b) {
    int64_t len = 0;
    while (len < T && mask_h[size_t(b * T + len)]) ++len;
    auto V = [&](int64_t t) { return t < len ? double(v_h[size_t(b * T + t)]) : 0.0; };
    for (int64_t t = 0; t < len; ++t) {
      double a = 0, w = 1;
      for (int64_t k = t; k < len; ++k, w *= double(gamma) * lambda)
        a += w * (r_h[size_t(b * T + k)] + double(gamma) * V(k + 1) - V(k));
      adv_ref[size_t(b * T + t)] = float(a);
      ret_ref[size_t(b * T + t)] = float(a + V(t));
    }
  }
  // f32 outputs of O(1) sums; the scan runs in double.
  check_close(f.backend->to_host(adv), adv_ref, 1e-5, 1e-5, "advantages");
  check_close(f.backend->to_host(ret), ret_ref, 1e-5, 1e-5, "returns");
}

TEST_CASE("masked_moments and masked_affine: valid tokens only, no division by zero") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  // Valid {1, 2, 3, 6}: mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5
  Tensor x = f.upload({1, 100, 2, 3, -50, 6}, DType::F32, {2, 3}, "x");
  Tensor mask = f.upload_ids({1, 0, 1, 1, 0, 1}, {2, 3}, "mask");
  MaskedMoments mm = f.backend->masked_moments(x, mask);
  CHECK(mm.count == 4);
  CHECK(mm.mean == doctest::Approx(3.0).epsilon(1e-12));
  CHECK(mm.var == doctest::Approx(3.5).epsilon(1e-12));
  const float rstd = float(1 / std::sqrt(mm.var + 1e-8));
  f.backend->masked_affine(x, mask, float(mm.mean), rstd);
  check_close(f.backend->to_host(x), {-2 * rstd, 0, -rstd, 0, 0, 3 * rstd}, 1e-6, 1e-6, "whitened");
  const MaskedMoments white = f.backend->masked_moments(x, mask);
  CHECK(std::fabs(white.mean) < 1e-6);
  CHECK(white.var == doctest::Approx(1.0).epsilon(1e-5));

  // One valid token: mean is that token, variance 0; whitening with eps stays finite (gives 0).
  Tensor one = f.upload({7, 8, 9, 10, 11, 12}, DType::F32, {2, 3}, "one");
  Tensor mask1 = f.upload_ids({0, 0, 0, 0, 1, 0}, {2, 3}, "mask1");
  mm = f.backend->masked_moments(one, mask1);
  CHECK(mm.count == 1);
  CHECK(mm.mean == 11);
  CHECK(mm.var == 0);
  f.backend->masked_affine(one, mask1, float(mm.mean), float(1 / std::sqrt(mm.var + 1e-8)));
  check_close(f.backend->to_host(one), {0, 0, 0, 0, 0, 0}, 0, 0, "single token whitened");

  // No valid token: all zero, no NaN.
  Tensor none = f.upload_ids({0, 0, 0, 0, 0, 0}, {2, 3}, "none");
  mm = f.backend->masked_moments(x, none);
  CHECK(mm.count == 0);
  CHECK(mm.mean == 0);
  CHECK(mm.var == 0);
}

TEST_CASE("ppo_policy_loss: every clip regime by hand") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  const float eps = 0.2f, weight = 0.5f;
  // token: A, ratio  -> l, dl/dlogp (= -A ratio when the unclipped term is active), clip binds
  //  0: +1, 1.1  inside                 -> -1.1, -1.1, no
  //  1: +1, 1.5  above 1+eps            -> max(-1.5, -1.2) = -1.2, 0, yes
  //  2: +1, 0.5  below 1-eps            -> max(-0.5, -0.8) = -0.5, -0.5, no
  //  3: -1, 0.5  below 1-eps            -> max(0.5, 0.8) = 0.8, 0, yes
  //  4: -1, 1.5  above 1+eps            -> max(1.5, 1.2) = 1.5, 1.5, no
  //  5: -2, 0.9  inside                 -> 1.8, 1.8, no
  //  6: masked (NaN inputs)             -> nothing, dlogp 0
  //  7: -1, 4.0  far above              -> 4.0, 4.0, no (no dual clip in this call)
  const std::vector<float> A = {1, 1, 1, -1, -1, -2, kNaN, -1}, ratio = {1.1f, 1.5f, 0.5f, 0.5f, 1.5f, 0.9f, 1, 4};
  std::vector<float> logp_h(8), old_h(8);
  for (size_t i = 0; i < 8; ++i) {
    old_h[i] = -1.0f - 0.1f * float(i);
    logp_h[i] = float(double(old_h[i]) + std::log(double(ratio[i])));
  }
  logp_h[6] = kNaN;
  Tensor logp = f.upload(logp_h, DType::F64, {2, 4}, "logp"), old = f.upload(old_h, DType::F64, {2, 4}, "old_logp");
  Tensor adv = f.upload(A, DType::F64, {2, 4}, "advantages");
  Tensor mask = f.upload_ids({1, 1, 1, 1, 1, 1, 0, 1}, {2, 4}, "mask");
  Tensor dlogp = f.poisoned(DType::F64, {2, 4}, "dlogp");

  // ratios in f32 through log/exp: ~1e-7 relative.
  const double tol = 1e-6;
  double kl = 0, ratio_sum = 0;
  for (size_t i : {0, 1, 2, 3, 4, 5, 7}) {
    const double lr = double(logp_h[i]) - double(old_h[i]);
    kl += lr * lr / 2;
    ratio_sum += std::exp(lr);
  }
  PolicyLossSums s = policy_loss(f, dlogp, logp, old, adv, mask, eps, 0.0f, weight);
  CHECK(s.loss == doctest::Approx(-1.1 - 1.2 - 0.5 + 0.8 + 1.5 + 1.8 + 4.0).epsilon(tol));
  CHECK(s.clipped == 2);
  CHECK(s.count == 7);
  CHECK(s.approx_kl == doctest::Approx(kl).epsilon(1e-12));
  CHECK(s.ratio == doctest::Approx(ratio_sum).epsilon(1e-12));
  check_close(f64_values(dlogp), {-0.55f, 0, -0.25f, 0, 0.75f, 0.9f, 0, 2.0f}, tol, tol, "dlogp");

  // Dual clip 3 for A < 0: token 7 becomes min(4, 3) = 3 with zero gradient (not counted as
  // clipped: the standard clip does not bind there); token 4 (1.5 < 3) and A > 0 are unchanged.
  s = policy_loss(f, dlogp, logp, old, adv, mask, eps, 3.0f, weight);
  CHECK(s.loss == doctest::Approx(-1.1 - 1.2 - 0.5 + 0.8 + 1.5 + 1.8 + 3.0).epsilon(tol));
  CHECK(s.clipped == 2);
  check_close(f64_values(dlogp), {-0.55f, 0, -0.25f, 0, 0.75f, 0.9f, 0, 0}, tol, tol, "dlogp (dual clip)");
}

TEST_CASE("ppo_value_loss: every clip regime by hand") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  // clip_value 0.2, weight 2. token: v, old, R -> vc, l = 0.5 max((v-R)^2, (vc-R)^2), dl/dv, clipped
  //  0: 1.1, 1.0, 1 -> vc 1.1 (inside);  l = 0.005;             0.1;  no
  //  1: 1.5, 1.0, 1 -> vc 1.2;            l = 0.5*0.25 = 0.125;  0.5;  no (unclipped larger)
  //  2: 0.5, 1.0, 0 -> vc 0.8;            l = 0.5*0.64 = 0.32;   0;    yes
  //  3: 1.5, 1.0, 2 -> vc 1.2;            l = 0.5*0.64 = 0.32;   0;    yes
  //  4: masked
  //  5: -1,  0.0, 1 -> vc -0.2;           l = 0.5*4 = 2;         -2;   no
  Tensor v = f.upload({1.1f, 1.5f, 0.5f, 1.5f, kNaN, -1}, DType::F64, {2, 3}, "values");
  Tensor old = f.upload({1, 1, 1, 1, 0, 0}, DType::F64, {2, 3}, "old_values");
  Tensor R = f.upload({1, 1, 0, 2, 0, 1}, DType::F64, {2, 3}, "returns");
  Tensor mask = f.upload_ids({1, 1, 1, 1, 0, 1}, {2, 3}, "mask");
  Tensor dv = f.poisoned(DType::F64, {2, 3}, "dvalues");
  const ValueLossSums s = value_loss(f, dv, v, old, R, mask, 0.2f, 2.0f);
  CHECK(s.loss == doctest::Approx(0.005 + 0.125 + 0.32 + 0.32 + 2).epsilon(1e-6));
  CHECK(s.clipped == 2);
  CHECK(s.count == 5);
  check_close(f64_values(dv), {0.2f, 1.0f, 0, 0, 0, -4.0f}, 1e-6, 1e-6, "dvalues");
}

TEST_CASE("policy and value loss gradients match finite differences in f64") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  constexpr int64_t B = 3, T = 11;
  const std::vector<int32_t> mask_h = prefix_mask(B, T, 50);
  Tensor mask = f.upload_ids(mask_h, {B, T}, "mask");
  const float weight = 0.37f;
  // loss = sum over valid tokens of l, and dlogp = weight dl/dlogp, so dlogp = weight dloss/dlogp.
  // Log-ratios in [-0.6, 0.6) cross every clip boundary; at h = 1e-6 no token sits within h of a
  // kink for these seeds, so central differences see a smooth piece: error ~1e-9 (rounding / h).
  {
    Tensor old = f.upload(randn(B * T, 51), DType::F64, {B, T}, "old_logp");
    std::vector<float> logp_h = uniform(B * T, 52, -0.6f, 0.6f);
    const std::vector<float> old_h = f64_values(old);
    for (size_t i = 0; i < logp_h.size(); ++i) logp_h[i] += old_h[i];
    Tensor logp = f.upload(logp_h, DType::F64, {B, T}, "logp");
    Tensor adv = f.upload(randn(B * T, 53), DType::F64, {B, T}, "advantages");
    Tensor dlogp = f.pool->take(DType::F64, {B, T}, "dlogp");
    for (float dual : {0.0f, 1.3f}) {
      CAPTURE(dual);
      auto loss = [&] { return policy_loss(f, dlogp, logp, old, adv, mask, 0.2f, dual, weight).loss; };
      std::vector<float> fd = central_diff(logp, loss);
      for (float& g : fd) g *= weight;
      const PolicyLossSums s = policy_loss(f, dlogp, logp, old, adv, mask, 0.2f, dual, weight);
      CHECK(s.clipped > 0);  // the data reaches the clipped regime
      check_close(f64_values(dlogp), fd, 1e-7, 1e-6, "dlogp");
    }
  }
  {
    Tensor old = f.upload(randn(B * T, 61), DType::F64, {B, T}, "old_values");
    Tensor values = f.upload(randn(B * T, 62), DType::F64, {B, T}, "values");
    Tensor R = f.upload(randn(B * T, 63), DType::F64, {B, T}, "returns");
    Tensor dv = f.pool->take(DType::F64, {B, T}, "dvalues");
    auto loss = [&] { return value_loss(f, dv, values, old, R, mask, 0.3f, weight).loss; };
    std::vector<float> fd = central_diff(values, loss);
    for (float& g : fd) g *= weight;
    const ValueLossSums s = value_loss(f, dv, values, old, R, mask, 0.3f, weight);
    CHECK(s.clipped > 0);
    check_close(f64_values(dv), fd, 1e-7, 1e-6, "dvalues");
  }
}

TEST_CASE("PPO math rejects bad inputs, naming the argument") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Tensor a = f.upload(randn(6, 71), DType::F32, {2, 3}, "a"), b = f.upload(randn(6, 72), DType::F32, {2, 3}, "b");
  Tensor out = f.pool->take(DType::F32, {2, 3}, "out"), mask = f.upload_ids({1, 1, 1, 1, 0, 0}, {2, 3}, "mask");
  Tensor mask_f = f.upload({1, 1, 1, 1, 0, 0}, DType::F32, {2, 3}, "mask_f");
  CHECK_THROWS_WITH_AS(f.backend->kl_penalty(out, a, b, mask_f, KLEstimator::K3), doctest::Contains("'mask'"), Error);
  Tensor wide = f.pool->take(DType::F32, {2, 4}, "wide");
  CHECK_THROWS_WITH_AS(f.backend->kl_penalty(out, wide, b, mask, KLEstimator::K1), doctest::Contains("'logp'"), Error);
  Tensor flat = f.upload_ids({1, 1, 1, 1, 0, 0}, {6}, "flat");
  CHECK_THROWS_WITH_AS(f.backend->masked_moments(a, flat), doctest::Contains("must be (B,T)"), Error);
  Tensor a64 = f.pool->take(DType::F64, {2, 3}, "a64");
  CHECK_THROWS_WITH_AS(f.backend->gae_reverse_scan(out, a64, a, b, mask, 1, 1), doctest::Contains("'returns'"), Error);
  CHECK_THROWS_WITH_AS(policy_loss(f, out, a, b, wide, mask, 0.2f, 0, 1), doctest::Contains("'advantages'"), Error);
  CHECK_THROWS_WITH_AS(value_loss(f, out, a, b, a64, mask, 0.2f, 1), doctest::Contains("'returns'"), Error);
}

TEST_CASE("PPO math: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  constexpr int64_t B = 6, T = 301;  // rows longer than one block of 256
  const std::vector<int32_t> mask_h = prefix_mask(B, T, 81);
  const std::vector<float> logp_h = uniform(B * T, 82, -3, -0.1f), ref_h = uniform(B * T, 83, -3, -0.1f);
  const std::vector<float> old_h = uniform(B * T, 84, -3, -0.1f), x_h = randn(B * T, 85), v_h = randn(B * T, 86);
  const std::vector<float> oldv_h = randn(B * T, 87), r_h = randn(B * T, 88, 0.1f);
  struct Result {
    std::vector<float> kl[3], adv, ret, white, dlogp, dv;
    MaskedMoments mm;
    PolicyLossSums pl;
    ValueLossSums vl;
  } res[2];
  auto run = [&](auto* fx, Result& o) {
    Backend& be = *fx->backend;
    const DType st = be.stat_dtype();
    Tensor mask = fx->upload_ids(mask_h, {B, T}, "mask");
    Tensor logp = fx->upload(logp_h, st, {B, T}, "logp"), ref = fx->upload(ref_h, st, {B, T}, "ref_logp");
    Tensor old = fx->upload(old_h, st, {B, T}, "old_logp"), x = fx->upload(x_h, st, {B, T}, "x");
    Tensor values = fx->upload(v_h, st, {B, T}, "values"), old_v = fx->upload(oldv_h, st, {B, T}, "old_values");
    Tensor rewards = fx->upload(r_h, st, {B, T}, "rewards");
    Tensor kl = fx->poisoned(st, {B, T}, "kl");
    for (int k = 0; k < 3; ++k) {
      be.kl_penalty(kl, logp, ref, mask, KLEstimator(k));
      o.kl[k] = be.to_host(kl);
    }
    Tensor adv = fx->poisoned(st, {B, T}, "advantages"), ret = fx->poisoned(st, {B, T}, "returns");
    be.gae_reverse_scan(adv, ret, rewards, values, mask, 0.99f, 0.95f);
    o.adv = be.to_host(adv);
    o.ret = be.to_host(ret);
    o.mm = be.masked_moments(x, mask);
    be.masked_affine(x, mask, float(o.mm.mean), float(1 / std::sqrt(o.mm.var + 1e-8)));
    o.white = be.to_host(x);
    Tensor dlogp = fx->poisoned(st, {B, T}, "dlogp"), dv = fx->poisoned(st, {B, T}, "dvalues");
    o.pl = policy_loss(*fx, dlogp, logp, old, ret, mask, 0.2f, 3.0f, 0.01f);
    o.vl = value_loss(*fx, dv, values, old_v, ret, mask, 0.2f, 0.01f);
    o.dlogp = be.to_host(dlogp);
    o.dv = be.to_host(dv);
  };
  run(gpu.get(), res[0]);
  run(&cpu, res[1]);
  // Everything here is f32 on both backends: only operation order and exp/log ulps differ.
  const double atol = 1e-5, rtol = 1e-4;
  for (int k = 0; k < 3; ++k) check_close(res[0].kl[k], res[1].kl[k], atol, rtol, "kl");
  check_close(res[0].adv, res[1].adv, atol, rtol, "advantages");
  check_close(res[0].ret, res[1].ret, atol, rtol, "returns");
  check_close(res[0].white, res[1].white, atol, rtol, "whitened");
  check_close(res[0].dlogp, res[1].dlogp, atol, rtol, "dlogp");
  check_close(res[0].dv, res[1].dv, atol, rtol, "dvalues");
  CHECK(res[0].mm.count == res[1].mm.count);
  CHECK(res[0].mm.mean == doctest::Approx(res[1].mm.mean).epsilon(1e-5));
  CHECK(res[0].mm.var == doctest::Approx(res[1].mm.var).epsilon(1e-5));
  CHECK(res[0].pl.loss == doctest::Approx(res[1].pl.loss).epsilon(1e-4));
  CHECK(std::fabs(res[0].pl.clipped - res[1].pl.clipped) <= 1);  // a token exactly at a boundary may flip
  CHECK(res[0].pl.approx_kl == doctest::Approx(res[1].pl.approx_kl).epsilon(1e-4));
  CHECK(res[0].pl.ratio == doctest::Approx(res[1].pl.ratio).epsilon(1e-4));
  CHECK(res[0].pl.count == res[1].pl.count);
  CHECK(res[0].vl.loss == doctest::Approx(res[1].vl.loss).epsilon(1e-4));
  CHECK(std::fabs(res[0].vl.clipped - res[1].vl.clipped) <= 1);
  CHECK(res[0].vl.count == res[1].vl.count);
}

TEST_CASE("the loss ops and masked_sum add into their sums: two calls, twice the sums") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  constexpr int64_t B = 3, T = 5;
  const std::vector<int32_t> mask_h = prefix_mask(B, T, 91);
  Tensor mask = f.upload_ids(mask_h, {B, T}, "mask");
  Tensor x = f.upload(randn(B * T, 92), DType::F32, {B, T}, "x");
  Tensor sums = f.pool->take(DType::F64, {2}, "sums");
  f.backend->zero(sums);
  f.backend->masked_sum(sums, x, mask);
  const MaskedMoments m = f.backend->masked_moments(x, mask);
  const std::vector<double> once = f.backend->to_host_f64(sums);
  CHECK(once[1] == m.count);
  CHECK(once[0] == doctest::Approx(m.mean * m.count).epsilon(1e-12));
  f.backend->masked_sum(sums, x, mask);
  const std::vector<double> twice = f.backend->to_host_f64(sums);
  CHECK(twice[0] == 2 * once[0]);
  CHECK(twice[1] == 2 * once[1]);
  Tensor sums5 = f.pool->take(DType::F64, {5}, "sums5");
  f.backend->zero(sums5);
  Tensor dlogp = f.pool->take(DType::F32, {B, T}, "dlogp"), adv = f.upload(randn(B * T, 93), DType::F32, {B, T}, "adv");
  Tensor lp = f.upload(uniform(B * T, 94, -3, -0.1f), DType::F32, {B, T}, "logp");
  Tensor old = f.upload(uniform(B * T, 95, -3, -0.1f), DType::F32, {B, T}, "old");
  for (int k = 0; k < 2; ++k) f.backend->ppo_policy_loss(dlogp, sums5, lp, old, adv, mask, 0.2f, 0.0f, 1.0f);
  const PolicyLossSums one = policy_loss(f, dlogp, lp, old, adv, mask, 0.2f, 0.0f, 1.0f);
  const std::vector<double> two = f.backend->to_host_f64(sums5);
  CHECK(two[0] == doctest::Approx(2 * one.loss).epsilon(1e-12));
  CHECK(two[4] == 2 * one.count);
  CHECK_THROWS_WITH_AS(f.backend->masked_sum(sums5, x, mask), doctest::Contains("'sums'"), Error);
}

TEST_CASE("masked_sum: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  constexpr int64_t B = 5, T = 300;
  const std::vector<int32_t> mask_h = prefix_mask(B, T, 96);
  const std::vector<float> x_h = randn(B * T, 97);
  std::vector<double> got[2];
  auto run = [&](auto& fx, std::vector<double>& out) {
    Tensor sums = fx.pool->take(DType::F64, {2}, "sums");
    fx.backend->zero(sums);
    fx.backend->masked_sum(sums, fx.upload(x_h, fx.backend->stat_dtype(), {B, T}, "x"),
                           fx.upload_ids(mask_h, {B, T}, "mask"));
    out = fx.backend->to_host_f64(sums);
  };
  run(*gpu, got[0]);
  run(cpu, got[1]);
  CHECK(got[0][1] == got[1][1]);
  CHECK(got[0][0] == doctest::Approx(got[1][0]).epsilon(1e-9));
}
