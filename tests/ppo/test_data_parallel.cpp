// Data parallel on CPU ranks (engine/communicator.h, DESIGN.md "Distributed"): the same config on
// the ranks of this job (`mpirun -np N`, CTest label mpi; one rank without a launcher) and on one
// rank alone (Ranks::Self, run in every process) gives the same training. Tolerance: the ranks sum
// their micro-batches' gradients and loss sums in another order than one rank does, so f32 values
// agree to rounding: |a - b| <= 1e-5 + 1e-4 |b| per metric and 1e-5 + 1e-4 |b| per weight after two
// steps (a wrong gradient scale, a missing rank's share or a stale shard is off by O(1) relative).
// On one rank (no launcher) the two runs are the same computation: bitwise equal.
// Also: the sampled tokens of a row do not depend on the rank count (Philox streams by global row);
// a checkpoint of one rank resumes on N and the reverse; SFT and reward-model steps; the ZeRO-1
// plan shards the optimizer state.
#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/communicator.h"
#include "helpers.h"
#include "io/checkpoint.h"
#include "ppo/demo_pipeline.h"
#include "ppo/reward_training.h"
#include "ppo/run_plan.h"
#include "ppo/sft.h"
#include "ppo/trainer.h"

using namespace ppo;
using namespace ppo::test;
namespace fs = std::filesystem;

namespace {

// B = 8 rollouts (2 per rank on 4 ranks), minibatches of 4 in micro-batches of 2: on 4 ranks some
// ranks have no micro-batch of a minibatch (they add zero gradients). Adaptive KL and running score
// normalization: global statistics the ranks must agree on.
PpoConfig tiny_config(const std::string& output_dir) {
  PpoConfig c = test::tiny_ppo_config(37);
  c.rollout_batch_size = 8;
  c.adaptive_kl = true;
  c.kl_target = 0.01f;
  c.kl_horizon = 100.0f;
  c.normalize_scores = true;
  c.whiten_rewards = true;
  c.max_grad_norm = 0.05f;  // clipping active: the global norm matters
  c.total_steps = 2;
  c.seed = 11;
  c.output_dir = output_dir;
  c.derive();
  return c;
}

TrainerOptions options(Ranks ranks) {
  TrainerOptions o;
  o.print_plan = false;
  o.ranks = ranks;
  o.prompts = PromptSource::token_ids({{1, 2, 3},
                                       {4, 5},
                                       {6, 7, 8, 9},
                                       {10},
                                       {11, 12, 13, 14, 15},
                                       {16, 17},
                                       {18, 19, 20},
                                       {21},
                                       {22, 23},
                                       {24, 25, 26, 27}});
  return o;
}

// A directory every rank sees: the same path on every rank (the ranks run on one machine here).
std::string shared_dir(const Communicator& world, const char* name) {
  const std::string dir = fs::temp_directory_path() / (std::string(name) + "_np" + std::to_string(world.size()));
  if (world.is_root()) fs::remove_all(dir);
  world.barrier();
  return dir;
}

// This process's own directory (the one-rank runs of every rank must not share files).
std::string own_dir(const Communicator& world, const char* name) {
  const std::string dir = fs::temp_directory_path() / (std::string(name) + "_np" + std::to_string(world.size()) +
                                                       "_rank" + std::to_string(world.rank()));
  fs::remove_all(dir);
  return dir;
}

bool close(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::abs(a - b) <= 1e-5 + 1e-4 * std::abs(b);
}

// Rows equal (one rank: bitwise) or within the tolerance (several), timings aside.
void check_rows(const MetricsRow& many, const MetricsRow& one, int ranks, int step) {
  for (const auto& item : one.items()) {
    const std::string key = item.first;
    if (key.rfind("time/", 0) == 0 || key.find("per_s") != std::string::npos) continue;  // timings
    const double want = item.second, got = many.get(key);
    INFO("step ", step, " on ", ranks, " ranks: metric ", key, " = ", got, ", one rank: ", want);
    if (ranks == 1)
      CHECK(std::memcmp(&got, &want, sizeof(double)) == 0);
    else
      CHECK(close(got, want));
  }
}

// Every parameter of `a` (N ranks) against `b` (one rank): the largest difference, first bad index.
void check_weights(Transformer& a, Transformer& b, int ranks) {
  const HostWeights wa = read_weights(a), wb = read_weights(b);
  REQUIRE(wa.size() == wb.size());
  for (const auto& weights : wa) {  // no structured binding: doctest's messages capture it in lambdas
    const std::string name = weights.first;
    const std::vector<float>& va = weights.second;
    const std::vector<float>& vb = wb.at(name);
    REQUIRE(va.size() == vb.size());
    double max_err = 0;
    int64_t first_bad = -1;
    for (size_t i = 0; i < va.size(); ++i) {
      const bool ok = ranks == 1 ? std::memcmp(&va[i], &vb[i], sizeof(float)) == 0 : close(va[i], vb[i]);
      max_err = std::max(max_err, std::abs(double(va[i]) - double(vb[i])));
      if (!ok && first_bad < 0) first_bad = int64_t(i);
    }
    const std::string owner = a.owner();
    INFO(owner, ": ", name, " on ", ranks, " ranks: max |diff| ", max_err, ", first bad index ", first_bad);
    CHECK(first_bad == -1);
  }
}

std::vector<float> flat(const HostWeights& w) {
  std::vector<float> out;
  for (const auto& item : w) out.insert(out.end(), item.second.begin(), item.second.end());
  return out;
}

}  // namespace

