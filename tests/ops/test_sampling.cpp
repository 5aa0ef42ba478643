// Token sampling (temperature, top-k, top-p, Philox uniforms): determinism from (seed, stream),
// the documented draw, empirical frequencies against the filtered distribution, argmax for
// top_k = 1, ties, excluded tokens never drawn, logp from the full distribution, CUDA against CPU.
#include <algorithm>
#include <cmath>
#include <numeric>
#include "engine/philox.h"
#include "helpers.h"

using namespace ppo;
using namespace ppo::test;

namespace {

struct Sampled { std::vector<int32_t> tokens; std::vector<float> logp; };

Sampled sample(BackendFixture& fx, const std::vector<float>& logits, int64_t B, int64_t V, float inv_t, int top_k,
               float top_p, uint64_t seed, uint64_t stream) {
  Tensor tokens = fx.pool->take(DType::I32, {B}, "tokens");
  fx.backend->fill(tokens, -1.0f);
  Tensor logp = fx.poisoned(fx.backend->stat_dtype(), {B}, "logp");
  fx.backend->sample_tokens(tokens, logp, fx.upload(logits, fx.backend->act_dtype(), {B, V}, "logits"), inv_t, top_k,
                            top_p, seed, stream);
  Sampled s{fx.backend->to_host_ids(tokens), fx.backend->to_host(logp)};
  return s;
}

// log softmax(logits * inv_t) in double.
std::vector<double> full_logp(const float* logits, int64_t V, float inv_t) {
  std::vector<double> z(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) z[size_t(v)] = double(logits[v]) * inv_t;
  const double mx = *std::max_element(z.begin(), z.end());
  double Z = 0;
  for (double x : z) Z += std::exp(x - mx);
  for (double& x : z) x = x - mx - std::log(Z);
  return z;
}

// The distribution the sampler draws from, from backend.h: rank by p (ties: lower id), keep the
// first top_k, then the shortest prefix whose mass (relative to the top-k set) reaches top_p,
// renormalize. Written with an index sort (the CPU op uses value thresholds instead).
std::vector<double> filtered_distribution(const float* logits, int64_t V, float inv_t, int top_k, float top_p) {
  const auto lp = full_logp(logits, V, inv_t);
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lp[size_t(a)] > lp[size_t(b)]; });
  int64_t keep = top_k > 0 ? std::min<int64_t>(top_k, V) : V;
  double mass_k = 0;
  for (int64_t i = 0; i < keep; ++i) mass_k += std::exp(lp[size_t(order[size_t(i)])]);
  if (top_p < 1) {
    double cum = 0;
    for (int64_t i = 0; i < keep; ++i) {
      cum += std::exp(lp[size_t(order[size_t(i)])]);
      if (cum >= top_p * mass_k) {
        keep = i + 1;
        break;
      }
    }
  }
  std::vector<double> q(static_cast<size_t>(V), 0.0);
  double Z = 0;
  for (int64_t i = 0; i < keep; ++i) Z += std::exp(lp[size_t(order[size_t(i)])]);
  for (int64_t i = 0; i < keep; ++i) q[size_t(order[size_t(i)])] = std::exp(lp[size_t(order[size_t(i)])]) / Z;
  return q;
}

// B copies of one row.
std::vector<float> repeat_rows(const std::vector<float>& row, int64_t B) {
  std::vector<float> x;
  for (int64_t b = 0; b < B; ++b) x.insert(x.end(), row.begin(), row.end());
  return x;
}

}  // namespace

TEST_CASE("sampling is a function of (seed, stream + row) and follows the documented draw") {
  const int64_t B = 64, V = 37;
  BackendFixture fx(DeviceKind::CPU, Precision::F32);
  const auto logits = randn(size_t(B * V), 1101, 2.0f);
  const auto a = sample(fx, logits, B, V, 1.0f, 0, 1.0f, 7, 100);
  const auto b = sample(fx, logits, B, V, 1.0f, 0, 1.0f, 7, 100);
  CHECK(a.tokens == b.tokens);
  CHECK(a.logp == b.logp);
  const auto other_stream = sample(fx, logits, B, V, 1.0f, 0, 1.0f, 7, 100 + B);
  const auto other_seed = sample(fx, logits, B, V, 1.0f, 0, 1.0f, 8, 100);
  CHECK(a.tokens != other_stream.tokens);
  CHECK(a.tokens != other_seed.tokens);
  // Row b uses stream + b: row 5 alone with stream 105 draws the same token.
  const std::vector<float> row5(logits.begin() + 5 * V, logits.begin() + 6 * V);
  CHECK(sample(fx, row5, 1, V, 1.0f, 0, 1.0f, 7, 105).tokens[0] == a.tokens[5]);
  // Unfiltered: the token is the inverse CDF (id order) of u = uniform_from_bits(philox_draw(seed, stream + b, 0).v[0]).
  for (int64_t r = 0; r < B; ++r) {
    const auto lp = full_logp(logits.data() + r * V, V, 1.0f);
    const double u = uniform_from_bits(philox_draw(7, 100 + uint64_t(r), 0).v[0]);
    int64_t tok = V - 1;
    double cum = 0;
    for (int64_t v = 0; v < V; ++v)
      if ((cum += std::exp(lp[size_t(v)])) > u) {
        tok = v;
        break;
      }
    CHECK_MESSAGE(a.tokens[size_t(r)] == tok, "row ", r);
  }
}

