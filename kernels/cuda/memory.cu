// Memory helpers on the device: fill, dtype conversion, column slices. See kernels/backend.h.
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

namespace {

// data[i] = value for i < n, any element type (value already converted on the host).
template <class T>
__global__ void fill_kernel(T* data, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    data[i] = value;
}

// Element load/store between the float dtypes; the same rules as the host path of Backend::convert:
// every value passes through double, bf16 is written as bf16_from_f32(float(x)) (nearest even).
__device__ __forceinline__ double load_as_double(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load_as_double(const double* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load_as_double(const bf16* p, int64_t i) { return f32_from_bf16(p[i]); }
__device__ __forceinline__ void store_from_double(float* p, int64_t i, double x) { p[i] = float(x); }
__device__ __forceinline__ void store_from_double(double* p, int64_t i, double x) { p[i] = x; }
__device__ __forceinline__ void store_from_double(bf16* p, int64_t i, double x) { p[i] = bf16_from_f32(float(x)); }

// dst[i] = convert(src[i]), i < n
template <class D, class S>
__global__ void convert_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_from_double(dst, i, load_as_double(src, i));
}

// One thread per destination element: dst[i, column + c] = src[rows[i], c].
template <class E>
__global__ void gather_rows_kernel(E* dst, int64_t Td, int64_t column, const E* src, int64_t B, int64_t Ts,
                                   const int32_t* rows, int64_t n, DeviceStatus* status) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * Ts; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k / Ts, c = k % Ts;
    const int32_t b = rows[i];
    if (in_range(status, RangeCheck::GatherRows, b, B, i)) dst[i * Td + column + c] = src[int64_t(b) * Ts + c];
  }
}

constexpr int kThreads = 256;

template <class T>
void launch_fill(CudaContext& ctx, void* data, int64_t n, T value) {
  PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, fill_kernel<T>, static_cast<T*>(data), n, value);
}

template <class D, class S>
void launch_convert(CudaContext& ctx, void* dst, const void* src, int64_t n) {
  PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, convert_kernel<D, S>, static_cast<D*>(dst),
             static_cast<const S*>(src), n);
}

// Dispatches on the source dtype for a fixed destination type.
template <class D>
void launch_convert_from(CudaContext& ctx, void* dst, const void* src, DType src_dtype, int64_t n) {
  switch (src_dtype) {
    case DType::F32: return launch_convert<D, float>(ctx, dst, src, n);
    case DType::F64: return launch_convert<D, double>(ctx, dst, src, n);
    case DType::BF16: return launch_convert<D, bf16>(ctx, dst, src, n);
    case DType::I32: break;
  }
  PPO_FAIL("cuda convert: source dtype ", dtype_name(src_dtype), " is not a float type");
}

}  // namespace

void fill(CudaContext& ctx, void* data, DType dtype, int64_t n, float value) {
  if (n == 0) return;
  switch (dtype) {
    case DType::F32: return launch_fill<float>(ctx, data, n, value);
    case DType::F64: return launch_fill<double>(ctx, data, n, double(value));
    case DType::BF16: return launch_fill<bf16>(ctx, data, n, bf16_from_f32(value));
    case DType::I32: return launch_fill<int32_t>(ctx, data, n, int32_t(value));
  }
}

void convert(CudaContext& ctx, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (n == 0) return;
  switch (dst_dtype) {
    case DType::F32: return launch_convert_from<float>(ctx, dst, src, src_dtype, n);
    case DType::F64: return launch_convert_from<double>(ctx, dst, src, src_dtype, n);
    case DType::BF16: return launch_convert_from<bf16>(ctx, dst, src, src_dtype, n);
    case DType::I32: break;
  }
  PPO_FAIL("cuda convert: destination dtype ", dtype_name(dst_dtype), " is not a float type");
}

void gather_rows(CudaContext& ctx, void* dst, int64_t Td, int64_t column, const void* src, int64_t B, int64_t Ts,
                 const int32_t* rows, int64_t n, size_t elem) {
  if (n == 0 || Ts == 0) return;
  const int blocks = grid_for(ctx, n * Ts, kThreads);
  switch (elem) {
    case 2:
      return PPO_LAUNCH(blocks, kThreads, 0, ctx.stream, gather_rows_kernel<uint16_t>, static_cast<uint16_t*>(dst), Td,
                        column, static_cast<const uint16_t*>(src), B, Ts, rows, n, ctx.status);
    case 4:
      return PPO_LAUNCH(blocks, kThreads, 0, ctx.stream, gather_rows_kernel<uint32_t>, static_cast<uint32_t*>(dst), Td,
                        column, static_cast<const uint32_t*>(src), B, Ts, rows, n, ctx.status);
    case 8:
      return PPO_LAUNCH(blocks, kThreads, 0, ctx.stream, gather_rows_kernel<uint64_t>, static_cast<uint64_t*>(dst), Td,
                        column, static_cast<const uint64_t*>(src), B, Ts, rows, n, ctx.status);
  }
  PPO_FAIL("cuda gather_rows: elements of ", elem, " bytes");
}

void copy_on_stream(CudaContext& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  PPO_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, ctx.stream));
}

// `rows` rows of `width` bytes, row r at dst + r*dst_pitch from src + r*src_pitch: a strided 2-D
// device copy on the stream (Backend::copy_columns).
void copy_rows_2d(CudaContext& ctx, void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                  int64_t rows) {
  if (rows == 0 || width == 0) return;
  PPO_CHECK_CUDA(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, size_t(rows), cudaMemcpyDeviceToDevice, ctx.stream));
}

}  // namespace ppo::cuda
