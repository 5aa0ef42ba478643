#include "bench/kernels/harness.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include "engine/device_memory.h"
#include "kernels/cuda/context.h"

namespace ppo::kbench {

namespace {

constexpr size_t kGpuPoolBytes = size_t(6) << 30;  // largest case: copy bandwidth, 2 x 1 GiB
constexpr size_t kCpuPoolBytes = size_t(3) << 30;  // largest case: the vocabulary pass at V=151936
constexpr int64_t kScratchRows = 8 * 1024;         // rows the backends' scratch is sized for
constexpr int64_t kScratchVocab = 151936;          // largest vocabulary benchmarked
constexpr size_t kMinFlushBytes = size_t(64) << 20;
constexpr int kWarmup = 3, kMinReps = 10, kMaxReps = 200;

// splitmix64: fast, seedable, good enough for benchmark inputs.
uint64_t next_bits(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string fixed(double x, int digits) {
  if (std::isnan(x)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, x);
  return buf;
}

std::string sci(double x) {
  if (std::isnan(x)) return "-";
  if (std::isinf(x)) return "inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1e", x);
  return buf;
}

nlohmann::json number_or_null(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }

}  // namespace

const char* Result::verdict() const {
  if (std::isnan(target) || std::isnan(ratio)) return "-";
  return ratio >= target ? "PASS" : "FAIL";
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>* base) {
  if (got.size() != want.size() || (base && base->size() != got.size())) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double b = base ? double((*base)[i]) : 0.0;
    const double g = double(got[i]) - b, w = double(want[i]) - b;
    num += (g - w) * (g - w);
    den += w * w;
  }
  const double r = std::sqrt(num / (den > 0 ? den : 1));
  return std::isnan(r) ? INFINITY : r;
}

// ---- construction -------------------------------------------------------------------------------

Harness::Harness(Options options) : options_(std::move(options)) {
  PPO_ASSERT(cuda_compiled() && cuda_device_count() > 0, "kernel_bench needs a GPU: ",
             cuda_compiled() ? "no GPU answers" : "this build has no CUDA backend");
  device_name_ = cuda_device_name();
  cpu_ = std::make_unique<Backend>(DeviceKind::CPU, Precision::F32);
  gpu_ = std::make_unique<Backend>(DeviceKind::CUDA, Precision::BF16);
  cpu_bytes_ = kCpuPoolBytes;
  gpu_bytes_ = kGpuPoolBytes;
  cpu_base_ = device_alloc(DeviceKind::CPU, cpu_bytes_);
  gpu_base_ = device_alloc(DeviceKind::CUDA, gpu_bytes_);
  cpu_pool_ = std::make_unique<Carver>(cpu_base_, cpu_bytes_, DeviceKind::CPU, "kernel_bench cpu pool");
  gpu_pool_ = std::make_unique<Carver>(gpu_base_, gpu_bytes_, DeviceKind::CUDA, "kernel_bench gpu pool");
  // Scratch regions and the L2 flush buffer live at the bottom of the pools for the whole run.
  for (Backend* b : {cpu_.get(), gpu_.get()}) {
    const size_t bytes = Backend::scratch_bytes(b->precision(), kScratchRows, kScratchVocab);
    Carver& pool = b == cpu_.get() ? *cpu_pool_ : *gpu_pool_;
    const Tensor region = pool.take(DType::I32, {int64_t(bytes / 4)}, "scratch");
    b->set_scratch(Carver(region.data, bytes, b->device(), "scratch"));
  }
  const size_t flush_bytes = std::max(kMinFlushBytes, 2 * size_t(props().l2CacheSize));
  flush_buffer_ = gpu_pool_->take(DType::I32, {int64_t(flush_bytes / 4)}, "l2 flush");
}

Harness::~Harness() {
  if (gpu_) gpu_->synchronize();
  if (gpu_base_) device_free(DeviceKind::CUDA, gpu_base_);
  if (cpu_base_) device_free(DeviceKind::CPU, cpu_base_);
}

cudaStream_t Harness::stream() const { return gpu_->cuda()->stream; }
cublasHandle_t Harness::cublas() const { return gpu_->cuda()->cublas; }
const cudaDeviceProp& Harness::props() const { return gpu_->cuda()->props; }

Harness::Scope::Scope(Harness& h) : h_(h), cpu_mark_(h.cpu_pool_->mark()), gpu_mark_(h.gpu_pool_->mark()) {}
Harness::Scope::~Scope() {
  h_.gpu_->synchronize();  // nothing queued may still use the bytes given back
  h_.cpu_pool_->rewind(cpu_mark_);
  h_.gpu_pool_->rewind(gpu_mark_);
}

// ---- tensors ------------------------------------------------------------------------------------

std::vector<float> Harness::random(size_t n, float scale, Role role) {
  std::vector<float> v(n);
  uint64_t state = seed_++;
  for (float& x : v) {
    const float u = float(next_bits(state) >> 40) * (1.0f / float(1 << 24));  // [0, 1)
    x = scale * (2.0f * u - 1.0f);
    if (role == Role::Act) x = f32_from_bf16(bf16_from_f32(x));
  }
  return v;
}

