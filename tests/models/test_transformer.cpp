// The whole transformer on tiny models of both families (gpt2; llama with grouped-query
// attention, qkv bias and an untied LM head): f64 finite differences of the head losses through
// every parameter tensor, left padding, prefill + decode against the training forward, gradient
// accumulation and AdamW's weight-decay rule.
#include <doctest/doctest.h>

#include <cmath>
#include "../ops/fd_check.h"
#include "tiny_model.h"

using namespace ppo;
using namespace ppo::test;

namespace {

const RunShape kShape{/*rollout_batch=*/2, /*prompt_len=*/4, /*response_len=*/3, /*micro_batch=*/2};  // T = 7

// Per-token loss weights, zero on padding as the PPO loop sets them.
std::vector<float> masked_weights(const std::vector<int32_t>& mask, uint64_t seed) {
  std::vector<float> w = randn(mask.size(), seed);
  for (size_t i = 0; i < w.size(); ++i) w[i] *= float(mask[i]);
  return w;
}

// L = sum_t w_t logp_t + u_t entropy_t (LM head) + v_t value_t (scalar head), by finite
// differences against backward() for a sample of elements of every parameter tensor.
void check_gradients(const ModelSpec& spec) {
  TinyModel tm(spec, kShape, Precision::F64);
  Transformer& m = *tm.model;
  const TinyBatch batch(11);
  const int64_t B = TinyBatch::B, T = TinyBatch::T;
  Tensor tokens = tm.ids(batch.tokens, {B, T}, "tokens"), pos = tm.ids(batch.pos, {B, T}, "pos");
  Tensor mask = tm.ids(batch.mask, {B, T}, "mask"), targets = tm.ids(batch.targets, {B, T}, "targets");
  const std::vector<float> w = masked_weights(batch.mask, 21), u = masked_weights(batch.mask, 22),
                           v = masked_weights(batch.mask, 23);
  Tensor gw = tm.stat(w, {B, T}, "w"), gu = tm.stat(u, {B, T}, "u"), gv = tm.stat(v, {B, T}, "v");
  Tensor logp = tm.stat_out({B, T}, "logp"), ent = tm.stat_out({B, T}, "entropy"), values = tm.stat_out({B, T}, "values");
  const float inv_temperature = 1.0f / 0.7f;

  auto loss = [&] {
    m.forward(tokens, pos, mask);
    double L = 0;
    if (spec.has_lm()) {
      m.lm_logprobs(targets, inv_temperature, logp, ent);
      L += weighted_sum(logp, w) + weighted_sum(ent, u);  // in f64: to_host would round to f32
    }
    if (spec.has_scalar()) {
      m.scalar(values);
      L += weighted_sum(values, v);
    }
    return L;
  };
  m.zero_grad();
  loss();
  if (spec.has_lm()) m.lm_logprobs_backward(gw, gu, inv_temperature);
  if (spec.has_scalar()) m.scalar_backward(gv);
  m.backward();

  // Tolerance: central differences in f64 with h = 1e-5 have truncation error ~h^2 |L'''| ~ 1e-10
  // and rounding error ~1e-16 |L| / h ~ 1e-10 for |L| ~ 10; a wrong gradient is off by O(|grad|).
  const double h = 1e-5, atol = 1e-7, rtol = 1e-5;
  for (size_t i = 0; i < m.parameter_names().size(); ++i) {
    const std::string& name = m.parameter_names()[i];
    Tensor p = m.parameter(name);
    const std::vector<float> grad = tm.backend->to_host(m.gradient(name));
    // a sample of elements: 4 random ones and the last
    std::vector<int32_t> idx = randint(4, 100 + i, 0, int32_t(p.numel()));
    idx.push_back(int32_t(p.numel() - 1));
    if (name.find("wte") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
        name.find("lm_head") != std::string::npos)
      idx.push_back(batch.targets[3] * int32_t(p.dim(1)) + 5);  // a row that a target or token uses
    if (name.find("wte") != std::string::npos || name.find("embed_tokens") != std::string::npos)
      idx.push_back(batch.tokens[9] * int32_t(p.dim(1)) + 2);
    std::vector<float> got, want;
    double max_grad = 0;
    for (int32_t j : idx) {
      double* x = p.ptr<double>() + j;
      const double x0 = *x;
      *x = x0 + h;
      const double up = loss();
      *x = x0 - h;
      const double down = loss();
      *x = x0;
      want.push_back(float((up - down) / (2 * h)));
      got.push_back(grad[size_t(j)]);
      max_grad = std::max(max_grad, std::fabs(double(got.back())));
    }
    check_close(got, want, atol, rtol, arch_name(spec.config.arch) + std::string(" d/d ") + name);
  }
  // The loss reaches every tensor: the largest gradient over all tensors is not zero.
  double total = 0;
  for (const std::string& name : m.parameter_names()) {
    double s = 0;
    for (float g : tm.backend->to_host(m.gradient(name))) s += double(g) * g;
    CHECK_MESSAGE(s > 0, name, " has an all-zero gradient");
    total += s;
  }
  CHECK(std::isfinite(total));
}

}  // namespace

