// Shared test helpers: seeded random data, owned buffers on any device, tolerance checks that
// report the max error and the first bad index, and the one-line skip when no GPU answers.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/communicator.h"
#include "engine/device_memory.h"
#include "kernels/backend.h"
#include "ppo/config.h"

namespace ppo::test {

// The PPO trainer tests' tiny run on the CPU: a 2-layer GPT-2 of width 16, B = 4 rollouts of 7
// prompt + 6 response tokens, 2 epochs of 2 minibatches in micro-batches of 2. Each test sets what
// it needs on top, then derive().
inline PpoConfig tiny_ppo_config(int64_t vocab_size) {
  PpoConfig c;
  c.device = DeviceChoice::CPU;
  c.policy = {{"arch", "gpt2"}, {"n_layer", 2}, {"n_head", 2}, {"d_model", 16}, {"d_ff", 32},
              {"vocab_size", vocab_size}, {"max_seq_len", 16}};
  c.rollout_batch_size = 4;
  c.prompt_length = 7;
  c.response_length = 6;
  c.micro_batch_size = 2;
  c.ppo_epochs = 2;
  c.num_minibatches = 2;
  c.temperature = 0.9f;
  c.learning_rate = 3e-3f;
  c.value_learning_rate = 3e-3f;
  return c;
}

// Normal(0, scale) values from a fixed seed. Never all zeros.
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<int32_t> randint(size_t n, uint64_t seed, int32_t lo, int32_t hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

// Shapes of the packed-qkv attention ops: qkv (B,T,(NH+2*NKV)*HS), out (B,T,NH*HS).
struct AttentionShape {
  int64_t B, T;
  int NH, NKV, HS;
  int64_t width() const { return int64_t(NH + 2 * NKV) * HS; }
  int64_t qkv_numel() const { return B * T * width(); }
  int64_t out_numel() const { return B * T * NH * HS; }
};

// A pool of device memory (one allocation through engine/) that test tensors are carved from.
class Pool {
 public:
  Pool(DeviceKind device, size_t bytes) : device_(device), base_(device_alloc(device, bytes)),
                                          carver_(base_, bytes, device, "test pool") {}
  ~Pool() { device_free(device_, base_); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  Tensor take(DType dtype, std::initializer_list<int64_t> dims, const char* name = "t") {
    return carver_.take(dtype, dims, name);
  }
  DeviceKind device() const { return device_; }

 private:
  DeviceKind device_;
  void* base_;
  Carver carver_;
};

// A backend with its scratch carved from its own pool.
struct BackendFixture {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Pool> pool;  // tensors for the test
  std::unique_ptr<Pool> scratch;
  BackendFixture(DeviceKind device, Precision precision, size_t pool_bytes = size_t(64) << 20, int64_t vocab = 4096)
      : backend(std::make_unique<Backend>(device, precision)),
        pool(std::make_unique<Pool>(device, pool_bytes)) {
    const size_t sb = Backend::scratch_bytes(precision, 4096, vocab);
    scratch = std::make_unique<Pool>(device, sb);
    backend->set_scratch(Carver(scratch->take(DType::I32, {int64_t(sb / 4)}, "scratch").data, sb, device, "scratch"));
  }
  // A tensor of the given dtype filled from host values.
  Tensor upload(const std::vector<float>& v, DType dtype, std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool->take(dtype, dims, name);
    backend->from_host(t, v);
    return t;
  }
  Tensor upload_ids(const std::vector<int32_t>& v, std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool->take(DType::I32, dims, name);
    backend->from_host_ids(t, v);
    return t;
  }
  // An output tensor poisoned with NaN so an unwritten element fails the comparison.
  Tensor poisoned(DType dtype, std::initializer_list<int64_t> dims, const char* name) {
    Tensor t = pool->take(dtype, dims, name);
    backend->fill(t, std::nanf(""));
    return t;
  }
};

// A CUDA backend, or nullptr after printing one line when this machine has no GPU (or the build
// has no CUDA backend). Usage: auto gpu = cuda_backend_or_skip(); if (!gpu) return;
inline std::unique_ptr<BackendFixture> cuda_backend_or_skip(int64_t vocab = 4096) {
  if (!cuda_compiled() || cuda_device_count() == 0) {
    static bool said = false;
    if (!said) std::printf("SKIP CUDA cases: %s\n", cuda_compiled() ? "no GPU answers" : "built without CUDA");
    said = true;
    return nullptr;
  }
  return std::make_unique<BackendFixture>(DeviceKind::CUDA, Precision::BF16, size_t(256) << 20, vocab);
}

// Whether `ranks` ranks of this job can run NCCL collectives: a build with NCCL and a GPU per rank
// (NCCL refuses two ranks on one GPU; on the emulated device every rank has its own). Else one SKIP
// line and false.
inline bool nccl_ranks_or_skip(int ranks) {
  const char* why = !nccl_compiled()                                  ? "built without NCCL"
                    : !cuda_emulated() && ranks > cuda_device_count() ? "fewer GPUs than ranks"
                                                                      : nullptr;
  if (why) std::printf("SKIP NCCL cases: %s\n", why);
  return why == nullptr;
}

// Checks |got - want| <= atol + rtol*|want| elementwise; on failure reports the max error and the
// first bad index. NaN never passes.
inline void check_close(const std::vector<float>& got, const std::vector<float>& want, double atol, double rtol,
                        const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what, ": size ", got.size(), " vs ", want.size());
  double max_err = 0;
  long first_bad = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    const bool bad = !(err <= atol + rtol * std::fabs(double(want[i])));  // NaN -> bad
    if (bad && first_bad < 0) first_bad = long(i);
    if (!(err <= max_err)) max_err = err;
  }
  CHECK_MESSAGE(first_bad < 0, what, ": max abs error ", max_err, "; first bad index ", first_bad, " got ",
                first_bad >= 0 ? got[size_t(first_bad)] : 0.f, " want ", first_bad >= 0 ? want[size_t(first_bad)] : 0.f,
                " (atol ", atol, ", rtol ", rtol, ")");
}

// The textbook whitening over the entries with mask == 1: (x - mean) / sqrt(var + 1e-8), population
// variance; 0 elsewhere.
inline std::vector<float> whitened(const std::vector<float>& x, const std::vector<int32_t>& mask) {
  double mean = 0, var = 0, n = 0;
  for (size_t i = 0; i < mask.size(); ++i) n += mask[i], mean += mask[i] ? x[i] : 0;
  mean /= n;
  for (size_t i = 0; i < mask.size(); ++i) var += mask[i] ? (x[i] - mean) * (x[i] - mean) / n : 0;
  std::vector<float> out(mask.size(), 0.0f);
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) out[i] = float((x[i] - mean) / std::sqrt(var + 1e-8));
  return out;
}

// ||got - want|| / ||want||, the bf16-vs-f32 comparison measure. NaN gives +inf.
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  const double r = std::sqrt(num / (den > 0 ? den : 1));
  return std::isnan(r) ? INFINITY : r;
}

}  // namespace ppo::test
