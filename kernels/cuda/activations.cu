// GELU (tanh approximation) and SwiGLU, forward and backward. See kernels/backend.h.
// Elementwise, memory-bound: 8 bf16 per thread (one 16-byte access) when sizes and pointers allow.
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
__device__ __forceinline__ float gelu(float x) {
  const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}

// d gelu / dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 0.044715 x^2)
__device__ __forceinline__ float gelu_grad(float x) {
  const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
  const float t = tanhf(u);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// out[i] = gelu(inp[i]), n elements, VEC per thread (n % VEC == 0).
template <int VEC>
__global__ void gelu_forward_kernel(bf16* out, const bf16* inp, int64_t n) {
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * VEC; i < n;
       i += int64_t(gridDim.x) * blockDim.x * VEC) {
    float x[VEC];
    load_bf16<VEC>(x, inp + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) x[k] = gelu(x[k]);
    store_bf16<VEC>(out + i, x);
  }
}

// dinp[i] = dout[i] gelu'(inp[i])   (=)
template <int VEC>
__global__ void gelu_backward_kernel(bf16* dinp, const bf16* dout, const bf16* inp, int64_t n) {
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * VEC; i < n;
       i += int64_t(gridDim.x) * blockDim.x * VEC) {
    float x[VEC], d[VEC];
    load_bf16<VEC>(x, inp + i);
    load_bf16<VEC>(d, dout + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) x[k] = d[k] * gelu_grad(x[k]);
    store_bf16<VEC>(dinp + i, x);
  }
}

// inp(N, 2F) = [gate | up];  out(N, F) = silu(gate) up,  silu(g) = g sigmoid(g).
// Thread i handles VEC consecutive f of one row (F % VEC == 0).
template <int VEC>
__global__ void swiglu_forward_kernel(bf16* out, const bf16* inp, int64_t N, int64_t F) {
  const int64_t total = N * F;
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * VEC; i < total;
       i += int64_t(gridDim.x) * blockDim.x * VEC) {
    const int64_t n = i / F, f = i % F;
    float g[VEC], u[VEC];
    load_bf16<VEC>(g, inp + n * 2 * F + f);
    load_bf16<VEC>(u, inp + n * 2 * F + F + f);
#pragma unroll
    for (int k = 0; k < VEC; ++k) g[k] = g[k] * sigmoid(g[k]) * u[k];
    store_bf16<VEC>(out + i, g);
  }
}

// dgate = dout up silu'(gate),  silu'(g) = s (1 + g (1 - s)), s = sigmoid(g);  dup = dout silu(gate)   (=)
template <int VEC>
__global__ void swiglu_backward_kernel(bf16* dinp, const bf16* dout, const bf16* inp, int64_t N, int64_t F) {
  const int64_t total = N * F;
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * VEC; i < total;
       i += int64_t(gridDim.x) * blockDim.x * VEC) {
    const int64_t n = i / F, f = i % F;
    const int64_t gate_at = n * 2 * F + f, up_at = gate_at + F;
    float g[VEC], u[VEC], d[VEC], dg[VEC], du[VEC];
    load_bf16<VEC>(g, inp + gate_at);
    load_bf16<VEC>(u, inp + up_at);
    load_bf16<VEC>(d, dout + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float s = sigmoid(g[k]);
      dg[k] = d[k] * u[k] * s * (1.0f + g[k] * (1.0f - s));
      du[k] = d[k] * g[k] * s;
    }
    store_bf16<VEC>(dinp + gate_at, dg);
    store_bf16<VEC>(dinp + up_at, du);
  }
}

constexpr int kThreads = 256;

}  // namespace

void gelu_forward(CudaContext& ctx, bf16* out, const bf16* inp, int64_t n) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(out) && aligned16(inp))
    PPO_LAUNCH(grid_for(ctx, n / 8, kThreads), kThreads, 0, ctx.stream, gelu_forward_kernel<8>, out, inp, n);
  else
    PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, gelu_forward_kernel<1>, out, inp, n);
}

void gelu_backward(CudaContext& ctx, bf16* dinp, const bf16* dout, const bf16* inp, int64_t n) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(dinp) && aligned16(dout) && aligned16(inp))
    PPO_LAUNCH(grid_for(ctx, n / 8, kThreads), kThreads, 0, ctx.stream, gelu_backward_kernel<8>, dinp, dout, inp, n);
  else
    PPO_LAUNCH(grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream, gelu_backward_kernel<1>, dinp, dout, inp, n);
}

void swiglu_forward(CudaContext& ctx, bf16* out, const bf16* inp, int64_t N, int64_t F) {
  if (N == 0 || F == 0) return;
  if (F % 8 == 0 && aligned16(out) && aligned16(inp))
    PPO_LAUNCH(grid_for(ctx, N * F / 8, kThreads), kThreads, 0, ctx.stream, swiglu_forward_kernel<8>, out, inp, N, F);
  else
    PPO_LAUNCH(grid_for(ctx, N * F, kThreads), kThreads, 0, ctx.stream, swiglu_forward_kernel<1>, out, inp, N, F);
}

void swiglu_backward(CudaContext& ctx, bf16* dinp, const bf16* dout, const bf16* inp, int64_t N, int64_t F) {
  if (N == 0 || F == 0) return;
  if (F % 8 == 0 && aligned16(dinp) && aligned16(dout) && aligned16(inp))
    PPO_LAUNCH(grid_for(ctx, N * F / 8, kThreads), kThreads, 0, ctx.stream, swiglu_backward_kernel<8>, dinp, dout, inp,
               N, F);
  else
    PPO_LAUNCH(grid_for(ctx, N * F, kThreads), kThreads, 0, ctx.stream, swiglu_backward_kernel<1>, dinp, dout, inp, N,
               F);
}

}  // namespace ppo::cuda
