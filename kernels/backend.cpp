// Backend: checks every op's tensors once (device, dtype, shape; errors name the op, the argument
// and the tensor) and dispatches to the CPU reference (float or double) or to the CUDA launchers.
#include "kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <omp.h>
#include <unistd.h>
#include "engine/device_memory.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"

#ifdef PPO_HAS_CUDA
#include "kernels/cuda/context.h"
#include "kernels/cuda/ops.h"
#else
namespace ppo {
struct CudaContext {};
}  // namespace ppo
#endif

namespace ppo {

namespace {

constexpr int64_t kAny = -1;

// Checks one argument of an op: present, on the backend's device, of the dtype, of the shape
// (kAny matches any extent).
void expect(const char* op, const char* arg, const Tensor& t, DeviceKind device, DType dtype,
            std::initializer_list<int64_t> shape) {
  PPO_ASSERT(!t.empty(), op, ": argument '", arg, "' is missing");
  PPO_ASSERT(t.device == device, op, ": argument '", arg, "' (tensor '", t.name, "') is on ",
             device_name(t.device), ", the backend runs on ", device_name(device));
  PPO_ASSERT(t.dtype == dtype, op, ": argument '", arg, "' (tensor '", t.name, "') ",
             t.shape_str(), " should have dtype ", dtype_name(dtype));
  bool ok = t.ndim == int(shape.size());
  int i = 0;
  for (int64_t d : shape) {
    if (ok && d != kAny && t.shape[i] != d) ok = false;
    ++i;
  }
  if (!ok) {
    std::string want = "[";
    i = 0;
    for (int64_t d : shape) want += (i++ ? "," : "") + (d == kAny ? std::string("*") : std::to_string(d));
    PPO_FAIL(op, ": argument '", arg, "' (tensor '", t.name, "') has shape ", t.shape_str(),
             ", expected ", want, "]");
  }
}

// The same, for an optional argument: an empty tensor passes.
void expect_optional(const char* op, const char* arg, const Tensor& t, DeviceKind device, DType dtype,
                     std::initializer_list<int64_t> shape) {
  if (!t.empty()) expect(op, arg, t, device, dtype, shape);
}

// The device pointer of a DeviceIndex's counter, checked ((1) i32 on the op's device); null when
// the counter is empty (and not required).
int32_t* counter_ptr(const char* op, const char* arg, const Tensor& counter, DeviceKind device, bool required = false) {
  PPO_ASSERT(!required || !counter.empty(), op, ": no ", arg, " counter");
  if (counter.empty()) return nullptr;
  expect(op, arg, counter, device, DType::I32, {1});
  return counter.ptr<int32_t>();
}

template <class T>
T* opt(const Tensor& t) {
  return t.empty() ? nullptr : t.ptr<T>();
}

// Runs f(T{}) with T = double for Precision::F64, float otherwise.
template <class F>
void with_cpu_float(Precision p, F&& f) {
  if (p == Precision::F64) f(double{});
  else f(float{});
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

}  // namespace

void set_cpu_threads(int threads) {
  PPO_ASSERT(threads >= 1, "set_cpu_threads: ", threads, " threads; expected at least 1");
  cpu::set_threads(threads);
}

void use_passive_cpu_threads(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then this process goes on as it is
}

// ---- construction ---------------------------------------------------------------------------------

Backend::Backend(DeviceKind device, Precision precision) : device_(device), precision_(precision) {
  if (device == DeviceKind::CPU) {
    PPO_ASSERT(precision != Precision::BF16, "the CPU backend computes in f32 or f64, not bf16");
    cpu::set_threads(0);  // BLAS on OpenMP's threads (kernels/cpu/blas.h); OpenMP's count unchanged
    return;
  }
  PPO_ASSERT(precision == Precision::BF16, "the CUDA backend computes in bf16 (f32 accumulation)");
#ifdef PPO_HAS_CUDA
  PPO_ASSERT(cuda_device_count() > 0, "--device cuda: no GPU answers on this machine");
  cuda_ = std::make_unique<CudaContext>();
#else
  PPO_FAIL("--device cuda: this build has no CUDA backend");
#endif
}

Backend::~Backend() = default;

// ---- recorded ops ---------------------------------------------------------------------------------

struct RecordedOps::Impl {
  std::function<void()> ops;  // CPU: called again on each run
#ifdef PPO_HAS_CUDA
  CudaContext* cuda = nullptr;  // CUDA: the graph captured on its stream
  cudaGraphExec_t graph = nullptr;
  ~Impl() {
    if (graph) cuda::destroy_graph(graph);
  }
#endif
};

RecordedOps::RecordedOps() = default;
RecordedOps::~RecordedOps() = default;
RecordedOps::RecordedOps(RecordedOps&&) noexcept = default;
RecordedOps& RecordedOps::operator=(RecordedOps&&) noexcept = default;

void RecordedOps::run() {
  PPO_ASSERT(impl_, "RecordedOps::run: nothing was recorded");
#ifdef PPO_HAS_CUDA
  if (impl_->graph) return cuda::launch_graph(*impl_->cuda, impl_->graph);
#endif
  impl_->ops();
}

RecordedOps Backend::record(const std::function<void()>& ops) {
  RecordedOps r;
  r.impl_ = std::make_unique<RecordedOps::Impl>();
#ifdef PPO_HAS_CUDA
  if (cuda_) {
    r.impl_->cuda = cuda_.get();
    r.impl_->graph = cuda::capture_graph(*cuda_, ops);
    return r;
  }
#endif
  r.impl_->ops = ops;
  return r;
}

DType Backend::act_dtype() const {
  switch (precision_) {
    case Precision::F32: return DType::F32;
    case Precision::F64: return DType::F64;
    case Precision::BF16: return DType::BF16;
  }
  return DType::F32;
}
DType Backend::grad_dtype() const { return precision_ == Precision::F64 ? DType::F64 : DType::F32; }
DType Backend::stat_dtype() const { return grad_dtype(); }

int64_t Backend::host_value(const char* op, const char* what, const DeviceIndex& index) {
  const int32_t* counter = counter_ptr(op, what, index.counter, device_);
  return counter ? index.offset + *counter : index.offset;
}

void Backend::set_scratch(Carver scratch) {
  scratch_ = std::make_unique<Carver>(scratch);
#ifdef PPO_HAS_CUDA
  if (cuda_) cuda_->attach_scratch(scratch_.get());
#endif
}

size_t Backend::scratch_bytes(Precision precision, int64_t max_rows, int64_t vocab) {
#ifdef PPO_HAS_CUDA
  if (precision == Precision::BF16) return cuda_scratch_bytes(max_rows, vocab);
#endif
  (void)max_rows;
  return align_up(size_t(cpu::lm_scratch_elems(vocab)) * (precision == Precision::F64 ? 8 : 4));
}

void Backend::synchronize() {
#ifdef PPO_HAS_CUDA
  if (!cuda_) return;
  const DeviceStatus status = cuda::wait_and_take_status(*cuda_);
  if (status.code == 0) return;
  const RangeCheckSite& s = range_sites_[status.code];
  PPO_FAIL(s.op, ": ", s.what, " ", status.value, " in '", s.tensor, "' (row ", status.index, ") is outside ", s.within,
           "[0,", s.bound, ")");
#endif
}

// Takes `elems` elements of the active float type from the scratch region; rewound on scope exit.
namespace {
struct ScratchLease {
  Carver* carver;
  size_t mark;
  Tensor t;
  ScratchLease(Carver* c, const char* op, DType dtype, int64_t elems) : carver(c) {
    PPO_ASSERT(c != nullptr, op, " needs scratch memory: call Backend::set_scratch first");
    mark = c->mark();
    t = c->take(dtype, {elems}, "scratch");
  }
  ~ScratchLease() { carver->rewind(mark); }
};
}  // namespace

// ---- memory --------------------------------------------------------------------------------------

void Backend::zero(Tensor t) { fill(t, 0.0f); }

void Backend::fill(Tensor t, float value) {
  PPO_ASSERT(!t.empty() && t.device == device_, "fill: tensor '", t.name, "' missing or on another device");
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::fill(*cuda_, t.data, t.dtype, t.numel(), value);
#endif
    return;
  }
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::F32: std::fill_n(t.ptr<float>(), n, value); break;
    case DType::F64: std::fill_n(t.ptr<double>(), n, double(value)); break;
    case DType::BF16: std::fill_n(t.ptr<bf16>(), n, bf16_from_f32(value)); break;
    case DType::I32: std::fill_n(t.ptr<int32_t>(), n, int32_t(value)); break;
  }
}