TEST_CASE("PPO steps on N ranks equal the one-rank steps up to reduction order") {
  PpoTrainer many(tiny_config(""), options(Ranks::World));
  const Communicator& ranks = many.ranks();
  const int N = ranks.size();
  PpoTrainer one(tiny_config(""), options(Ranks::Self));
  REQUIRE(one.ranks().size() == 1);
  CHECK(many.ranks().kind() == (N == 1 ? CommKind::Single : CommKind::Mpi));
  // ZeRO-1: this rank holds 1/N of the optimizer state (plus the padding to N x 128 elements)
  const Transformer::Shard& s = many.policy().shard();
  CHECK(s.end - s.begin == s.total / N);
  CHECK(s.begin == ranks.rank() * (s.total / N));
  CHECK(many.policy().state_shard("adam_m").numel() == s.total / N);

  for (int step = 1; step <= 2; ++step) {
    const MetricsRow a = many.step(), b = one.step();
    CHECK(a.get(metric::kSkipped) == 0.0);
    check_rows(a, b, N, step);
  }
  CHECK(many.kl_controller().coef() == doctest::Approx(one.kl_controller().coef()).epsilon(1e-4));
  check_weights(many.policy(), one.policy(), N);
  check_weights(many.value_model(), one.value_model(), N);
  // every rank holds the same weights (the all-gather of the updated shards)
  const std::vector<float> mine = flat(read_weights(many.policy()));
  const std::vector<float> rank0 = [&] {
    std::vector<float> w = mine;
    ranks.host_broadcast(w.data(), w.size() * sizeof(float), 0);
    return w;
  }();
  CHECK(std::memcmp(mine.data(), rank0.data(), mine.size() * sizeof(float)) == 0);
}

// The same on CUDA ranks: NCCL (on the emulated device the shim over MPI, so the NCCL path's
// counts, offsets and in-place layouts run in CI). The compared weights are the f32 master copies
// (read_weights gathers their shards); the bf16 forwards see the same rows in smaller batches.
TEST_CASE("CUDA ranks (NCCL): PPO steps on N ranks equal the one-rank steps up to reduction order") {
  if (!cuda_backend_or_skip()) return;
  if (!nccl_ranks_or_skip(ProcessGroup::world().size)) return;
  PpoConfig c = tiny_config("");
  c.device = DeviceChoice::CUDA;
  c.derive();
  PpoTrainer many(c, options(Ranks::World));
  const int N = many.ranks().size();
  CHECK(many.ranks().kind() == (N == 1 ? CommKind::Single : CommKind::Nccl));
  PpoTrainer one(c, options(Ranks::Self));
  for (int step = 1; step <= 2; ++step) {
    const MetricsRow a = many.step(), b = one.step();
    CHECK(a.get(metric::kSkipped) == 0.0);
    check_rows(a, b, N, step);
  }
  check_weights(many.policy(), one.policy(), N);
  check_weights(many.value_model(), one.value_model(), N);
}