TEST_CASE("finite differences through the whole model: gpt2, LM head") {
  check_gradients({tiny_config(Arch::GPT2), Heads::LM, Training::Trained, Generation::None});
}
TEST_CASE("finite differences through the whole model: gpt2, scalar head") {
  check_gradients({tiny_config(Arch::GPT2), Heads::Scalar, Training::Trained, Generation::None});
}
TEST_CASE("finite differences through the whole model: llama (GQA, qkv bias, untied), LM head") {
  check_gradients({tiny_config(Arch::Llama), Heads::LM, Training::Trained, Generation::None});
}
TEST_CASE("finite differences through the whole model: llama, LM and scalar heads on one trunk") {
  check_gradients({tiny_config(Arch::Llama), Heads::LMAndScalar, Training::Trained, Generation::None});
}

namespace {

// The values of a CPU f32 or f64 tensor, unrounded.
std::vector<double> host_doubles(const Tensor& t) {
  REQUIRE(t.device == DeviceKind::CPU);
  if (t.dtype == DType::F64) return std::vector<double>(t.ptr<double>(), t.ptr<double>() + t.numel());
  REQUIRE(t.dtype == DType::F32);
  return std::vector<double>(t.ptr<float>(), t.ptr<float>() + t.numel());
}

// check_close on double values (the f64 comparisons must not round through f32).
void check_close_f64(const std::vector<double>& got, const std::vector<double>& want, double atol, double rtol,
                 const std::string& what) {
  REQUIRE(got.size() == want.size());
  double max_err = 0;
  long first_bad = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    if (!(err <= atol + rtol * std::fabs(want[i])) && first_bad < 0) first_bad = long(i);
    if (!(err <= max_err)) max_err = err;
  }
  CHECK_MESSAGE(first_bad < 0, what, ": max abs error ", max_err, "; first bad index ", first_bad);
}

