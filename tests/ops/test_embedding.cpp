// embedding_forward / embedding_backward: against a plain loop, finite differences in f64, input
// validation, and CUDA against CPU.
#include "helpers.h"

#include "engine/dtype.h"
#include "fd_check.h"

using namespace ppo;
using namespace ppo::test;

namespace {

constexpr int64_t B = 3, T = 7, C = 24, V = 37, P = 11;

// Token ids with a repeat (rows 0 and 5 share a token) so the backward must accumulate.
std::vector<int32_t> sample_tokens() {
  std::vector<int32_t> ids = randint(B * T, 11, 0, V);
  ids[5] = ids[0];
  return ids;
}

// out[n,c] = wte[tok[n],c] + wpe[pos[n],c], in double.
std::vector<float> embedding_reference(const std::vector<int32_t>& tok, const std::vector<int32_t>& pos,
                                       const std::vector<float>& wte, const std::vector<float>* wpe) {
  std::vector<float> out(size_t(B * T * C));
  for (int64_t n = 0; n < B * T; ++n)
    for (int64_t c = 0; c < C; ++c)
      out[size_t(n * C + c)] = float(double(wte[size_t(tok[size_t(n)] * C + c)]) +
                                     (wpe ? double((*wpe)[size_t(pos[size_t(n)] * C + c)]) : 0.0));
  return out;
}

}  // namespace

TEST_CASE("embedding_forward matches the plain loop, with and without wpe") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const std::vector<int32_t> tok = sample_tokens(), pos = randint(B * T, 12, 0, P);
  const std::vector<float> wte_h = randn(V * C, 13), wpe_h = randn(P * C, 14);
  Tensor tokens = f.upload_ids(tok, {B, T}, "tokens"), positions = f.upload_ids(pos, {B, T}, "pos");
  Tensor wte = f.upload(wte_h, DType::F32, {V, C}, "wte"), wpe = f.upload(wpe_h, DType::F32, {P, C}, "wpe");

  Tensor out = f.poisoned(DType::F32, {B, T, C}, "out");
  f.backend->embedding_forward(out, tokens, positions, wte, wpe);
  // One f32 addition of two f32 values: the reference rounds the same exact sum.
  check_close(f.backend->to_host(out), embedding_reference(tok, pos, wte_h, &wpe_h), 0, 0, "out (with wpe)");

  f.backend->embedding_forward(out, tokens, positions, wte, Tensor{});
  check_close(f.backend->to_host(out), embedding_reference(tok, pos, wte_h, nullptr), 0, 0, "out (no wpe)");
}

TEST_CASE("embedding_backward matches finite differences in f64 and accumulates") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  const std::vector<int32_t> tok = sample_tokens(), pos = randint(B * T, 22, 0, P);
  Tensor tokens = f.upload_ids(tok, {B, T}, "tokens"), positions = f.upload_ids(pos, {B, T}, "pos");
  Tensor wte = f.upload(randn(V * C, 23), DType::F64, {V, C}, "wte");
  Tensor wpe = f.upload(randn(P * C, 24), DType::F64, {P, C}, "wpe");
  Tensor out = f.pool->take(DType::F64, {B, T, C}, "out");
  const std::vector<float> w = randn(B * T * C, 25);  // L = sum(out * w), so dout = w
  auto loss = [&] {
    f.backend->embedding_forward(out, tokens, positions, wte, wpe);
    return weighted_sum(out, w);
  };

  // The gradients start from nonzero values: the op must add to them.
  const std::vector<float> dwte0 = randn(V * C, 26), dwpe0 = randn(P * C, 27);
  Tensor dwte = f.upload(dwte0, DType::F64, {V, C}, "dwte"), dwpe = f.upload(dwpe0, DType::F64, {P, C}, "dwpe");
  Tensor dout = f.upload(w, DType::F64, {B, T, C}, "dout");
  f.backend->embedding_backward(dwte, dwpe, dout, tokens, positions);

  // L is linear in the tables, so central differences are exact up to rounding: about
  // 1e-16 * sum|out*w| / h ~ 1e-9 with h = 1e-6; the f32 view of the gradients adds 6e-8 relative.
  // 1e-6 + 1e-5|ref| is far below any missing or doubled row (errors of order 1).
  check_close(minus(f64_values(dwte), dwte0), central_diff(wte, loss), 1e-6, 1e-5, "dwte");
  check_close(minus(f64_values(dwpe), dwpe0), central_diff(wpe, loss), 1e-6, 1e-5, "dwpe");

  // Without wpe only dwte is touched.
  Tensor dwte2 = f.upload(dwte0, DType::F64, {V, C}, "dwte2");
  f.backend->embedding_backward(dwte2, Tensor{}, dout, tokens, positions);
  check_close(f64_values(dwte2), f64_values(dwte), 0, 0, "dwte without dwpe");
}