TEST_CASE("empirical frequencies match the tempered, filtered distribution; excluded tokens never appear") {
  // n = 20000 draws (distinct streams) of one row of V = 11 logits. Each token's frequency must lie
  // within 5 standard errors sqrt(q(1-q)/n) + 1e-3 of its probability q (at most ~0.018); a
  // token with q = 0 must never appear. Philox makes the draws fixed, so the test is deterministic;
  // with fresh draws a correct sampler would fail it with probability < 1e-5.
  const int64_t V = 11, B = 4000, calls = 5, n = B * calls;
  const auto row = randn(size_t(V), 1201, 1.5f);
  struct Config { float temperature; int top_k; float top_p; };
  for (Config c : {Config{1.0f, 0, 1.0f}, Config{0.7f, 4, 1.0f}, Config{1.3f, 0, 0.8f}, Config{1.0f, 6, 0.7f},
                   Config{2.0f, 3, 0.5f}}) {
    CAPTURE(c.temperature);
    CAPTURE(c.top_k);
    CAPTURE(c.top_p);
    BackendFixture fx(DeviceKind::CPU, Precision::F32);
    const auto q = filtered_distribution(row.data(), V, 1.0f / c.temperature, c.top_k, c.top_p);
    std::vector<int64_t> count(static_cast<size_t>(V), 0);
    for (int64_t k = 0; k < calls; ++k)
      for (int32_t t : sample(fx, repeat_rows(row, B), B, V, 1.0f / c.temperature, c.top_k, c.top_p, 3, uint64_t(k * B)).tokens) {
        REQUIRE((t >= 0 && t < V));
        ++count[size_t(t)];
      }
    for (int64_t v = 0; v < V; ++v) {
      CAPTURE(v);
      const double f = double(count[size_t(v)]) / double(n), p = q[size_t(v)];
      if (p == 0) CHECK(count[size_t(v)] == 0);
      else CHECK(std::fabs(f - p) <= 5 * std::sqrt(p * (1 - p) / double(n)) + 1e-3);
    }
  }
}

TEST_CASE("top_k = 1 is the argmax (ties: lower id); top-k ties keep the lower ids") {
  const int64_t B = 50, V = 37;
  BackendFixture fx(DeviceKind::CPU, Precision::F32);
  auto logits = randn(size_t(B * V), 1301, 3.0f);
  logits[size_t(7 * V + 30)] = logits[size_t(7 * V + 4)] = 100.0f;  // row 7: a tie for the maximum
  const auto s = sample(fx, logits, B, V, 0.5f, 1, 1.0f, 11, 0);
  for (int64_t r = 0; r < B; ++r) {
    const auto first = logits.begin() + r * V;
    CHECK_MESSAGE(s.tokens[size_t(r)] == int32_t(std::max_element(first, first + V) - first), "row ", r);
  }
  CHECK(s.tokens[7] == 4);
  // Logits [1, 3, 3, 3, 0], top_k = 2: tokens 1 and 2 are kept, token 3 (tied with them) is not.
  const auto t = sample(fx, repeat_rows({1, 3, 3, 3, 0}, 2000), 2000, 5, 1.0f, 2, 1.0f, 12, 0);
  int64_t ones = 0;
  for (int32_t tok : t.tokens) {
    REQUIRE((tok == 1 || tok == 2));
    ones += tok == 1;
  }
  CHECK(std::abs(double(ones) / 2000 - 0.5) < 0.05);  // 4.5 standard errors
}

