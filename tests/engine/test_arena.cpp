// The arena: alignment, no overlap except between rollout-only and train-only regions, the
// too-small failure message, and carvers that use exactly the planned bytes.
#include <doctest/doctest.h>

#include "engine/arena.h"

using namespace ppo;

static std::vector<RegionSpec> sample_specs() {
  return {{"policy", "weights", 1000, Phase::Always},   {"policy", "grads", 4001, Phase::Always},
          {"policy", "activations", 777, Phase::Train}, {"policy", "kv_cache", 5000, Phase::Rollout},
          {"value", "activations", 300, Phase::Train},  {"run", "scratch", 1, Phase::Always}};
}

TEST_CASE("arena plan: alignment, overlap only across phases, total") {
  const ArenaPlan plan = ArenaPlan::make(sample_specs());
  REQUIRE(plan.regions.size() == 6);
  for (const Region& r : plan.regions) CHECK(r.offset % kArenaAlignment == 0);
  for (size_t i = 0; i < plan.regions.size(); ++i)
    for (size_t j = i + 1; j < plan.regions.size(); ++j) {
      const Region &a = plan.regions[i], &b = plan.regions[j];
      const bool phase_disjoint = (a.spec.phase == Phase::Rollout && b.spec.phase == Phase::Train) ||
                                  (a.spec.phase == Phase::Train && b.spec.phase == Phase::Rollout);
      if (!phase_disjoint) CHECK_MESSAGE(!plan.overlaps(a, b), a.spec.name, " overlaps ", b.spec.name);
    }
  // always: 1024 + 4096 + 256 = 5376; rollout: 5120; train: 1024 + 512 = 1536
  CHECK(plan.total_bytes == 5376 + 5120);
  // The rollout KV cache and the training activations share bytes.
  CHECK(plan.overlaps(*plan.find("policy", "kv_cache"), *plan.find("policy", "activations")));
  CHECK(plan.find("value", "kv_cache") == nullptr);
}

TEST_CASE("arena plan rejects a region listed twice") {
  std::vector<RegionSpec> specs = sample_specs();
  specs.push_back({"policy", "weights", 8, Phase::Always});
  CHECK_THROWS_WITH_AS(ArenaPlan::make(specs), doctest::Contains("policy/weights twice"), Error);
}

TEST_CASE("too-small device: stops before allocating, with the table and the shortfall") {
  const ArenaPlan plan = ArenaPlan::make(sample_specs());
  try {
    Arena arena(plan, DeviceKind::CPU, 4096);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("too small") != std::string::npos);
    CHECK(msg.find("SHORTFALL " + std::to_string(plan.total_bytes - 4096) + " bytes") != std::string::npos);
    CHECK(msg.find("kv_cache") != std::string::npos);
  }
}

TEST_CASE("carving uses exactly the bytes packed_bytes planned") {
  const std::vector<TensorSpec> tensors = {{"a", DType::F32, {7, 24}}, {"b", DType::BF16, {37}}, {"c", DType::I32, {3, 5, 2}}};
  const size_t bytes = packed_bytes(tensors);
  CHECK(bytes == align_up(7 * 24 * 4) + align_up(37 * 2) + align_up(30 * 4));
  Arena arena(ArenaPlan::make({{"m", "weights", bytes, Phase::Always}}), DeviceKind::CPU, size_t(1) << 30);
  Carver c = arena.carver("m", "weights");
  for (const TensorSpec& t : tensors) {
    Tensor v = c.take(t, t.name.c_str());
    CHECK(reinterpret_cast<uintptr_t>(v.data) % kArenaAlignment == 0);
    CHECK(v.bytes() == t.bytes());
  }
  CHECK(c.used() == bytes);
  CHECK_THROWS_WITH_AS(c.take(DType::F32, {1}, "extra"), doctest::Contains("m/weights is too small for tensor 'extra'"), Error);
  CHECK_THROWS_WITH_AS(arena.carver("m", "grads"), doctest::Contains("no region m/grads"), Error);
}

TEST_CASE("scratch rewinds LIFO") {
  Arena arena(ArenaPlan::make({{"run", "scratch", 4096, Phase::Always}}), DeviceKind::CPU, 1 << 20);
  Carver s = arena.carver("run", "scratch");
  const size_t m0 = s.mark();
  Tensor a = s.take(DType::F32, {10}, "a");
  const size_t m1 = s.mark();
  s.take(DType::F32, {10}, "b");
  s.rewind(m1);
  Tensor b2 = s.take(DType::F32, {10}, "b2");
  CHECK(static_cast<char*>(b2.data) == static_cast<char*>(a.data) + 256);
  s.rewind(m0);
  CHECK(s.used() == 0);
}
