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
  if (spec.has_lm()) m.lm_logprobs_backward(gw, gu);
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
