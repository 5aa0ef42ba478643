// Backend::record: recorded ops do not run when recorded; each run runs them again, reading what
// the device holds then (a step counter); on CUDA they are a captured graph, one launch per run
// (counted on the emulated device), and a host read while recording is an error that leaves the
// backend usable.
#include "helpers.h"

using namespace ppo;
using namespace ppo::test;

namespace {

// Three runs of a recorded append_sampled: columns 0..2 get the step's token, step ends at 3.
void check_runs(BackendFixture& fx) {
  Backend& be = *fx.backend;
  const int64_t B = 2, R = 5;
  Tensor tokens = fx.upload_ids(std::vector<int32_t>(size_t(B * R), -1), {B, R}, "gen_tokens");
  Tensor logp = fx.poisoned(be.stat_dtype(), {B, R}, "gen_logp");
  Tensor done = fx.upload_ids({0, 0}, {B}, "gen_done"), pos = fx.upload_ids({3, 4}, {B}, "step_pos");
  Tensor step = fx.upload_ids({0}, {1}, "gen_step"), ids = fx.upload_ids({7, 8}, {B}, "step_tokens");
  Tensor lp = fx.upload({-1.0f, -2.0f}, be.stat_dtype(), {B}, "step_logp");
  RecordedOps ops = be.record([&] { be.append_sampled(tokens, logp, done, pos, ids, lp, step, {1}, 0); });
  CHECK(be.to_host_ids(step) == std::vector<int32_t>{0});  // recorded, not run
  CHECK(be.to_host_ids(tokens) == std::vector<int32_t>(size_t(B * R), -1));
  reset_cuda_counters();
  for (int i = 0; i < 3; ++i) ops.run();
  if (be.device() == DeviceKind::CUDA && cuda_emulated()) CHECK(cuda_counters().launches == 3);
  CHECK(be.to_host_ids(step) == std::vector<int32_t>{3});
  CHECK(be.to_host_ids(pos) == std::vector<int32_t>{6, 7});
  CHECK(be.to_host_ids(tokens) == std::vector<int32_t>{7, 7, 7, -1, -1, 8, 8, 8, -1, -1});
}

}  // namespace

TEST_CASE("recorded ops: nothing runs at record time; each run reads the device's counter anew (CPU, CUDA)") {
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  check_runs(cpu);
  auto gpu = cuda_backend_or_skip();
  if (gpu) check_runs(*gpu);
}

TEST_CASE("recording on CUDA: a host read inside is an error; the backend works afterwards") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  Backend& be = *gpu->backend;
  Tensor x = gpu->upload({1.0f, 2.0f}, be.stat_dtype(), {2}, "x");
  CHECK_THROWS_WITH_AS(be.record([&] { be.to_host(x); }), doctest::Contains("capturing"), Error);
  RecordedOps none;
  CHECK_THROWS_WITH_AS(none.run(), doctest::Contains("nothing was recorded"), Error);
  check_runs(*gpu);  // the stream left capture mode
}