namespace {
// Host-side element conversion between float dtypes.
double load_host(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::BF16: return f32_from_bf16(static_cast<const bf16*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
  }
  return 0;
}
void store_host(void* p, DType t, int64_t i, double x) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = float(x); break;
    case DType::F64: static_cast<double*>(p)[i] = x; break;
    case DType::BF16: static_cast<bf16*>(p)[i] = bf16_from_f32(float(x)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = int32_t(x); break;
  }
}
}  // namespace

void Backend::copy_host_device(void* dst, const void* src, size_t bytes) {
#ifdef PPO_HAS_CUDA
  if (cuda_) return cuda::copy_on_stream(*cuda_, dst, src, bytes);
#endif
  copy_bytes(dst, DeviceKind::CUDA, src, DeviceKind::CUDA, bytes);  // a CPU backend reading a CUDA tensor
}

void Backend::copy(Tensor dst, Tensor src) {
  if (dst.device == DeviceKind::CPU && src.device == DeviceKind::CPU) return copy_tensor(dst, src);
  PPO_ASSERT(dst.dtype == src.dtype && dst.numel() == src.numel(), "copy from tensor '", src.name, "' ",
             src.shape_str(), " into '", dst.name, "' ", dst.shape_str(), ": dtype or size differ");
  copy_host_device(dst.data, src.data, src.bytes());
}

void Backend::convert(Tensor dst, Tensor src) {
  PPO_ASSERT(dst.numel() == src.numel(), "convert: tensor '", src.name, "' ", src.shape_str(),
             " into '", dst.name, "' ", dst.shape_str(), ": element counts differ");
  PPO_ASSERT(is_float(dst.dtype) && is_float(src.dtype), "convert: float tensors only ('", src.name, "' -> '", dst.name, "')");
  if (dst.dtype == src.dtype) return copy(dst, src);
  if (dst.device == DeviceKind::CPU && src.device == DeviceKind::CPU) {
    for (int64_t i = 0; i < src.numel(); ++i) store_host(dst.data, dst.dtype, i, load_host(src.data, src.dtype, i));
    return;
  }
#ifdef PPO_HAS_CUDA
  if (dst.device == DeviceKind::CUDA && src.device == DeviceKind::CUDA) {
    PPO_ASSERT(cuda_ != nullptr, "convert on the device needs the CUDA backend");
    cuda::convert(*cuda_, dst.data, dst.dtype, src.data, src.dtype, src.numel());
    return;
  }
  // Across devices: convert on the host side, copy the bytes.
  std::vector<char> host(dst.bytes());
  if (src.device == DeviceKind::CPU) {
    for (int64_t i = 0; i < src.numel(); ++i) store_host(host.data(), dst.dtype, i, load_host(src.data, src.dtype, i));
    copy_host_device(dst.data, host.data(), dst.bytes());
  } else {
    std::vector<char> raw(src.bytes());
    copy_host_device(raw.data(), src.data, src.bytes());
    for (int64_t i = 0; i < src.numel(); ++i) store_host(dst.data, dst.dtype, i, load_host(raw.data(), src.dtype, i));
  }
#else
  PPO_FAIL("convert: tensor on a CUDA device in a build without CUDA");
#endif
}

template <class T>
std::vector<T> Backend::host_copy(Tensor src) {
  PPO_ASSERT(is_float(src.dtype), "to_host: tensor '", src.name, "' is not a float tensor");
  std::vector<T> out(size_t(src.numel()));
  Tensor dst(out.data(), std::is_same_v<T, double> ? DType::F64 : DType::F32, DeviceKind::CPU, {src.numel()}, src.name);
  convert(dst, src.reshape({src.numel()}));
  return out;
}

std::vector<float> Backend::to_host(Tensor src) { return host_copy<float>(src); }
std::vector<double> Backend::to_host_f64(Tensor src) { return host_copy<double>(src); }

void Backend::from_host(Tensor dst, const std::vector<float>& src) {
  PPO_ASSERT(int64_t(src.size()) == dst.numel(), "from_host: ", src.size(), " values for tensor '",
             dst.name, "' ", dst.shape_str());
  Tensor s(const_cast<float*>(src.data()), DType::F32, DeviceKind::CPU, {dst.numel()}, dst.name);
  convert(dst.reshape({dst.numel()}), s);
}

void Backend::from_host_ids(Tensor dst, const std::vector<int32_t>& src) {
  PPO_ASSERT(dst.dtype == DType::I32 && int64_t(src.size()) == dst.numel(), "from_host_ids: ",
             src.size(), " ids for tensor '", dst.name, "' ", dst.shape_str());
  if (dst.device == DeviceKind::CPU) std::memcpy(dst.data, src.data(), dst.bytes());
  else copy_host_device(dst.data, src.data(), dst.bytes());
}

std::vector<int32_t> Backend::to_host_ids(Tensor src) {
  PPO_ASSERT(src.dtype == DType::I32, "to_host_ids: tensor '", src.name, "' is not i32");
  std::vector<int32_t> out(size_t(src.numel()));
  if (src.device == DeviceKind::CPU) std::memcpy(out.data(), src.data, src.bytes());
  else copy_host_device(out.data(), src.data, src.bytes());
  return out;
}