std::vector<int32_t> Harness::random_ids(size_t n, int32_t lo, int32_t hi) {
  std::vector<int32_t> v(n);
  uint64_t state = seed_++;
  for (int32_t& x : v) x = lo + int32_t(next_bits(state) % uint64_t(hi - lo));
  return v;
}

Tensor Harness::take(DeviceKind device, DType dtype, std::initializer_list<int64_t> dims, const char* name) {
  return (device == DeviceKind::CPU ? *cpu_pool_ : *gpu_pool_).take(dtype, dims, name);
}

namespace {
DType dtype_of(Role role, DeviceKind device) {
  if (role == Role::Ids) return DType::I32;
  if (role == Role::Grad) return DType::F32;
  return device == DeviceKind::CUDA ? DType::BF16 : DType::F32;
}

// dims with dim 0 cut to `rows` (-1: unchanged).
std::vector<int64_t> head_dims(std::initializer_list<int64_t> dims, int64_t rows) {
  std::vector<int64_t> d(dims);
  if (rows >= 0) {
    PPO_ASSERT(rows <= d[0], "kernel_bench: cpu_rows ", rows, " > dim 0 = ", d[0]);
    d[0] = rows;
  }
  return d;
}

Tensor with_dims(Tensor t, const std::vector<int64_t>& d) {
  switch (d.size()) {
    case 1: return t.reshape({d[0]});
    case 2: return t.reshape({d[0], d[1]});
    case 3: return t.reshape({d[0], d[1], d[2]});
    default: return t.reshape({d[0], d[1], d[2], d[3]});
  }
}

int64_t product(const std::vector<int64_t>& d) {
  int64_t n = 1;
  for (int64_t x : d) n *= x;
  return n;
}
}  // namespace

Pair Harness::output(Role role, std::initializer_list<int64_t> dims, const char* name, int64_t cpu_rows) {
  Pair p;
  p.gpu = take(DeviceKind::CUDA, dtype_of(role, DeviceKind::CUDA), dims, name);
  const std::vector<int64_t> d = head_dims(dims, cpu_rows);
  p.cpu = with_dims(take(DeviceKind::CPU, dtype_of(role, DeviceKind::CPU), {product(d)}, name), d);
  if (role != Role::Ids) {
    gpu_->fill(p.gpu, std::nanf(""));
    cpu_->fill(p.cpu, std::nanf(""));
  }
  return p;
}

Pair Harness::input(Role role, const std::vector<float>& host, std::initializer_list<int64_t> dims, const char* name,
                    int64_t cpu_rows) {
  PPO_ASSERT(role != Role::Ids, "kernel_bench: input_ids for ids");
  Pair p = output(role, dims, name, cpu_rows);
  gpu_->from_host(p.gpu, host);
  cpu_->from_host(p.cpu, std::vector<float>(host.begin(), host.begin() + p.cpu.numel()));
  return p;
}

Pair Harness::input_ids(const std::vector<int32_t>& host, std::initializer_list<int64_t> dims, const char* name,
                        int64_t cpu_rows) {
  Pair p = output(Role::Ids, dims, name, cpu_rows);
  gpu_->from_host_ids(p.gpu, host);
  cpu_->from_host_ids(p.cpu, std::vector<int32_t>(host.begin(), host.begin() + p.cpu.numel()));
  return p;
}

Tensor Harness::gpu_tensor(DType dtype, std::initializer_list<int64_t> dims, const char* name) {
  return take(DeviceKind::CUDA, dtype, dims, name);
}

// ---- timing -------------------------------------------------------------------------------------

void Harness::flush_l2() {
  static int value = 0;
  PPO_CHECK_CUDA(cudaMemsetAsync(flush_buffer_.data, (value++) & 0xff, flush_buffer_.bytes(), stream()));
}

double Harness::time_ms(const std::function<void()>& fn) {
  cudaStream_t s = stream();
  cudaEvent_t probe[2];
  for (cudaEvent_t& e : probe) PPO_CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < kWarmup; ++i) fn();
  // One flushed call sizes the repetitions to the budget.
  flush_l2();
  PPO_CHECK_CUDA(cudaEventRecord(probe[0], s));
  fn();
  PPO_CHECK_CUDA(cudaEventRecord(probe[1], s));
  PPO_CHECK_CUDA(cudaEventSynchronize(probe[1]));
  float first = 0;
  PPO_CHECK_CUDA(cudaEventElapsedTime(&first, probe[0], probe[1]));
  for (cudaEvent_t e : probe) PPO_CHECK_CUDA(cudaEventDestroy(e));
  const int reps = int(std::clamp(options_.budget_ms / std::max(double(first), 1e-3), double(kMinReps), double(kMaxReps)));

  std::vector<cudaEvent_t> events(size_t(2 * reps));
  for (cudaEvent_t& e : events) PPO_CHECK_CUDA(cudaEventCreate(&e));
  for (int r = 0; r < reps; ++r) {
    flush_l2();
    PPO_CHECK_CUDA(cudaEventRecord(events[size_t(2 * r)], s));
    fn();
    PPO_CHECK_CUDA(cudaEventRecord(events[size_t(2 * r + 1)], s));
  }
  PPO_CHECK_CUDA(cudaStreamSynchronize(s));
  std::vector<float> ms(static_cast<size_t>(reps));
  for (int r = 0; r < reps; ++r)
    PPO_CHECK_CUDA(cudaEventElapsedTime(&ms[size_t(r)], events[size_t(2 * r)], events[size_t(2 * r + 1)]));
  for (cudaEvent_t e : events) PPO_CHECK_CUDA(cudaEventDestroy(e));
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return double(ms[size_t(reps / 2)]);
}