// Left padding: row 0 of TinyBatch (2 pads, then 5 real tokens at positions 0..4) gives the
// log-probs, entropies and values of the same 5 tokens run alone, unpadded.
void check_left_padding(Arch arch) {
  const ModelSpec spec{tiny_config(arch), Heads::LMAndScalar, Training::Frozen, Generation::None};
  TinyModel tm(spec, kShape, Precision::F64);
  Transformer& m = *tm.model;
  const TinyBatch batch(31);
  const int64_t B = TinyBatch::B, T = TinyBatch::T, R = 5;  // R real tokens in row 0
  auto run = [&](int64_t b, int64_t t, const std::vector<int32_t>& tok, const std::vector<int32_t>& pos,
                 const std::vector<int32_t>& mask, const std::vector<int32_t>& tgt) {
    Tensor logp = tm.stat_out({b, t}, "logp"), ent = tm.stat_out({b, t}, "entropy"), val = tm.stat_out({b, t}, "values");
    m.forward(tm.ids(tok, {b, t}, "tokens"), tm.ids(pos, {b, t}, "pos"), tm.ids(mask, {b, t}, "mask"));
    m.lm_logprobs(tm.ids(tgt, {b, t}, "targets"), 1.3f, logp, ent);
    m.scalar(val);
    return std::vector<std::vector<float>>{f64_values(logp), f64_values(ent), f64_values(val)};
  };
  const auto padded = run(B, T, batch.tokens, batch.pos, batch.mask, batch.targets);
  const auto tail = [&](const std::vector<int32_t>& v) { return std::vector<int32_t>(v.begin() + (T - R), v.begin() + T); };
  const auto alone = run(1, R, tail(batch.tokens), tail(batch.pos), std::vector<int32_t>(R, 1), tail(batch.targets));
  const char* what[] = {"logp", "entropy", "values"};
  for (int k = 0; k < 3; ++k) {
    const std::vector<float> row0(padded[k].begin() + (T - R), padded[k].begin() + T);
    // f64 on both sides; the same keys are summed, only the BLAS blocking of rows may differ
    check_close(row0, alone[k], 1e-10, 1e-9, std::string(arch_name(arch)) + " left-padded " + what[k]);
  }
  // And the pads matter nowhere: different pad tokens give the same real-token values.
  std::vector<int32_t> tokens2 = batch.tokens;
  tokens2[0] = 5;
  tokens2[1] = 36;
  const auto padded2 = run(B, T, tokens2, batch.pos, batch.mask, batch.targets);
  for (int k = 0; k < 3; ++k)
    for (int64_t t = T - R; t < B * T; ++t)
      CHECK_MESSAGE(padded2[k][size_t(t)] == doctest::Approx(padded[k][size_t(t)]).epsilon(1e-12), what[k], " at ", t);
}

// Prefill of the first P tokens and decode of the rest (teacher forcing) give the logits of the
// training forward at positions P-1 .. T-1 (hidden @ W_lm^T computed here in f64).
void check_prefill_decode(Arch arch, Precision precision, double tol) {
  const ModelSpec spec{tiny_config(arch), Heads::LM, Training::Trained, Generation::KVCache};
  TinyModel tm(spec, kShape, precision);
  Transformer& m = *tm.model;
  const TinyBatch batch(41);
  const int64_t B = TinyBatch::B, T = TinyBatch::T, P = kShape.prompt_len, V = 37, C = 24;
  m.forward(tm.ids(batch.tokens, {B, T}, "tokens"), tm.ids(batch.pos, {B, T}, "pos"), tm.ids(batch.mask, {B, T}, "mask"));
  const std::vector<double> hidden = host_doubles(m.hidden());
  const std::vector<double> wlm = host_doubles(m.parameter(arch == Arch::GPT2 ? "wte.weight" : "lm_head.weight"));
  auto want_logits = [&](int64_t t) {  // (B,V) at position t
    std::vector<double> z(size_t(B * V));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v) {
        double s = 0;
        for (int64_t c = 0; c < C; ++c) s += double(hidden[size_t((b * T + t) * C + c)]) * wlm[size_t(v * C + c)];
        z[size_t(b * V + v)] = s;
      }
    return z;
  };
  // The training activations and the KV cache share arena bytes (train vs rollout phase): the
  // reference logits above were taken first.
  auto columns = [&](const std::vector<int32_t>& v, int64_t start, int64_t width) {
    std::vector<int32_t> out;
    for (int64_t b = 0; b < B; ++b) out.insert(out.end(), v.begin() + b * T + start, v.begin() + b * T + start + width);
    return out;
  };
  Tensor mask = tm.ids(batch.mask, {B, T}, "mask");  // (B,S), S = P + response = T
  Tensor logits = m.prefill(tm.ids(columns(batch.tokens, 0, P), {B, P}, "prompt"),
                            tm.ids(columns(batch.pos, 0, P), {B, P}, "prompt_pos"), mask);
  const std::string name = std::string(arch_name(arch)) + (precision == Precision::F64 ? " f64" : " f32");
  check_close_f64(host_doubles(logits), want_logits(P - 1), tol, tol, name + " prefill logits");
  for (int64_t t = P; t < T; ++t) {
    logits = m.decode(tm.ids(columns(batch.tokens, t, 1), {B}, "token"), tm.ids(columns(batch.pos, t, 1), {B}, "tpos"),
                      mask, t + 1);
    check_close_f64(host_doubles(logits), want_logits(t), tol, tol, name + " decode logits at " + std::to_string(t));
  }
}

}  // namespace