void Backend::copy_columns(Tensor dst, int64_t dst_start, Tensor src, int64_t src_start, int64_t W) {
  const char* op = "copy_columns";
  for (const Tensor* t : {&src, &dst})
    PPO_ASSERT(!t->empty() && t->device == device_ && t->dtype == src.dtype, op, ": tensor '", t->name,
               "' must be present, on ", device_name(device_), ", of src's dtype ", dtype_name(src.dtype));
  PPO_ASSERT(src.ndim >= 2 && dst.ndim == src.ndim, op, ": src '", src.name, "' ", src.shape_str(), " and dst '",
             dst.name, "' ", dst.shape_str(), " must both be (B,T,...) of one rank");
  int64_t inner = 1;
  for (int i = 2; i < src.ndim; ++i) {
    PPO_ASSERT(dst.shape[i] == src.shape[i], op, ": trailing dims of dst '", dst.name, "' ", dst.shape_str(),
               " and src '", src.name, "' ", src.shape_str(), " differ");
    inner *= src.shape[i];
  }
  const int64_t B = src.dim(0), Ts = src.dim(1), Td = dst.dim(1);
  PPO_ASSERT(dst.dim(0) == B, op, ": dst '", dst.name, "' ", dst.shape_str(), " and src '", src.name, "' ",
             src.shape_str(), " differ in B");
  PPO_ASSERT(W >= 0 && src_start >= 0 && src_start + W <= Ts && dst_start >= 0 && dst_start + W <= Td, op,
             ": columns [", src_start, ",", src_start + W, ") of ", Ts, " -> [", dst_start, ",", dst_start + W, ") of ", Td);
  const size_t column = dtype_size(src.dtype) * size_t(inner);  // bytes
  char* d = static_cast<char*>(dst.data) + size_t(dst_start) * column;
  const char* s = static_cast<const char*>(src.data) + size_t(src_start) * column;
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::copy_rows_2d(*cuda_, d, size_t(Td) * column, s, size_t(Ts) * column, size_t(W) * column, B);
#endif
    return;
  }
  for (int64_t b = 0; b < B; ++b) std::memcpy(d + size_t(b * Td) * column, s + size_t(b * Ts) * column, size_t(W) * column);
}

// ---- embedding ------------------------------------------------------------------------------------

void Backend::embedding_forward(Tensor out, Tensor tokens, Tensor pos, Tensor wte, Tensor wpe) {
  const char* op = "embedding_forward";
  const int64_t B = tokens.dim(0), T = tokens.dim(1), V = wte.dim(0), C = wte.dim(1);
  expect(op, "tokens", tokens, device_, DType::I32, {B, T});
  expect(op, "pos", pos, device_, DType::I32, {B, T});
  expect(op, "wte", wte, device_, act_dtype(), {V, C});
  expect_optional(op, "wpe", wpe, device_, act_dtype(), {kAny, C});
  expect(op, "out", out, device_, act_dtype(), {B, T, C});
  const int64_t P = wpe.empty() ? INT32_MAX : wpe.dim(0);
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    range_sites_[1] = {op, "token id", tokens.name, "the vocabulary ", V};
    range_sites_[2] = {op, "position", pos.name, "", P};
    cuda::embedding_forward(*cuda_, out.ptr<bf16>(), tokens.ptr<int32_t>(), pos.ptr<int32_t>(),
                            wte.ptr<bf16>(), opt<bf16>(wpe), B * T, C, V, P);
#endif
    return;
  }
  for (int64_t i = 0; i < B * T; ++i) {
    const int32_t id = tokens.ptr<int32_t>()[i], p = pos.ptr<int32_t>()[i];
    PPO_ASSERT(id >= 0 && id < V, op, ": token id ", id, " in '", tokens.name, "' (row ", i, ") is outside the vocabulary [0,", V, ")");
    PPO_ASSERT(p >= 0 && p < P, op, ": position ", p, " in '", pos.name, "' (row ", i, ") is outside [0,", P, ")");
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::embedding_forward<F>(out.ptr<F>(), tokens.ptr<int32_t>(), pos.ptr<int32_t>(), wte.ptr<F>(), opt<F>(wpe), B * T, C);
  });
}

void Backend::embedding_backward(Tensor dwte, Tensor dwpe, Tensor dout, Tensor tokens, Tensor pos) {
  const char* op = "embedding_backward";
  const int64_t B = tokens.dim(0), T = tokens.dim(1), V = dwte.dim(0), C = dwte.dim(1);
  expect(op, "tokens", tokens, device_, DType::I32, {B, T});
  expect(op, "pos", pos, device_, DType::I32, {B, T});
  expect(op, "dwte", dwte, device_, grad_dtype(), {V, C});
  expect_optional(op, "dwpe", dwpe, device_, grad_dtype(), {kAny, C});
  expect(op, "dout", dout, device_, act_dtype(), {B, T, C});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::embedding_backward(*cuda_, dwte.ptr<float>(), opt<float>(dwpe), dout.ptr<bf16>(), tokens.ptr<int32_t>(),
                             pos.ptr<int32_t>(), B * T, C, V, dwpe.empty() ? 0 : dwpe.dim(0));
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::embedding_backward<F>(dwte.ptr<F>(), opt<F>(dwpe), dout.ptr<F>(), tokens.ptr<int32_t>(), pos.ptr<int32_t>(), B * T, C);
  });
}

// ---- normalization --------------------------------------------------------------------------------

namespace {
// Rows of a (..., C) tensor.
int64_t rows(const Tensor& t) { return t.numel() / t.dim(-1); }
}  // namespace

void Backend::norm_forward(NormKind kind, Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight,
                           Tensor bias, float eps) {
  residual_norm_forward(kind, Tensor{}, out, mean, rstd, inp, Tensor{}, weight, bias, eps);
}

void Backend::residual_norm_forward(NormKind kind, Tensor res_out, Tensor out, Tensor mean, Tensor rstd,
                                    Tensor a, Tensor b, Tensor weight, Tensor bias, float eps) {
  const char* op = res_out.empty() ? "norm_forward" : "residual_norm_forward";
  const int64_t C = a.dim(-1), N = rows(a);
  PPO_ASSERT(res_out.empty() == b.empty(), op, ": res_out and b go together");
  expect(op, "inp", a.reshape({N, C}), device_, act_dtype(), {N, C});
  expect_optional(op, "b", b.empty() ? b : b.reshape({N, C}), device_, act_dtype(), {N, C});
  expect_optional(op, "res_out", res_out.empty() ? res_out : res_out.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "out", out.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "rstd", rstd, device_, stat_dtype(), {N});
  expect(op, "weight", weight, device_, act_dtype(), {C});
  if (kind == NormKind::LayerNorm) {
    expect(op, "mean", mean, device_, stat_dtype(), {N});
    expect_optional(op, "bias", bias, device_, act_dtype(), {C});
  } else {
    PPO_ASSERT(mean.empty() && bias.empty(), op, ": RMSNorm takes no mean and no bias");
  }
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::norm_forward(*cuda_, kind, opt<bf16>(res_out), out.ptr<bf16>(), opt<float>(mean), rstd.ptr<float>(),
                       a.ptr<bf16>(), opt<bf16>(b), weight.ptr<bf16>(), opt<bf16>(bias), N, C, eps);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    const F* x = a.ptr<F>();
    if (!res_out.empty()) {
      cpu::residual_forward<F>(res_out.ptr<F>(), a.ptr<F>(), b.ptr<F>(), N * C);
      x = res_out.ptr<F>();
    }
    cpu::norm_forward<F>(kind, out.ptr<F>(), opt<F>(mean), rstd.ptr<F>(), x, weight.ptr<F>(), opt<F>(bias), N, C, eps);
  });
}

