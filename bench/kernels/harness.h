// The one validate-and-time harness of bench/kernels (README.md beside this file). Every kernel
// benchmark, and every variant under bench/kernels/<op>/, goes through it:
//   1. validate: the same random inputs (bf16-rounded, never zeros) on a CPU f32 Backend and the
//      CUDA Backend; outputs poisoned with NaN first; error = ||gpu - cpu|| / ||cpu|| (relative L2;
//      for "+=" outputs, of the increments);
//   2. time on the GPU: warm-up calls, then repetitions each preceded by a write of a buffer larger
//      than L2 (inputs come from device memory, not the cache), each bracketed by cudaEvents on the
//      backend's stream; the median is reported;
//   3. one row per measurement (rate, peer, ratio, target, validation error), printed as a table
//      and written as JSON.
// Device memory comes from two pools allocated through engine/device_memory.h (no other device
// allocation); each case takes tensors inside a Scope and gives them back when it ends.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>
#include "engine/arena.h"
#include "engine/cuda_check.h"
#include "kernels/backend.h"

namespace ppo::kbench {

// The dtype a tensor gets on each device: act (f32 cpu / bf16 cuda), grad-or-stat (f32 on both), ids.
enum class Role : uint8_t { Act, Grad, Ids };

// The same logical tensor on both devices. `cpu` may hold only the first rows (dim 0) of `gpu`:
// validation then runs on that leading slice (a smaller problem of the same kernel).
struct Pair {
  Tensor cpu, gpu;
  // The GPU tensor's leading rows matching the CPU copy.
  Tensor gpu_head() const { return gpu.shape[0] == cpu.shape[0] ? gpu : gpu.slice0(0, cpu.shape[0]); }
};

// One measured row of the final table.
struct Result {
  std::string op, shape;
  std::string unit;             // "TFLOP/s" or "GB/s"
  double ms = NAN, rate = NAN;  // engine (or variant): median time, work / time
  std::string peer;             // what the ratio compares against ("" = nothing)
  double peer_ms = NAN, peer_rate = NAN;
  double ratio = NAN;           // rate / peer_rate
  double target = NAN;          // ratio >= target passes (NaN: no target)
  double err = NAN, err_limit = NAN;  // validation relative L2 and its bound (NaN: not validated)
  std::string formula;          // how the work (FLOPs or bytes) was counted
  std::string note;

  bool valid() const { return std::isnan(err_limit) || err <= err_limit; }  // NaN err fails
  const char* verdict() const;  // "PASS", "FAIL" or "-"
};

// ||got - want|| / ||want|| over all elements (NaN or a size mismatch gives +inf). With `base`, of
// the increments got - base and want - base (for "+=" outputs that started at `base`).
double rel_l2(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>* base = nullptr);

struct Options {
  std::string only;       // run only cases whose op name contains this
  std::string json_path;  // write the table here ("" = don't)
  std::string sdpa_json;  // PyTorch SDPA peer results (bench/peers/sdpa_bench.py), "" = none
  double budget_ms = 150; // timed repetitions per measurement: about this much device time
};

class Harness {
 public:
  explicit Harness(Options options);
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  const Options& options() const { return options_; }
  Backend& cpu() { return *cpu_; }
  Backend& gpu() { return *gpu_; }
  cudaStream_t stream() const;
  cublasHandle_t cublas() const;
  const cudaDeviceProp& props() const;
  const std::string& device_name() const { return device_name_; }
  bool wants(const std::string& op) const { return options_.only.empty() || op.find(options_.only) != std::string::npos; }

  // Gives back, when it ends, every tensor taken from both pools since it began (LIFO).
  class Scope {
   public:
    explicit Scope(Harness& h);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Harness& h_;
    size_t cpu_mark_, gpu_mark_;
  };

  // Fresh random values (uniform in [-scale, scale], bf16-representable when `role` is Act), from
  // the harness's running seed: every call gives new values.
  std::vector<float> random(size_t n, float scale = 1.0f, Role role = Role::Act);
  std::vector<int32_t> random_ids(size_t n, int32_t lo, int32_t hi);
  // A tensor on both devices holding `host` (the CPU copy: its first cpu_rows rows, -1 = all).
  Pair input(Role role, const std::vector<float>& host, std::initializer_list<int64_t> dims, const char* name,
             int64_t cpu_rows = -1);
  Pair input_ids(const std::vector<int32_t>& host, std::initializer_list<int64_t> dims, const char* name,
                 int64_t cpu_rows = -1);
  // An output on both devices, poisoned with NaN.
  Pair output(Role role, std::initializer_list<int64_t> dims, const char* name, int64_t cpu_rows = -1);
  // A GPU-only tensor (peers, variants).
  Tensor gpu_tensor(DType dtype, std::initializer_list<int64_t> dims, const char* name);

  // Median milliseconds of fn() on the GPU stream (warm-up, L2 flush before each repetition).
  double time_ms(const std::function<void()>& fn);
  // Device-to-device copy bandwidth (cudaMemcpyAsync of 1 GiB, read + write counted), GB/s;
  // measured once, on first use.
  double copy_gbs();

  void add(Result r);
  // The table (printed last by main) and the JSON file.
  void print_table() const;
  void write_json(const std::string& path) const;
  bool all_valid() const;

 private:
  Tensor take(DeviceKind device, DType dtype, std::initializer_list<int64_t> dims, const char* name);
  void flush_l2();

  Options options_;
  std::unique_ptr<Backend> cpu_, gpu_;
  void* cpu_base_ = nullptr;
  void* gpu_base_ = nullptr;
  size_t cpu_bytes_ = 0, gpu_bytes_ = 0;
  std::unique_ptr<Carver> cpu_pool_, gpu_pool_;
  Tensor flush_buffer_;
  std::string device_name_;
  uint64_t seed_ = 0x5eed;
  double copy_gbs_ = NAN;
  std::vector<Result> results_;
};

}  // namespace ppo::kbench