TEST_CASE("embedding rejects bad inputs, naming the argument") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  std::vector<int32_t> tok = sample_tokens();
  const std::vector<int32_t> pos = randint(B * T, 32, 0, P);
  Tensor positions = f.upload_ids(pos, {B, T}, "pos");
  Tensor wte = f.upload(randn(V * C, 33), DType::F32, {V, C}, "wte");
  Tensor wpe = f.upload(randn(P * C, 34), DType::F32, {P, C}, "wpe");
  Tensor out = f.pool->take(DType::F32, {B, T, C}, "out");

  tok[9] = int32_t(V);
  Tensor bad_tokens = f.upload_ids(tok, {B, T}, "tokens");
  CHECK_THROWS_WITH_AS(f.backend->embedding_forward(out, bad_tokens, positions, wte, wpe),
                       doctest::Contains("token id 37"), Error);
  tok[9] = -1;
  f.backend->from_host_ids(bad_tokens, tok);
  CHECK_THROWS_WITH_AS(f.backend->embedding_forward(out, bad_tokens, positions, wte, wpe),
                       doctest::Contains("token id -1"), Error);

  Tensor tokens = f.upload_ids(sample_tokens(), {B, T}, "tokens");
  std::vector<int32_t> bad_pos = pos;
  bad_pos[3] = int32_t(P);
  Tensor far = f.upload_ids(bad_pos, {B, T}, "pos");
  CHECK_THROWS_WITH_AS(f.backend->embedding_forward(out, tokens, far, wte, wpe), doctest::Contains("position 11"), Error);

  Tensor wte64 = f.pool->take(DType::F64, {V, C}, "wte64");
  CHECK_THROWS_WITH_AS(f.backend->embedding_forward(out, tokens, positions, wte64, wpe), doctest::Contains("'wte'"), Error);
  Tensor short_out = f.pool->take(DType::F32, {B, T, C - 1}, "short_out");
  CHECK_THROWS_WITH_AS(f.backend->embedding_forward(short_out, tokens, positions, wte, wpe), doctest::Contains("'out'"),
                       Error);
  Tensor narrow_wpe = f.pool->take(DType::F32, {P, C + 1}, "narrow_wpe");
  CHECK_THROWS_WITH_AS(f.backend->embedding_forward(out, tokens, positions, wte, narrow_wpe), doctest::Contains("'wpe'"),
                       Error);
  Tensor dwte_bf16 = f.pool->take(DType::BF16, {V, C}, "dwte_bf16");
  CHECK_THROWS_WITH_AS(f.backend->embedding_backward(dwte_bf16, Tensor{}, out, tokens, positions),
                       doctest::Contains("'dwte'"), Error);
}

