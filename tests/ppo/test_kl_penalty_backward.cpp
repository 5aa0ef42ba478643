// kl_penalty_backward: the KL loss term's gradient (kl_in_reward = false). Checked against central
// finite differences of kl_penalty in f64 for each estimator, the "+=" rule, masking, and CUDA
// against CPU.
#include "helpers.h"

#include <cmath>
#include "ppo/config.h"

using namespace ppo;
using namespace ppo::test;

namespace {

constexpr int64_t B = 3, T = 7;

std::vector<int32_t> ragged_mask() {
  std::vector<int32_t> m(size_t(B * T), 0);
  const int64_t len[B] = {7, 3, 0};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < len[b]; ++t) m[size_t(b * T + t)] = 1;
  return m;
}

}  // namespace

TEST_CASE("kl_penalty_backward: finite differences of kl_penalty in f64, += onto dlogp, 0 added where masked") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  const std::vector<int32_t> mask_h = ragged_mask();
  const std::vector<float> logp_h = randn(B * T, 11, 0.7f), ref_h = randn(B * T, 12, 0.7f), base_h = randn(B * T, 13);
  Tensor mask = f.upload_ids(mask_h, {B, T}, "mask");
  Tensor ref = f.upload(ref_h, DType::F64, {B, T}, "ref_logp");
  Tensor logp = f.upload(logp_h, DType::F64, {B, T}, "logp");
  Tensor kl = f.pool->take(DType::F64, {B, T}, "kl");
  const float weight = 0.37f;
  for (KLEstimator est : {KLEstimator::K1, KLEstimator::K2, KLEstimator::K3}) {
    Tensor dlogp = f.upload(base_h, DType::F64, {B, T}, "dlogp");
    f.backend->kl_penalty_backward(dlogp, logp, ref, mask, est, weight);
    const std::vector<float> got = f.backend->to_host(dlogp);
    // d/dlogp_i of weight * sum_j kl_j by central differences; f64 with h = 1e-5 gives ~1e-10
    // truncation error on these smooth functions, so 1e-7 cannot hide a wrong sign or factor.
    std::vector<float> want(base_h);
    const double h = 1e-5;
    for (size_t i = 0; i < want.size(); ++i) {
      if (!mask_h[i]) continue;
      double sum[2];
      for (int s = 0; s < 2; ++s) {
        std::vector<double> lp(logp_h.begin(), logp_h.end());
        lp[i] += s == 0 ? h : -h;
        Tensor lpt = f.pool->take(DType::F64, {B, T}, "lp");
        std::copy(lp.begin(), lp.end(), lpt.ptr<double>());
        f.backend->kl_penalty(kl, lpt, ref, mask, est);
        sum[s] = 0;
        for (int64_t j = 0; j < B * T; ++j) sum[s] += kl.ptr<double>()[j];
      }
      want[i] = float(double(base_h[i]) + weight * (sum[0] - sum[1]) / (2 * h));
    }
    check_close(got, want, 1e-6, 1e-6, std::string("kl_penalty_backward ") + to_string(est));
  }
}

TEST_CASE("kl_penalty_backward: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  constexpr int64_t BB = 5, TT = 301;
  std::vector<int32_t> mask_h = randint(size_t(BB * TT), 21, 0, 2);
  const std::vector<float> logp_h = randn(BB * TT, 22, 0.5f), ref_h = randn(BB * TT, 23, 0.5f), base_h = randn(BB * TT, 24);
  for (KLEstimator est : {KLEstimator::K1, KLEstimator::K2, KLEstimator::K3}) {
    std::vector<float> out[2];
    int k = 0;
    for (BackendFixture* fx : {&cpu, gpu.get()}) {
      Tensor mask = fx->upload_ids(mask_h, {BB, TT}, "mask");
      Tensor logp = fx->upload(logp_h, DType::F32, {BB, TT}, "logp"), ref = fx->upload(ref_h, DType::F32, {BB, TT}, "ref");
      Tensor dlogp = fx->upload(base_h, DType::F32, {BB, TT}, "dlogp");
      fx->backend->kl_penalty_backward(dlogp, logp, ref, mask, est, 0.25f);
      out[k++] = fx->backend->to_host(dlogp);
    }
    // f32 on both devices: only expm1f vs expm1 differ
    check_close(out[1], out[0], 1e-5, 1e-5, std::string("cuda vs cpu ") + to_string(est));
  }
}