void Backend::norm_backward(NormKind kind, Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                            Tensor weight, Tensor mean, Tensor rstd) {
  const char* op = "norm_backward";
  const int64_t C = inp.dim(-1), N = rows(inp);
  expect(op, "inp", inp.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "dinp", dinp.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "dout", dout.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "weight", weight, device_, act_dtype(), {C});
  expect_optional(op, "dweight", dweight, device_, grad_dtype(), {C});
  expect(op, "rstd", rstd, device_, stat_dtype(), {N});
  if (kind == NormKind::LayerNorm) {
    expect(op, "mean", mean, device_, stat_dtype(), {N});
    expect_optional(op, "dbias", dbias, device_, grad_dtype(), {C});
  } else {
    PPO_ASSERT(mean.empty() && dbias.empty(), op, ": RMSNorm takes no mean and no bias");
  }
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::norm_backward(*cuda_, kind, dinp.ptr<bf16>(), opt<float>(dweight), opt<float>(dbias), dout.ptr<bf16>(),
                        inp.ptr<bf16>(), weight.ptr<bf16>(), opt<float>(mean), rstd.ptr<float>(), N, C);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::norm_backward<F>(kind, dinp.ptr<F>(), opt<F>(dweight), opt<F>(dbias), dout.ptr<F>(), inp.ptr<F>(),
                          weight.ptr<F>(), opt<F>(mean), rstd.ptr<F>(), N, C);
  });
}

void Backend::residual_forward(Tensor out, Tensor a, Tensor b) {
  const char* op = "residual_forward";
  const int64_t n = a.numel();
  expect(op, "a", a.reshape({n}), device_, act_dtype(), {n});
  expect(op, "b", b.reshape({n}), device_, act_dtype(), {n});
  expect(op, "out", out.reshape({n}), device_, act_dtype(), {n});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::residual_forward(*cuda_, out.ptr<bf16>(), a.ptr<bf16>(), b.ptr<bf16>(), n);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::residual_forward<F>(out.ptr<F>(), a.ptr<F>(), b.ptr<F>(), n);
  });
}

// ---- matmul ---------------------------------------------------------------------------------------

void Backend::matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) {
  const char* op = "matmul_forward";
  const int64_t C = inp.dim(-1), N = rows(inp), OC = weight.dim(0);
  expect(op, "inp", inp.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "weight", weight, device_, act_dtype(), {OC, C});
  expect_optional(op, "bias", bias, device_, act_dtype(), {OC});
  expect(op, "out", out.reshape({out.numel() / OC, OC}), device_, act_dtype(), {N, OC});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::matmul_forward(*cuda_, out.ptr<bf16>(), inp.ptr<bf16>(), weight.ptr<bf16>(), opt<bf16>(bias), N, C, OC);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::matmul_forward<F>(out.ptr<F>(), inp.ptr<F>(), weight.ptr<F>(), opt<F>(bias), N, C, OC);
  });
}

void Backend::matmul_backward(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp, Tensor weight) {
  const char* op = "matmul_backward";
  const int64_t C = inp.dim(-1), N = rows(inp), OC = weight.dim(0);
  expect(op, "inp", inp.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "weight", weight, device_, act_dtype(), {OC, C});
  expect(op, "dout", dout.reshape({dout.numel() / OC, OC}), device_, act_dtype(), {N, OC});
  expect_optional(op, "dinp", dinp.empty() ? dinp : dinp.reshape({N, C}), device_, act_dtype(), {N, C});
  expect_optional(op, "dweight", dweight, device_, grad_dtype(), {OC, C});
  expect_optional(op, "dbias", dbias, device_, grad_dtype(), {OC});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::matmul_backward(*cuda_, opt<bf16>(dinp), opt<float>(dweight), opt<float>(dbias), dout.ptr<bf16>(),
                          inp.ptr<bf16>(), weight.ptr<bf16>(), N, C, OC);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::matmul_backward<F>(opt<F>(dinp), opt<F>(dweight), opt<F>(dbias), dout.ptr<F>(), inp.ptr<F>(), weight.ptr<F>(), N, C, OC);
  });
}

// ---- activations ----------------------------------------------------------------------------------

void Backend::gelu_forward(Tensor out, Tensor inp) {
  const int64_t n = inp.numel();
  expect("gelu_forward", "inp", inp.reshape({n}), device_, act_dtype(), {n});
  expect("gelu_forward", "out", out.reshape({out.numel()}), device_, act_dtype(), {n});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::gelu_forward(*cuda_, out.ptr<bf16>(), inp.ptr<bf16>(), n);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::gelu_forward<F>(out.ptr<F>(), inp.ptr<F>(), n);
  });
}

void Backend::gelu_backward(Tensor dinp, Tensor dout, Tensor inp) {
  const int64_t n = inp.numel();
  expect("gelu_backward", "inp", inp.reshape({n}), device_, act_dtype(), {n});
  expect("gelu_backward", "dout", dout.reshape({dout.numel()}), device_, act_dtype(), {n});
  expect("gelu_backward", "dinp", dinp.reshape({dinp.numel()}), device_, act_dtype(), {n});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::gelu_backward(*cuda_, dinp.ptr<bf16>(), dout.ptr<bf16>(), inp.ptr<bf16>(), n);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::gelu_backward<F>(dinp.ptr<F>(), dout.ptr<F>(), inp.ptr<F>(), n);
  });
}

void Backend::swiglu_forward(Tensor out, Tensor inp) {
  const int64_t F2 = inp.dim(-1), N = rows(inp), Fw = F2 / 2;
  PPO_ASSERT(F2 % 2 == 0, "swiglu_forward: input '", inp.name, "' width ", F2, " is odd");
  expect("swiglu_forward", "inp", inp.reshape({N, F2}), device_, act_dtype(), {N, F2});
  expect("swiglu_forward", "out", out.reshape({out.numel() / Fw, Fw}), device_, act_dtype(), {N, Fw});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::swiglu_forward(*cuda_, out.ptr<bf16>(), inp.ptr<bf16>(), N, Fw);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::swiglu_forward<F>(out.ptr<F>(), inp.ptr<F>(), N, Fw);
  });
}

void Backend::swiglu_backward(Tensor dinp, Tensor dout, Tensor inp) {
  const int64_t F2 = inp.dim(-1), N = rows(inp), Fw = F2 / 2;
  expect("swiglu_backward", "inp", inp.reshape({N, F2}), device_, act_dtype(), {N, F2});
  expect("swiglu_backward", "dinp", dinp.reshape({dinp.numel() / F2, F2}), device_, act_dtype(), {N, F2});
  expect("swiglu_backward", "dout", dout.reshape({dout.numel() / Fw, Fw}), device_, act_dtype(), {N, Fw});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::swiglu_backward(*cuda_, dinp.ptr<bf16>(), dout.ptr<bf16>(), inp.ptr<bf16>(), N, Fw);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::swiglu_backward<F>(dinp.ptr<F>(), dout.ptr<F>(), inp.ptr<F>(), N, Fw);
  });
}

// ---- attention ------------------------------------------------------------------------------------

namespace {
void check_heads(const char* op, int NH, int NKV, int HS) {
  PPO_ASSERT(NH > 0 && NKV > 0 && HS > 0 && NH % NKV == 0, op, ": heads NH=", NH, " must be a multiple of kv heads NKV=", NKV);
}
}  // namespace