TEST_CASE("left padding gives the unpadded log-probs, entropies and values") {
  check_left_padding(Arch::GPT2);
  check_left_padding(Arch::Llama);
}

TEST_CASE("prefill + decode logits equal the training forward's") {
  // f64: only summation order differs; f32: a few ulps of logits of size ~10 through 2 layers
  check_prefill_decode(Arch::GPT2, Precision::F64, 1e-9);
  check_prefill_decode(Arch::Llama, Precision::F64, 1e-9);
  check_prefill_decode(Arch::GPT2, Precision::F32, 1e-4);
  check_prefill_decode(Arch::Llama, Precision::F32, 1e-4);
}

TEST_CASE("scoring a window of columns (first_column) equals the full pass there, values and gradients") {
  const ModelSpec spec{tiny_config(Arch::GPT2), Heads::LM, Training::Trained, Generation::None};
  TinyModel tm(spec, kShape, Precision::F64);
  Transformer& m = *tm.model;
  const TinyBatch batch(61);
  const int64_t B = TinyBatch::B, T = TinyBatch::T, first = 3;
  // loss weights on the window's columns only (as the PPO loss: response positions)
  std::vector<float> w = masked_weights(batch.mask, 62), u = masked_weights(batch.mask, 63);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < first; ++t) w[size_t(b * T + t)] = u[size_t(b * T + t)] = 0.0f;
  Tensor gw = tm.stat(w, {B, T}, "w"), gu = tm.stat(u, {B, T}, "u");
  Tensor tokens = tm.ids(batch.tokens, {B, T}, "tokens"), pos = tm.ids(batch.pos, {B, T}, "pos");
  Tensor mask = tm.ids(batch.mask, {B, T}, "mask"), targets = tm.ids(batch.targets, {B, T}, "targets");
  auto run = [&](int64_t first_column, std::vector<float>& logp_out, std::vector<float>& ent_out) {
    Tensor logp = tm.stat_out({B, T}, "logp"), ent = tm.stat_out({B, T}, "entropy");
    m.zero_grad();
    m.forward(tokens, pos, mask);
    m.lm_logprobs(targets, 1.0f / 0.7f, logp, ent, first_column);
    m.lm_logprobs_backward(gw, gu, 1.0f / 0.7f);
    m.backward();
    logp_out = tm.backend->to_host(logp);
    ent_out = tm.backend->to_host(ent);
    std::vector<std::vector<float>> grads;
    for (const std::string& n : m.parameter_names()) grads.push_back(tm.backend->to_host(m.gradient(n)));
    return grads;
  };
  std::vector<float> logp_full, ent_full, logp_window, ent_window;
  const auto full = run(0, logp_full, ent_full);
  const auto window = run(first, logp_window, ent_window);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = size_t(b * T + t);
      CHECK(logp_window[i] == doctest::Approx(t < first ? 0.0 : logp_full[i]).epsilon(1e-12));
      CHECK(ent_window[i] == doctest::Approx(t < first ? 0.0 : ent_full[i]).epsilon(1e-12));
    }
  for (size_t i = 0; i < full.size(); ++i) check_close(window[i], full[i], 1e-12, 1e-9, "window d/d " + m.parameter_names()[i]);
  CHECK_THROWS_WITH_AS(m.lm_logprobs(targets, 1.0f, tm.stat_out({B, T}, "x"), Tensor{}, T), doctest::Contains("first_column"),
                       Error);
}