TEST_CASE("a row samples the same tokens on any number of ranks (Philox streams by global row)") {
  PpoTrainer many(tiny_config(""), options(Ranks::World));
  PpoTrainer one(tiny_config(""), options(Ranks::Self));
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}, {10},
                                                     {11, 12},  {13},   {14, 15},     {16}};
  const Experience a = many.make_experience(prompts), b = one.make_experience(prompts);
  REQUIRE(a.B == b.B);
  for (int64_t r = 0; r < a.B; ++r) {
    const std::vector<int32_t> ra = a.response(r), rb = b.response(r);
    INFO("row ", r, " on ", many.ranks().size(), " ranks");
    CHECK(ra == rb);
  }
  // the scored batch is whole on every rank: old log-probs, values, scores
  REQUIRE(a.old_logp.size() == b.old_logp.size());
  for (size_t i = 0; i < a.old_logp.size(); ++i) CHECK(close(a.old_logp[i], b.old_logp[i]));
  REQUIRE(a.scores.size() == b.scores.size());
  for (size_t i = 0; i < a.scores.size(); ++i) CHECK(close(a.scores[i], b.scores[i]));
}

TEST_CASE("checkpoints resume across rank counts: one rank's on N, N ranks' on one") {
  const std::unique_ptr<Communicator> world = [] {
    BackendFixture fx(DeviceKind::CPU, Precision::F32, size_t(1) << 16);
    return Communicator::create(ProcessGroup::world(), *fx.backend);
  }();
  const int N = world->size();
  // the uninterrupted one-rank run: 2 steps
  PpoTrainer straight(tiny_config(""), options(Ranks::Self));
  const MetricsRow s1 = straight.step(), s2 = straight.step();

  SUBCASE("one rank saves, N ranks resume") {
    const std::string dir = shared_dir(*world, "ppo_dp_resume_from_one");
    if (world->is_root()) {
      PpoConfig c = tiny_config(dir);
      c.save_every = 1;
      PpoTrainer t(c, options(Ranks::Self));
      check_rows(t.step(), s1, 1, 1);
    }
    world->barrier();
    PpoConfig c = tiny_config(dir + "_resumed");
    c.resume = dir + "/checkpoints";
    PpoTrainer resumed(c, options(Ranks::World));
    CHECK(resumed.steps_done() == 1);
    check_rows(resumed.step(), s2, N, 2);
    check_weights(resumed.policy(), straight.policy(), N);
    check_weights(resumed.value_model(), straight.value_model(), N);
  }
  SUBCASE("N ranks save, one rank resumes") {
    const std::string dir = shared_dir(*world, "ppo_dp_resume_from_many");
    PpoConfig c = tiny_config(dir);
    c.save_every = 1;
    {
      PpoTrainer t(c, options(Ranks::World));
      check_rows(t.step(), s1, N, 1);
    }
    // one set of files, as one rank writes them: weights and the whole optimizer state
    CHECK(fs::exists(dir + "/checkpoints/step_1/policy.safetensors"));
    world->barrier();
    PpoConfig r = tiny_config(own_dir(*world, "ppo_dp_resume_one"));
    r.resume = dir + "/checkpoints";
    PpoTrainer resumed(r, options(Ranks::Self));
    check_rows(resumed.step(), s2, N, 2);
    check_weights(resumed.policy(), straight.policy(), N);
    check_weights(resumed.value_model(), straight.value_model(), N);
    world->barrier();  // every rank has read the files before rank 0's next subcase removes them
  }
}