void Backend::rope_forward(Tensor qkv, Tensor pos, int NH, int NKV, int HS, float theta) {
  const char* op = "rope_forward";
  check_heads(op, NH, NKV, HS);
  PPO_ASSERT(HS % 2 == 0, op, ": head size ", HS, " is odd");
  const int64_t B = qkv.dim(0), T = qkv.dim(1);
  expect(op, "qkv", qkv, device_, act_dtype(), {B, T, int64_t(NH + 2 * NKV) * HS});
  expect(op, "pos", pos, device_, DType::I32, {B, T});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::rope(*cuda_, qkv.ptr<bf16>(), pos.ptr<int32_t>(), B, T, NH, NKV, HS, theta, false);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::rope_forward<F>(qkv.ptr<F>(), pos.ptr<int32_t>(), B, T, NH, NKV, HS, theta);
  });
}

void Backend::rope_backward(Tensor dqkv, Tensor pos, int NH, int NKV, int HS, float theta) {
  const char* op = "rope_backward";
  check_heads(op, NH, NKV, HS);
  const int64_t B = dqkv.dim(0), T = dqkv.dim(1);
  expect(op, "dqkv", dqkv, device_, act_dtype(), {B, T, int64_t(NH + 2 * NKV) * HS});
  expect(op, "pos", pos, device_, DType::I32, {B, T});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::rope(*cuda_, dqkv.ptr<bf16>(), pos.ptr<int32_t>(), B, T, NH, NKV, HS, theta, true);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::rope_backward<F>(dqkv.ptr<F>(), pos.ptr<int32_t>(), B, T, NH, NKV, HS, theta);
  });
}

void Backend::attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor mask, int NH, int NKV, int HS) {
  const char* op = "attention_forward";
  check_heads(op, NH, NKV, HS);
  const int64_t B = qkv.dim(0), T = qkv.dim(1);
  expect(op, "qkv", qkv, device_, act_dtype(), {B, T, int64_t(NH + 2 * NKV) * HS});
  expect(op, "mask", mask, device_, DType::I32, {B, T});
  expect(op, "out", out, device_, act_dtype(), {B, T, int64_t(NH) * HS});
  expect(op, "lse", lse, device_, stat_dtype(), {B, NH, T});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::attention_forward(*cuda_, out.ptr<bf16>(), lse.ptr<float>(), qkv.ptr<bf16>(), mask.ptr<int32_t>(), B, T, NH, NKV, HS);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::attention_forward<F>(out.ptr<F>(), lse.ptr<F>(), qkv.ptr<F>(), mask.ptr<int32_t>(), B, T, NH, NKV, HS);
  });
}

void Backend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor mask,
                                 int NH, int NKV, int HS) {
  const char* op = "attention_backward";
  check_heads(op, NH, NKV, HS);
  const int64_t B = qkv.dim(0), T = qkv.dim(1), W = int64_t(NH + 2 * NKV) * HS;
  expect(op, "qkv", qkv, device_, act_dtype(), {B, T, W});
  expect(op, "dqkv", dqkv, device_, act_dtype(), {B, T, W});
  expect(op, "mask", mask, device_, DType::I32, {B, T});
  expect(op, "out", out, device_, act_dtype(), {B, T, int64_t(NH) * HS});
  expect(op, "dout", dout, device_, act_dtype(), {B, T, int64_t(NH) * HS});
  expect(op, "lse", lse, device_, stat_dtype(), {B, NH, T});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::attention_backward(*cuda_, dqkv.ptr<bf16>(), dout.ptr<bf16>(), qkv.ptr<bf16>(), out.ptr<bf16>(),
                             lse.ptr<float>(), mask.ptr<int32_t>(), B, T, NH, NKV, HS);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::attention_backward<F>(dqkv.ptr<F>(), dout.ptr<F>(), qkv.ptr<F>(), out.ptr<F>(), lse.ptr<F>(),
                               mask.ptr<int32_t>(), B, T, NH, NKV, HS);
  });
}

void Backend::kv_cache_write(Tensor kcache, Tensor vcache, Tensor qkv, DeviceIndex start, int NH, int NKV, int HS) {
  const char* op = "kv_cache_write";
  check_heads(op, NH, NKV, HS);
  const int64_t B = qkv.dim(0), T = qkv.dim(1), S = kcache.dim(1);
  expect(op, "qkv", qkv, device_, act_dtype(), {B, T, int64_t(NH + 2 * NKV) * HS});
  expect(op, "kcache", kcache, device_, act_dtype(), {B, S, int64_t(NKV) * HS});
  expect(op, "vcache", vcache, device_, act_dtype(), {B, S, int64_t(NKV) * HS});
  // checked here when the host knows the start; a CUDA kernel checks one it reads on the device
  const bool on_host = start.counter.empty() || device_ == DeviceKind::CPU;
  const int64_t first = on_host ? host_value(op, "start", start) : 0;
  PPO_ASSERT(!on_host || (first >= 0 && first + T <= S), op, ": positions [", first, ",", first + T,
             ") do not fit the KV cache of ", S, " positions", start.counter.empty() ? "" : " (the start read from '",
             start.counter.name, start.counter.empty() ? "" : "')");
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    range_sites_[5] = {op, "cache start", start.counter.name, "", S - T + 1};
    cuda::kv_cache_write(*cuda_, kcache.ptr<bf16>(), vcache.ptr<bf16>(), qkv.ptr<bf16>(), B, T, S,
                         counter_ptr(op, "start", start.counter, device_), start.offset, NH, NKV, HS);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::kv_cache_write<F>(kcache.ptr<F>(), vcache.ptr<F>(), qkv.ptr<F>(), B, T, S, first, NH, NKV, HS);
  });
}

void Backend::attention_decode(Tensor out, Tensor qkv, Tensor kcache, Tensor vcache, Tensor mask, DeviceIndex length,
                               int NH, int NKV, int HS) {
  const char* op = "attention_decode";
  check_heads(op, NH, NKV, HS);
  const int64_t B = qkv.dim(0), S = kcache.dim(1);
  expect(op, "qkv", qkv, device_, act_dtype(), {B, 1, int64_t(NH + 2 * NKV) * HS});
  expect(op, "kcache", kcache, device_, act_dtype(), {B, S, int64_t(NKV) * HS});
  expect(op, "vcache", vcache, device_, act_dtype(), {B, S, int64_t(NKV) * HS});
  expect(op, "mask", mask, device_, DType::I32, {B, S});
  expect(op, "out", out.reshape({B, out.numel() / B}), device_, act_dtype(), {B, int64_t(NH) * HS});
  // a length the CUDA kernel reads on the device is clamped to [0,S] there (the KV write of its
  // last position checks it)
  const bool on_host = length.counter.empty() || device_ == DeviceKind::CPU;
  const int64_t L = on_host ? host_value(op, "length", length) : 1;
  PPO_ASSERT(L >= 1 && L <= S, op, ": length ", L, " outside [1,", S, "]");
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::attention_decode(*cuda_, out.ptr<bf16>(), qkv.ptr<bf16>(), kcache.ptr<bf16>(), vcache.ptr<bf16>(),
                           mask.ptr<int32_t>(), B, S, counter_ptr(op, "length", length.counter, device_), length.offset,
                           NH, NKV, HS);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::attention_decode<F>(out.ptr<F>(), qkv.ptr<F>(), kcache.ptr<F>(), vcache.ptr<F>(), mask.ptr<int32_t>(), B, S, L,
                             NH, NKV, HS);
  });
}