TEST_CASE("gradients accumulate across micro-batches; zero_grad clears them") {
  const ModelSpec spec{tiny_config(Arch::Llama), Heads::LM, Training::Trained, Generation::None};
  TinyModel tm(spec, kShape, Precision::F64);
  Transformer& m = *tm.model;
  const TinyBatch batch(51);
  const int64_t B = TinyBatch::B, T = TinyBatch::T;
  Tensor g = tm.stat(masked_weights(batch.mask, 52), {B, T}, "g"), logp = tm.stat_out({B, T}, "logp");
  auto step = [&] {
    m.forward(tm.ids(batch.tokens, {B, T}, "tokens"), tm.ids(batch.pos, {B, T}, "pos"), tm.ids(batch.mask, {B, T}, "mask"));
    m.lm_logprobs(tm.ids(batch.targets, {B, T}, "targets"), 1.0f, logp, Tensor{});
    m.lm_logprobs_backward(g, Tensor{}, 1.0f);
    m.backward();
  };
  m.zero_grad();
  step();
  std::vector<std::vector<float>> once;
  for (const std::string& n : m.parameter_names()) once.push_back(tm.backend->to_host(m.gradient(n)));
  step();
  for (size_t i = 0; i < once.size(); ++i) {
    std::vector<float> twice = once[i];
    for (float& x : twice) x *= 2;
    check_close(tm.backend->to_host(m.gradient(m.parameter_names()[i])), twice, 1e-12, 1e-9, "2x " + m.parameter_names()[i]);
  }
  m.zero_grad();
  CHECK(m.grad_norm() == 0.0);
}

TEST_CASE("adamw_step: decay on matrices only; clipping scales the gradients to max_grad_norm") {
  const ModelSpec spec{tiny_config(Arch::GPT2), Heads::LMAndScalar, Training::Trained, Generation::None};
  // Zero gradients: Adam's update is 0, so only decoupled weight decay moves weights, by lr*wd*w.
  {
    TinyModel tm(spec, kShape, Precision::F64);
    Transformer& m = *tm.model;
    std::vector<std::vector<float>> before;
    for (const std::string& n : m.parameter_names()) before.push_back(m.get_parameter(n));
    m.zero_grad();
    AdamWParams hp;
    hp.lr = 0.1f;
    hp.weight_decay = 0.5f;
    CHECK(m.grad_norm() == 0.0);
    m.adamw_step(hp, 1.0f, 3);
    for (size_t i = 0; i < before.size(); ++i) {
      const std::string& n = m.parameter_names()[i];
      std::vector<float> want = before[i];
      if (m.parameter(n).ndim == 2)
        for (float& x : want) x *= 1.0f - 0.1f * 0.5f;
      check_close(m.get_parameter(n), want, 1e-9, 1e-6, "decayed " + n);
    }
  }
  // Gradients scaled by 10 and clipped to 1/20 of their norm, or unscaled and clipped to 1/2 of
  // theirs: the same effective gradients, the same step (Adam's eps included).
  std::vector<std::vector<float>> result[2];
  double norms[2];
  for (int scaled = 0; scaled < 2; ++scaled) {
    TinyModel tm(spec, kShape, Precision::F64);
    Transformer& m = *tm.model;
    const TinyBatch batch(61);
    const int64_t B = TinyBatch::B, T = TinyBatch::T;
    std::vector<float> w = masked_weights(batch.mask, 62);
    for (float& x : w) x *= scaled ? 10.0f : 1.0f;
    Tensor logp = tm.stat_out({B, T}, "logp");
    m.zero_grad();
    m.forward(tm.ids(batch.tokens, {B, T}, "tokens"), tm.ids(batch.pos, {B, T}, "pos"), tm.ids(batch.mask, {B, T}, "mask"));
    m.lm_logprobs(tm.ids(batch.targets, {B, T}, "targets"), 1.0f, logp, Tensor{});
    m.lm_logprobs_backward(tm.stat(w, {B, T}, "w"), Tensor{}, 1.0f);
    m.backward();
    const double norm = m.grad_norm();
    AdamWParams hp;
    hp.lr = 0.01f;
    norms[scaled] = norm;
    m.adamw_step(hp, scaled ? float(norm / 10 * 0.5) : float(norm * 0.5), 3);
    for (const std::string& n : m.parameter_names()) result[scaled].push_back(m.get_parameter(n));
  }
  CHECK(norms[1] == doctest::Approx(10 * norms[0]).epsilon(1e-6));  // the weights 10*w are rounded to f32
  for (size_t i = 0; i < result[0].size(); ++i) check_close(result[1][i], result[0][i], 1e-9, 1e-6, "clipped step");
}