double Harness::copy_gbs() {
  if (!std::isnan(copy_gbs_)) return copy_gbs_;
  Scope scope(*this);
  const int64_t bytes = int64_t(1) << 30;
  Tensor src = gpu_tensor(DType::I32, {bytes / 4}, "copy src"), dst = gpu_tensor(DType::I32, {bytes / 4}, "copy dst");
  gpu_->fill(src, 1.0f);  // nonzero bytes
  const double ms = time_ms([&] {
    PPO_CHECK_CUDA(cudaMemcpyAsync(dst.data, src.data, size_t(bytes), cudaMemcpyDeviceToDevice, stream()));
  });
  copy_gbs_ = 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
  Result r;
  r.op = "copy d2d";
  r.shape = "1 GiB";
  r.unit = "GB/s";
  r.ms = ms;
  r.rate = copy_gbs_;
  r.formula = "2 x bytes (read + write)";
  r.note = "the memory-bound rows' peer";
  add(r);
  return copy_gbs_;
}

// ---- results ------------------------------------------------------------------------------------

void Harness::add(Result r) {
  std::printf("%-28s %-34s %9.4f ms  %9.2f %-7s  ratio %-6s  rel_l2 %-8s %s\n", r.op.c_str(), r.shape.c_str(), r.ms,
              r.rate, r.unit.c_str(), fixed(r.ratio, 2).c_str(), sci(r.err).c_str(), r.valid() ? "" : "INVALID");
  std::fflush(stdout);
  results_.push_back(std::move(r));
}

bool Harness::all_valid() const {
  return std::all_of(results_.begin(), results_.end(), [](const Result& r) { return r.valid(); });
}

void Harness::print_table() const {
  std::printf("\n===== kernel_bench: %s =====\n", device_name_.c_str());
  std::printf("%-28s %-34s %9s %9s %-7s %-22s %9s %6s %6s %-5s %8s %-5s\n", "op", "shape", "ms", "rate", "unit", "peer",
              "peer", "ratio", "target", "perf", "rel_l2", "check");
  for (const Result& r : results_) {
    std::printf("%-28s %-34s %9.4f %9.2f %-7s %-22s %9s %6s %6s %-5s %8s %-5s\n", r.op.c_str(), r.shape.c_str(), r.ms,
                r.rate, r.unit.c_str(), r.peer.empty() ? "-" : r.peer.c_str(), fixed(r.peer_rate, 2).c_str(),
                fixed(r.ratio, 2).c_str(), fixed(r.target, 2).c_str(), r.verdict(), sci(r.err).c_str(),
                std::isnan(r.err_limit) ? "-" : (r.valid() ? "ok" : "BAD"));
  }
  std::printf("perf: ratio >= target (matmul 0.9 x cuBLAS, attention fwd+bwd 0.8 x SDPA flash, memory-bound 0.7 x copy)\n");
  std::printf("check: validation rel_l2 vs the CPU f32 op <= its limit; %s\n",
              all_valid() ? "all ok" : "SOME OUTPUTS ARE WRONG");
}

void Harness::write_json(const std::string& path) const {
  nlohmann::json rows = nlohmann::json::array();
  for (const Result& r : results_) {
    rows.push_back({{"op", r.op}, {"shape", r.shape}, {"unit", r.unit}, {"ms", number_or_null(r.ms)},
                    {"rate", number_or_null(r.rate)}, {"peer", r.peer}, {"peer_ms", number_or_null(r.peer_ms)},
                    {"peer_rate", number_or_null(r.peer_rate)}, {"ratio", number_or_null(r.ratio)},
                    {"target", number_or_null(r.target)}, {"perf", r.verdict()}, {"rel_l2", number_or_null(r.err)},
                    {"rel_l2_limit", number_or_null(r.err_limit)}, {"valid", r.valid()}, {"formula", r.formula},
                    {"note", r.note}});
  }
  const nlohmann::json doc = {{"device", device_name_},
                              {"sm_count", props().multiProcessorCount},
                              {"l2_bytes", props().l2CacheSize},
                              {"flush_bytes", flush_buffer_.bytes()},
                              {"budget_ms_per_measurement", options_.budget_ms},
                              {"all_valid", all_valid()},
                              {"rows", rows}};
  std::ofstream f(path);
  PPO_ASSERT(f.good(), "kernel_bench: cannot write ", path);
  f << doc.dump(2) << "\n";
  std::printf("wrote %s\n", path.c_str());
}

}  // namespace ppo::kbench