// ---- language-model head --------------------------------------------------------------------------

void Backend::lm_logprob_entropy_forward(Tensor logp, Tensor entropy, Tensor lse, Tensor hidden, Tensor wte,
                                         Tensor targets, float inv_temperature) {
  const char* op = "lm_logprob_entropy_forward";
  const int64_t C = hidden.dim(-1), N = rows(hidden), V = wte.dim(0);
  expect(op, "hidden", hidden.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "wte", wte, device_, act_dtype(), {V, C});
  expect(op, "targets", targets.reshape({targets.numel()}), device_, DType::I32, {N});
  expect(op, "logp", logp.reshape({logp.numel()}), device_, stat_dtype(), {N});
  expect(op, "entropy", entropy.reshape({entropy.numel()}), device_, stat_dtype(), {N});
  expect(op, "lse", lse.reshape({lse.numel()}), device_, stat_dtype(), {N});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    range_sites_[3] = {op, "target id", targets.name, "the vocabulary ", V};
    cuda::lm_logprob_entropy_forward(*cuda_, logp.ptr<float>(), entropy.ptr<float>(), lse.ptr<float>(), hidden.ptr<bf16>(),
                                     wte.ptr<bf16>(), targets.ptr<int32_t>(), N, C, V, inv_temperature);
#endif
    return;
  }
  for (int64_t i = 0; i < N; ++i) {
    const int32_t id = targets.ptr<int32_t>()[i];
    PPO_ASSERT(id >= 0 && id < V, op, ": target id ", id, " in '", targets.name, "' (row ", i, ") is outside the vocabulary [0,", V, ")");
  }
  ScratchLease s(scratch_.get(), op, act_dtype(), cpu::lm_scratch_elems(V));
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::lm_logprob_entropy_forward<F>(logp.ptr<F>(), entropy.ptr<F>(), lse.ptr<F>(), hidden.ptr<F>(), wte.ptr<F>(),
                                       targets.ptr<int32_t>(), N, C, V, inv_temperature, s.t.ptr<F>());
  });
}

void Backend::lm_logprob_entropy_backward(Tensor dhidden, Tensor dwte, Tensor g_logp, Tensor g_entropy, Tensor hidden,
                                          Tensor wte, Tensor targets, Tensor lse, Tensor entropy, float inv_temperature) {
  const char* op = "lm_logprob_entropy_backward";
  const int64_t C = hidden.dim(-1), N = rows(hidden), V = wte.dim(0);
  expect(op, "hidden", hidden.reshape({N, C}), device_, act_dtype(), {N, C});
  expect(op, "dhidden", dhidden.reshape({dhidden.numel() / C, C}), device_, act_dtype(), {N, C});
  expect(op, "wte", wte, device_, act_dtype(), {V, C});
  expect_optional(op, "dwte", dwte, device_, grad_dtype(), {V, C});
  expect(op, "targets", targets.reshape({targets.numel()}), device_, DType::I32, {N});
  expect_optional(op, "g_logp", g_logp.empty() ? g_logp : g_logp.reshape({g_logp.numel()}), device_, stat_dtype(), {N});
  expect_optional(op, "g_entropy", g_entropy.empty() ? g_entropy : g_entropy.reshape({g_entropy.numel()}), device_, stat_dtype(), {N});
  expect(op, "lse", lse.reshape({lse.numel()}), device_, stat_dtype(), {N});
  expect(op, "entropy", entropy.reshape({entropy.numel()}), device_, stat_dtype(), {N});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::lm_logprob_entropy_backward(*cuda_, dhidden.ptr<bf16>(), opt<float>(dwte), opt<float>(g_logp), opt<float>(g_entropy),
                                      hidden.ptr<bf16>(), wte.ptr<bf16>(), targets.ptr<int32_t>(), lse.ptr<float>(),
                                      entropy.ptr<float>(), N, C, V, inv_temperature);
#endif
    return;
  }
  ScratchLease s(scratch_.get(), op, act_dtype(), cpu::lm_scratch_elems(V));
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::lm_logprob_entropy_backward<F>(dhidden.ptr<F>(), opt<F>(dwte), opt<F>(g_logp), opt<F>(g_entropy), hidden.ptr<F>(),
                                        wte.ptr<F>(), targets.ptr<int32_t>(), lse.ptr<F>(), entropy.ptr<F>(), N, C, V,
                                        inv_temperature, s.t.ptr<F>());
  });
}

void Backend::sample_tokens(Tensor tokens, Tensor logp, Tensor logits, float inv_temperature, int top_k, float top_p,
                            uint64_t seed, uint64_t stream, Tensor step, uint64_t step_stride) {
  const char* op = "sample_tokens";
  const int64_t B = logits.dim(0), V = logits.dim(-1);
  expect(op, "logits", logits.reshape({B, logits.numel() / B}), device_, act_dtype(), {B, V});
  expect(op, "tokens", tokens.reshape({tokens.numel()}), device_, DType::I32, {B});
  expect(op, "logp", logp.reshape({logp.numel()}), device_, stat_dtype(), {B});
  PPO_ASSERT(inv_temperature > 0 && std::isfinite(inv_temperature), op, ": temperature must be positive");
  PPO_ASSERT(top_k >= 0 && top_p > 0 && top_p <= 1, op, ": top_k must be >= 0 and top_p in (0,1]");
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::sample_tokens(*cuda_, tokens.ptr<int32_t>(), logp.ptr<float>(), logits.ptr<bf16>(), B, V, inv_temperature,
                        top_k, top_p, seed, stream, counter_ptr(op, "step", step, device_), step_stride);
#endif
    return;
  }
  const uint64_t first = stream + uint64_t(host_value(op, "step", {step, 0})) * step_stride;
  ScratchLease s(scratch_.get(), op, act_dtype(), cpu::lm_scratch_elems(V));
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::sample_tokens<F>(tokens.ptr<int32_t>(), logp.ptr<F>(), logits.ptr<F>(), B, V, inv_temperature, top_k, top_p,
                          seed, first, s.t.ptr<F>());
  });
}

void Backend::mask_token_logits(Tensor logits, const std::vector<int32_t>& ids, Tensor step, int64_t below) {
  const char* op = "mask_token_logits";
  const int64_t B = logits.dim(0), V = logits.dim(-1);
  expect(op, "logits", logits.reshape({B, logits.numel() / B}), device_, act_dtype(), {B, V});
  PPO_ASSERT(int(ids.size()) <= kMaxMaskedTokens, op, ": ", ids.size(), " ids, at most ", kMaxMaskedTokens);
  for (int32_t id : ids) PPO_ASSERT(id >= 0 && id < V, op, ": token id ", id, " outside [0,", V, ")");
  if (ids.empty()) return;
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::mask_token_logits(*cuda_, logits.ptr<bf16>(), B, V, ids.data(), int(ids.size()),
                            counter_ptr(op, "step", step, device_), below);
#endif
    return;
  }
  if (!step.empty() && host_value(op, "step", {step, 0}) >= below) return;
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    for (int64_t b = 0; b < B; ++b)
      for (int32_t id : ids) logits.ptr<F>()[b * V + id] = -std::numeric_limits<F>::infinity();
  });
}