TEST_CASE("SFT and reward-model steps on N ranks equal the one-rank steps") {
  const DemoTask task(3);
  nlohmann::json j = demo_policy_config();
  j["max_seq_len"] = 16;
  j["d_model"] = 32;
  j["d_ff"] = 128;
  j["n_head"] = 2;
  const ModelConfig config = ModelConfig::from_json(j, "test policy");
  SUBCASE("SFT: 12 examples in micro-batches of 2 (shares of 3 and 3, 2 and 1 ... on N ranks)") {
    const std::vector<SftExample> data = demo_sft_examples(task, 0, 12);
    const ModelSpec spec{config, Heads::LM, Training::Trained, Generation::None};
    SingleModel many(DeviceKind::CPU, spec, {1, 7, 8, 2}, "model", std::nullopt, Ranks::World);
    SingleModel one(DeviceKind::CPU, spec, {1, 7, 8, 2}, "model", std::nullopt, Ranks::Self);
    many.model().init_random(5);
    one.model().init_random(5);
    SftConfig sc;
    sc.batch_size = 12;
    sc.micro_batch_size = 2;
    sc.learning_rate = 3e-3f;
    sc.max_grad_norm = 0.5f;
    SftTrainer a(many, sc), b(one, sc);
    const int N = many.ranks().size();
    for (int step = 1; step <= 2; ++step) check_rows(a.train_step(data), b.train_step(data), N, step);
    CHECK(close(a.evaluate(data), b.evaluate(data)));
    check_weights(many.model(), one.model(), N);
  }
  SUBCASE("reward model: 10 pairs in micro-batches of 3") {
    const std::vector<PreferenceExample> pairs = demo_preference_examples(task, 0, 10, 0.1);
    const ModelSpec spec{config, Heads::Scalar, Training::Trained, Generation::None};
    SingleModel many(DeviceKind::CPU, spec, {1, 7, 8, 6}, "model", std::nullopt, Ranks::World);
    SingleModel one(DeviceKind::CPU, spec, {1, 7, 8, 6}, "model", std::nullopt, Ranks::Self);
    many.model().init_random(3);
    one.model().init_random(3);
    RewardTrainingConfig rc;
    rc.batch_size = 10;
    rc.micro_batch_size = 3;
    rc.learning_rate = 1e-3f;
    RewardTrainer a(many, rc), b(one, rc);
    const int N = many.ranks().size();
    for (int step = 1; step <= 2; ++step) check_rows(a.train_step(pairs), b.train_step(pairs), N, step);
    const PreferenceEval ea = a.evaluate(pairs), eb = b.evaluate(pairs);
    CHECK(close(ea.loss, eb.loss));
    CHECK(close(ea.accuracy, eb.accuracy));
    check_weights(many.model(), one.model(), N);
  }
}

TEST_CASE("the plan of one of N ranks: AdamW state sharded (ZeRO-1), its rollout share, weights whole") {
  const PpoConfig c = tiny_config("");
  for (int64_t N : {2, 4}) {
    const ArenaPlan one = ArenaPlan::make(run_regions(c, Precision::BF16, Scoring::RewardModel, 1));
    const ArenaPlan many = ArenaPlan::make(run_regions(c, Precision::BF16, Scoring::RewardModel, N));
    auto bytes = [](const ArenaPlan& plan, const char* name) {
      const Region* r = plan.find("policy", name);
      REQUIRE(r != nullptr);
      return r->spec.bytes;
    };
    const size_t unit = size_t(N) * 128 * 4;                 // the layout is padded to N x 128 f32 elements
    CHECK(bytes(many, "weights") >= bytes(one, "weights"));  // whole on every rank
    CHECK(bytes(many, "weights") < bytes(one, "weights") + unit);
    CHECK(bytes(many, "adam_m") * size_t(N) >= bytes(one, "adam_m"));  // one N-th
    CHECK(bytes(many, "adam_m") * size_t(N) < bytes(one, "adam_m") + unit);
    CHECK(bytes(many, "master") == bytes(many, "adam_m"));  // f32 master, f32 moments: the same shard
    // its rollout share of the KV cache (each of its tensors aligned to 256 bytes)
    CHECK(bytes(many, "kv_cache") < bytes(one, "kv_cache") / size_t(N) + 4096);
    const std::string report = plan_report(c, DeviceKind::CUDA, Scoring::RewardModel, many, std::nullopt, N);
    CHECK(report.find("data parallel: " + std::to_string(N) + " ranks") != std::string::npos);
    CHECK(report.find("ZeRO-1") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(run_shape(c, 3), doctest::Contains("must be a multiple of the 3 ranks"), Error);
}