TEST_CASE("logp is the log-prob of the full tempered distribution, also under top-k/top-p") {
  const int64_t B = 40, V = 37;
  for (Precision prec : {Precision::F32, Precision::F64}) {
    BackendFixture fx(DeviceKind::CPU, prec);
    const auto logits = randn(size_t(B * V), 1401, 2.0f);
    const auto s = sample(fx, logits, B, V, 1.0f / 0.8f, 5, 0.6f, 13, 0);
    std::vector<float> want(static_cast<size_t>(B));
    for (int64_t r = 0; r < B; ++r) want[size_t(r)] = float(full_logp(logits.data() + r * V, V, 1.0f / 0.8f)[size_t(s.tokens[size_t(r)])]);
    // f32: logits*inv_t rounded to f32, |z| <= ~20: |error| ~ 1e-6.
    check_close(s.logp, want, 1e-5, 1e-5, "sampled logp vs full log-softmax");
  }
}

TEST_CASE("sampling CUDA vs CPU: the same tokens from the same (seed, stream)") {
  const int64_t B = 64, V = 1000;
  auto gpu = cuda_backend_or_skip(V);
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32, size_t(64) << 20, V);
  // Well separated and exact in bf16: multiples of 1/4 in [-16, 16) (8 significant bits suffice),
  // so both backends see identical logits and differ only by rounding in the softmax sums.
  std::vector<float> logits = randn(size_t(B * V), 1501, 4.0f);
  for (float& x : logits) x = std::round(std::clamp(x, -16.0f, 15.75f) * 4) / 4;
  struct Config { float inv_t; int top_k; float top_p; };
  for (Config c : {Config{1.0f, 0, 1.0f}, Config{1.0f / 0.7f, 50, 1.0f}, Config{1.0f, 0, 0.9f}, Config{2.0f, 1, 1.0f}}) {
    CAPTURE(c.inv_t);
    CAPTURE(c.top_k);
    CAPTURE(c.top_p);
    const auto g = sample(*gpu, logits, B, V, c.inv_t, c.top_k, c.top_p, 99, 1234);
    const auto h = sample(cpu, logits, B, V, c.inv_t, c.top_k, c.top_p, 99, 1234);
    CHECK(g.tokens == h.tokens);
    check_close(g.logp, h.logp, 1e-3, 1e-3, "logp cuda vs cpu");
  }
}

TEST_CASE("mask_token_logits: the ids' logits become -inf, nothing else changes; CUDA as the CPU") {
  const int64_t B = 3, V = 40;
  const std::vector<float> logits = randn(size_t(B * V), 1601);
  const std::vector<int32_t> ids = {0, 7, 39};
  auto masked = [&](BackendFixture& fx) {
    Tensor t = fx.upload(logits, fx.backend->act_dtype(), {B, V}, "logits");
    fx.backend->mask_token_logits(t, ids);
    return fx.backend->to_host(t);
  };
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const std::vector<float> got = masked(cpu);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t v = 0; v < V; ++v) {
      const bool gone = v == 0 || v == 7 || v == 39;
      const float x = got[size_t(b * V + v)];
      CHECK_MESSAGE((gone ? std::isinf(x) && x < 0 : x == logits[size_t(b * V + v)]), "(", b, ",", v, ")");
    }
  Tensor t = cpu.upload(logits, DType::F32, {B, V}, "logits");
  CHECK_THROWS_WITH_AS(cpu.backend->mask_token_logits(t, {40}), doctest::Contains("outside [0,40)"), Error);
  CHECK_THROWS_WITH_AS(cpu.backend->mask_token_logits(t, std::vector<int32_t>(17, 1)), doctest::Contains("at most"), Error);

  auto gpu = cuda_backend_or_skip(V);
  if (!gpu) return;
  const std::vector<float> g = masked(*gpu);
  for (size_t i = 0; i < g.size(); ++i)
    CHECK(((std::isinf(got[i]) && std::isinf(g[i]) && g[i] < 0) ||
           g[i] == doctest::Approx(logits[i]).epsilon(1e-2)));  // bf16 on the GPU
}