TEST_CASE("embedding: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  const std::vector<int32_t> tok = sample_tokens(), pos = randint(B * T, 42, 0, P);
  const std::vector<float> wte_h = bf16_rounded(randn(V * C, 43)), wpe_h = bf16_rounded(randn(P * C, 44));
  const std::vector<float> dout_h = bf16_rounded(randn(B * T * C, 45)), dwte0 = randn(V * C, 46), dwpe0 = randn(P * C, 47);
  std::vector<float> results[2][3];  // [cuda, cpu][out, dwte, dwpe]
  auto run = [&](auto* fx, std::vector<float>* r) {
    Backend& be = *fx->backend;
    Tensor tokens = fx->upload_ids(tok, {B, T}, "tokens"), positions = fx->upload_ids(pos, {B, T}, "pos");
    Tensor wte = fx->upload(wte_h, be.act_dtype(), {V, C}, "wte"), wpe = fx->upload(wpe_h, be.act_dtype(), {P, C}, "wpe");
    Tensor out = fx->poisoned(be.act_dtype(), {B, T, C}, "out");
    be.embedding_forward(out, tokens, positions, wte, wpe);
    Tensor dout = fx->upload(dout_h, be.act_dtype(), {B, T, C}, "dout");
    Tensor dwte = fx->upload(dwte0, be.grad_dtype(), {V, C}, "dwte"), dwpe = fx->upload(dwpe0, be.grad_dtype(), {P, C}, "dwpe");
    be.embedding_backward(dwte, dwpe, dout, tokens, positions);
    r[0] = be.to_host(out);
    r[1] = be.to_host(dwte);
    r[2] = be.to_host(dwpe);
  };
  run(gpu.get(), results[0]);
  run(&cpu, results[1]);
  // out is bf16 on CUDA (one rounding of the sum); the gradients are f32 sums of the same bf16 values.
  CHECK(rel_l2(results[0][0], results[1][0]) < 2e-2);
  check_close(results[0][1], results[1][1], 1e-5, 1e-5, "dwte");
  check_close(results[0][2], results[1][2], 1e-5, 1e-5, "dwpe");
}

TEST_CASE("embedding and lm head on CUDA: an id out of range is reported at the next synchronize, naming op, tensor and row, without a host copy of the ids") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  Backend& be = *gpu->backend;
  Tensor wte = gpu->upload(randn(V * C, 51), be.act_dtype(), {V, C}, "wte");
  Tensor wpe = gpu->upload(randn(P * C, 52), be.act_dtype(), {P, C}, "wpe");
  Tensor out = gpu->poisoned(be.act_dtype(), {B, T, C}, "out");
  std::vector<int32_t> tok = sample_tokens(), pos = randint(B * T, 53, 0, P);
  Tensor positions = gpu->upload_ids(pos, {B, T}, "pos");
  tok[5] = int32_t(V) + 3;
  Tensor bad = gpu->upload_ids(tok, {B, T}, "response_tokens");
  reset_cuda_counters();
  be.embedding_forward(out, bad, positions, wte, wpe);  // no error yet, and the ids stay on the device
  CHECK(cuda_counters().d2h_copies == 0);
  CHECK(cuda_counters().syncs == 0);
  CHECK_THROWS_WITH_AS(be.synchronize(), doctest::Contains("embedding_forward: token id 40 in 'response_tokens' (row 5)"), Error);
  be.synchronize();  // reported once
  tok[5] = 0;
  std::vector<int32_t> far = pos;
  far[7] = -1;
  Tensor tokens = gpu->upload_ids(tok, {B, T}, "tokens"), far_pos = gpu->upload_ids(far, {B, T}, "pos");
  be.embedding_forward(out, tokens, far_pos, wte, wpe);
  be.to_host(out);  // reads do not check
  CHECK_THROWS_WITH_AS(be.synchronize(), doctest::Contains("position -1 in 'pos' (row 7) is outside [0,11)"), Error);

  const int64_t N = 4;
  Tensor hidden = gpu->upload(randn(size_t(N * C), 54), be.act_dtype(), {N, C}, "hidden");
  Tensor logp = gpu->poisoned(be.stat_dtype(), {N}, "logp"), ent = gpu->poisoned(be.stat_dtype(), {N}, "entropy"),
         lse = gpu->poisoned(be.stat_dtype(), {N}, "lse");
  Tensor targets = gpu->upload_ids({0, 3, int32_t(V), 1}, {N}, "response_targets");
  be.lm_logprob_entropy_forward(logp, ent, lse, hidden, wte, targets, 1.0f);
  CHECK_THROWS_WITH_AS(be.synchronize(), doctest::Contains("target id 37 in 'response_targets' (row 2) is outside the vocabulary [0,37)"),
                       Error);
}