void Backend::append_sampled(Tensor tokens, Tensor logp, Tensor done, Tensor pos, Tensor step_tokens, Tensor step_logp,
                             Tensor step, const std::vector<int32_t>& stop_ids, int32_t pad) {
  const char* op = "append_sampled";
  const int64_t B = tokens.dim(0), R = tokens.dim(1);
  expect(op, "tokens", tokens, device_, DType::I32, {B, R});
  expect(op, "logp", logp, device_, stat_dtype(), {B, R});
  expect(op, "done", done, device_, DType::I32, {B});
  expect(op, "pos", pos, device_, DType::I32, {B});
  expect(op, "step_tokens", step_tokens, device_, DType::I32, {B});
  expect(op, "step_logp", step_logp, device_, stat_dtype(), {B});
  PPO_ASSERT(int(stop_ids.size()) <= kMaxMaskedTokens, op, ": ", stop_ids.size(), " stop ids, at most ", kMaxMaskedTokens);
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    range_sites_[6] = {op, "step", step.name, "the response columns ", R};
    cuda::append_sampled(*cuda_, tokens.ptr<int32_t>(), logp.ptr<float>(), done.ptr<int32_t>(), pos.ptr<int32_t>(),
                         step_tokens.ptr<int32_t>(), step_logp.ptr<float>(), B, R,
                         counter_ptr(op, "step", step, device_, true), stop_ids.data(), int(stop_ids.size()), pad);
#endif
    return;
  }
  int32_t* counter = counter_ptr(op, "step", step, device_, true);
  const int64_t t = *counter;
  PPO_ASSERT(t >= 0 && t < R, op, ": step ", t, " in '", step.name, "' outside the response columns [0,", R, ")");
  ++*counter;
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    for (int64_t b = 0; b < B; ++b) {
      ++pos.ptr<int32_t>()[b];
      int32_t& d = done.ptr<int32_t>()[b];
      const int32_t id = step_tokens.ptr<int32_t>()[b];
      tokens.ptr<int32_t>()[b * R + t] = d ? pad : id;
      logp.ptr<F>()[b * R + t] = d ? F(0) : step_logp.ptr<F>()[b];
      if (!d && std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end()) d = 1;
    }
  });
}

// ---- optimizer ------------------------------------------------------------------------------------

void Backend::adamw_update(Tensor param, Tensor master, Tensor grad, Tensor m, Tensor v, int64_t decayed,
                           Tensor grad_sumsq, float max_grad_norm, const AdamWParams& hp, uint64_t seed) {
  const char* op = "adamw_update";
  const int64_t n = param.numel();
  expect(op, "param", param.reshape({n}), device_, act_dtype(), {n});
  expect(op, "grad", grad.reshape({grad.numel()}), device_, grad_dtype(), {n});
  expect(op, "m", m.reshape({m.numel()}), device_, grad_dtype(), {n});
  expect(op, "v", v.reshape({v.numel()}), device_, grad_dtype(), {n});
  expect(op, "grad_sumsq", grad_sumsq.reshape({grad_sumsq.numel()}), device_, DType::F64, {1});
  PPO_ASSERT(hp.step >= 1, op, ": step counts from 1");
  PPO_ASSERT(decayed >= 0 && decayed <= n, op, ": decayed = ", decayed, " outside [0, ", n, "]");
  if (device_ == DeviceKind::CUDA) {
    expect(op, "master", master.reshape({master.numel()}), device_, DType::F32, {n});
#ifdef PPO_HAS_CUDA
    cuda::adamw_update(*cuda_, param.ptr<bf16>(), master.ptr<float>(), grad.ptr<float>(), m.ptr<float>(), v.ptr<float>(),
                       n, decayed, grad_sumsq.ptr<double>(), max_grad_norm, hp, seed);
#endif
    return;
  }
  PPO_ASSERT(master.empty(), op, ": the CPU backend updates '", param.name, "' in place and keeps no master copy");
  (void)seed;  // stochastic rounding happens only when writing bf16 weights (CUDA)
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::adamw_update<F>(param.ptr<F>(), grad.ptr<F>(), m.ptr<F>(), v.ptr<F>(), n, decayed, *grad_sumsq.ptr<double>(),
                         max_grad_norm, hp);
  });
}

void Backend::sum_squares(Tensor out, Tensor x) {
  const int64_t n = x.numel();
  expect("sum_squares", "x", x.reshape({n}), device_, grad_dtype(), {n});
  expect("sum_squares", "out", out.reshape({out.numel()}), device_, DType::F64, {1});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::sum_squares(*cuda_, out.ptr<double>(), x.ptr<float>(), n);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    *out.ptr<double>() = cpu::sum_squares<F>(x.ptr<F>(), n);
  });
}

// ---- PPO per-token math ---------------------------------------------------------------------------

namespace {
// All PPO per-token tensors share the (B,T) shape of the mask.
void expect_tokens(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> args, const Tensor& mask,
                   DeviceKind device, DType stat) {
  PPO_ASSERT(mask.ndim == 2, op, ": mask '", mask.name, "' must be (B,T), is ", mask.shape_str());
  expect(op, "mask", mask, device, DType::I32, {mask.shape[0], mask.shape[1]});
  for (const auto& [arg, t] : args) expect(op, arg, *t, device, stat, {mask.shape[0], mask.shape[1]});
}
}  // namespace

void Backend::kl_penalty(Tensor kl, Tensor logp, Tensor ref_logp, Tensor mask, KLEstimator estimator) {
  expect_tokens("kl_penalty", {{"kl", &kl}, {"logp", &logp}, {"ref_logp", &ref_logp}}, mask, device_, stat_dtype());
  const int64_t n = mask.numel();
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::kl_penalty(*cuda_, kl.ptr<float>(), logp.ptr<float>(), ref_logp.ptr<float>(), mask.ptr<int32_t>(), n, estimator);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::kl_penalty<F>(kl.ptr<F>(), logp.ptr<F>(), ref_logp.ptr<F>(), mask.ptr<int32_t>(), n, estimator);
  });
}

void Backend::kl_penalty_backward(Tensor dlogp, Tensor logp, Tensor ref_logp, Tensor mask, KLEstimator estimator,
                                  float weight) {
  expect_tokens("kl_penalty_backward", {{"dlogp", &dlogp}, {"logp", &logp}, {"ref_logp", &ref_logp}}, mask, device_,
                stat_dtype());
  const int64_t n = mask.numel();
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::kl_penalty_backward(*cuda_, dlogp.ptr<float>(), logp.ptr<float>(), ref_logp.ptr<float>(), mask.ptr<int32_t>(),
                              n, estimator, weight);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::kl_penalty_backward<F>(dlogp.ptr<F>(), logp.ptr<F>(), ref_logp.ptr<F>(), mask.ptr<int32_t>(), n, estimator,
                                weight);
  });
}