TEST_CASE(
    "a step counter on the device: the stream advances by step * stride, the stop mask holds while step < below") {
  const int64_t B = 3, V = 50;
  const std::vector<float> logits = randn(size_t(B * V), 1701, 2.0f);
  auto run = [&](BackendFixture& fx) {
    Tensor step = fx.upload_ids({3}, {1}, "gen_step");
    Tensor tokens = fx.pool->take(DType::I32, {B}, "tokens"), logp = fx.poisoned(fx.backend->stat_dtype(), {B}, "logp");
    fx.backend->sample_tokens(tokens, logp, fx.upload(logits, fx.backend->act_dtype(), {B, V}, "logits"), 1.0f, 0, 1.0f,
                              99, 1000, step, 7);
    const Sampled counted{fx.backend->to_host_ids(tokens), fx.backend->to_host(logp)};
    const Sampled plain = sample(fx, logits, B, V, 1.0f, 0, 1.0f, 99, 1000 + 3 * 7);
    CHECK(counted.tokens == plain.tokens);
    CHECK(counted.logp == plain.logp);
    // Across many streams the counter moves the draw: some row must differ from stream 1000's.
    CHECK(sample(fx, logits, B, V, 1.0f, 0, 1.0f, 99, 1000).tokens != counted.tokens);

    Tensor t = fx.upload(logits, fx.backend->act_dtype(), {B, V}, "logits");
    fx.backend->mask_token_logits(t, {4}, step, 3);  // step 3 is not below 3: unchanged
    CHECK(!std::isinf(fx.backend->to_host(t)[4]));
    fx.backend->mask_token_logits(t, {4}, step, 4);
    const std::vector<float> masked = fx.backend->to_host(t);
    for (int64_t b = 0; b < B; ++b) CHECK((std::isinf(masked[size_t(b * V + 4)]) && masked[size_t(b * V + 4)] < 0));
    return counted;
  };
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const Sampled want = run(cpu);
  auto gpu = cuda_backend_or_skip(V);
  if (!gpu) return;
  CHECK(run(*gpu).tokens == want.tokens);
}

TEST_CASE(
    "append_sampled: column step[0], then step + 1; a stop token ends a row, later columns are padding; CUDA as "
    "the CPU; a step past the columns is an error") {
  const int64_t B = 3, R = 4;
  const int32_t pad = 9, eos = 5;
  // Per step, the rows' sampled tokens: row 2 stops at step 0, row 1 at step 1.
  const std::vector<std::vector<int32_t>> sampled = {{1, 3, eos}, {2, eos, 4}, {6, 7, 8}, {2, 2, 2}};
  auto run = [&](BackendFixture& fx) {
    Tensor tokens = fx.pool->take(DType::I32, {B, R}, "gen_tokens");
    Tensor logp = fx.poisoned(fx.backend->stat_dtype(), {B, R}, "gen_logp");
    Tensor done = fx.upload_ids({0, 0, 0}, {B}, "gen_done"), pos = fx.upload_ids({10, 11, 12}, {B}, "step_pos");
    Tensor step = fx.upload_ids({0}, {1}, "gen_step");
    for (int64_t t = 0; t < R; ++t) {
      Tensor ids = fx.upload_ids(sampled[size_t(t)], {B}, "step_tokens");
      Tensor lp = fx.upload({-1.0f - float(t), -2.0f, -3.0f}, fx.backend->stat_dtype(), {B}, "step_logp");
      fx.backend->append_sampled(tokens, logp, done, pos, ids, lp, step, {eos, 0}, pad);
    }
    CHECK(fx.backend->to_host_ids(step) == std::vector<int32_t>{int32_t(R)});
    CHECK(fx.backend->to_host_ids(pos) == std::vector<int32_t>{14, 15, 16});
    CHECK(fx.backend->to_host_ids(done) == std::vector<int32_t>{0, 1, 1});
    CHECK(fx.backend->to_host_ids(tokens) == std::vector<int32_t>{1, 2, 6, 2, 3, eos, pad, pad, eos, pad, pad, pad});
    CHECK(fx.backend->to_host(logp) == std::vector<float>{-1, -2, -3, -4, -2, -2, 0, 0, -3, 0, 0, 0});
    // One more step than there are columns.
    Tensor ids = fx.upload_ids({1, 1, 1}, {B}, "step_tokens");
    Tensor lp = fx.upload({0, 0, 0}, fx.backend->stat_dtype(), {B}, "step_logp");
    auto past_the_end = [&] {
      fx.backend->append_sampled(tokens, logp, done, pos, ids, lp, step, {eos}, pad);
      fx.backend->synchronize();
    };
    CHECK_THROWS_WITH_AS(past_the_end(), doctest::Contains("gen_step"), Error);
  };
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  run(cpu);
  auto gpu = cuda_backend_or_skip();
  if (gpu) run(*gpu);
}