void Backend::gae_reverse_scan(Tensor advantages, Tensor returns, Tensor rewards, Tensor values, Tensor mask,
                               float gamma, float lambda) {
  expect_tokens("gae_reverse_scan",
                {{"advantages", &advantages}, {"returns", &returns}, {"rewards", &rewards}, {"values", &values}}, mask,
                device_, stat_dtype());
  const int64_t B = mask.dim(0), T = mask.dim(1);
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::gae_reverse_scan(*cuda_, advantages.ptr<float>(), returns.ptr<float>(), rewards.ptr<float>(), values.ptr<float>(),
                           mask.ptr<int32_t>(), B, T, gamma, lambda);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::gae_reverse_scan<F>(advantages.ptr<F>(), returns.ptr<F>(), rewards.ptr<F>(), values.ptr<F>(), mask.ptr<int32_t>(),
                             B, T, gamma, lambda);
  });
}

MaskedMoments Backend::masked_moments(Tensor x, Tensor mask) {
  expect_tokens("masked_moments", {{"x", &x}}, mask, device_, stat_dtype());
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    return cuda::masked_moments(*cuda_, x.ptr<float>(), mask.ptr<int32_t>(), mask.numel());
#endif
  }
  MaskedMoments r;
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    r = cpu::masked_moments<F>(x.ptr<F>(), mask.ptr<int32_t>(), mask.numel());
  });
  return r;
}

void Backend::masked_affine(Tensor x, Tensor mask, float shift, float scale) {
  expect_tokens("masked_affine", {{"x", &x}}, mask, device_, stat_dtype());
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::masked_affine(*cuda_, x.ptr<float>(), mask.ptr<int32_t>(), mask.numel(), shift, scale);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::masked_affine<F>(x.ptr<F>(), mask.ptr<int32_t>(), mask.numel(), shift, scale);
  });
}

void Backend::scale_rows(Tensor x, Tensor row_scale) {
  PPO_ASSERT(x.ndim == 2, "scale_rows: x '", x.name, "' must be (B,T), is ", x.shape_str());
  const int64_t B = x.shape[0], T = x.shape[1];
  expect("scale_rows", "x", x, device_, stat_dtype(), {B, T});
  expect("scale_rows", "row_scale", row_scale, device_, stat_dtype(), {B});
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::scale_rows(*cuda_, x.ptr<float>(), row_scale.ptr<float>(), B, T);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    cpu::scale_rows<F>(x.ptr<F>(), row_scale.ptr<F>(), B, T);
  });
}

namespace {
// sums (k) f64 on `device`: the accumulators of the loss ops.
void expect_sums(const char* op, const Tensor& sums, DeviceKind device, int64_t k) {
  expect(op, "sums", sums.reshape({sums.numel()}), device, DType::F64, {k});
}
}  // namespace

void Backend::ppo_policy_loss(Tensor dlogp, Tensor sums, Tensor logp, Tensor old_logp, Tensor advantages, Tensor mask,
                              float clip_eps, float dual_clip, float token_weight) {
  expect_tokens("ppo_policy_loss",
                {{"dlogp", &dlogp}, {"logp", &logp}, {"old_logp", &old_logp}, {"advantages", &advantages}}, mask,
                device_, stat_dtype());
  expect_sums("ppo_policy_loss", sums, device_, 5);
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::ppo_policy_loss(*cuda_, sums.ptr<double>(), dlogp.ptr<float>(), logp.ptr<float>(), old_logp.ptr<float>(),
                          advantages.ptr<float>(), mask.ptr<int32_t>(), mask.numel(), clip_eps, dual_clip,
                          token_weight);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    const PolicyLossSums r =
        cpu::ppo_policy_loss<F>(dlogp.ptr<F>(), logp.ptr<F>(), old_logp.ptr<F>(), advantages.ptr<F>(),
                                mask.ptr<int32_t>(), mask.numel(), clip_eps, dual_clip, token_weight);
    double* s = sums.ptr<double>();
    s[0] += r.loss, s[1] += r.clipped, s[2] += r.approx_kl, s[3] += r.ratio, s[4] += r.count;
  });
}

void Backend::ppo_value_loss(Tensor dvalues, Tensor sums, Tensor values, Tensor old_values, Tensor returns, Tensor mask,
                             float clip_value, float token_weight) {
  expect_tokens("ppo_value_loss",
                {{"dvalues", &dvalues}, {"values", &values}, {"old_values", &old_values}, {"returns", &returns}}, mask,
                device_, stat_dtype());
  expect_sums("ppo_value_loss", sums, device_, 3);
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::ppo_value_loss(*cuda_, sums.ptr<double>(), dvalues.ptr<float>(), values.ptr<float>(), old_values.ptr<float>(),
                         returns.ptr<float>(), mask.ptr<int32_t>(), mask.numel(), clip_value, token_weight);
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    const ValueLossSums r =
        cpu::ppo_value_loss<F>(dvalues.ptr<F>(), values.ptr<F>(), old_values.ptr<F>(), returns.ptr<F>(),
                               mask.ptr<int32_t>(), mask.numel(), clip_value, token_weight);
    double* s = sums.ptr<double>();
    s[0] += r.loss, s[1] += r.clipped, s[2] += r.count;
  });
}

void Backend::masked_sum(Tensor sums, Tensor x, Tensor mask) {
  expect_tokens("masked_sum", {{"x", &x}}, mask, device_, stat_dtype());
  expect_sums("masked_sum", sums, device_, 2);
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    cuda::masked_sum(*cuda_, sums.ptr<double>(), x.ptr<float>(), mask.ptr<int32_t>(), mask.numel());
#endif
    return;
  }
  with_cpu_float(precision_, [&](auto z) {
    using F = decltype(z);
    const MaskedMoments m = cpu::masked_moments<F>(x.ptr<F>(), mask.ptr<int32_t>(), mask.numel());
    sums.ptr<double>()[0] += m.mean * m.count;
    sums.ptr<double>()[1] += m.count;
  });
}

void Backend::gather_rows(Tensor dst, int64_t column, Tensor src, Tensor rows) {
  const char* op = "gather_rows";
  PPO_ASSERT(dst.ndim == 2 && src.ndim == 2 && rows.ndim == 1, op, ": dst '", dst.name, "' ", dst.shape_str(),
             " and src '", src.name, "' ", src.shape_str(), " must be 2-D, rows '", rows.name, "' 1-D");
  const int64_t n = dst.dim(0), Td = dst.dim(1), B = src.dim(0), Ts = src.dim(1);
  expect(op, "src", src, device_, src.dtype, {B, Ts});
  expect(op, "dst", dst, device_, src.dtype, {n, Td});
  expect(op, "rows", rows, device_, DType::I32, {n});
  PPO_ASSERT(column >= 0 && column + Ts <= Td, op, ": columns [", column, ",", column + Ts, ") outside dst's ", Td);
  if (device_ == DeviceKind::CUDA) {
#ifdef PPO_HAS_CUDA
    range_sites_[4] = {op, "row", rows.name, "", B};
    cuda::gather_rows(*cuda_, dst.data, Td, column, src.data, B, Ts, rows.ptr<int32_t>(), n, dtype_size(src.dtype));
#endif
    return;
  }
  const size_t e = dtype_size(src.dtype);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t b = rows.ptr<int32_t>()[i];
    PPO_ASSERT(b >= 0 && b < B, op, ": row ", b, " in '", rows.name, "' outside [0,", B, ")");
    std::memcpy(static_cast<char*>(dst.data) + size_t(i * Td + column) * e,
                static_cast<const char*>(src.data) + size_t(b * Ts) * e, size_t(Ts) * e);
  }
}

}  // namespace ppo
