// LayerNorm / RMSNorm forward (optionally fused with the residual add), backward, residual add.
// See kernels/backend.h for the math. act tensors bf16, statistics f32, parameter grads f32.
#include <algorithm>

#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {

namespace {

// One block per row n of x(N, C), x = a (plain norm) or x = bf16(a + b) (fused residual; res_out = x).
// The row is kept in shared memory as f32, laid out [k][slot] (slot = c / VEC) so that a warp's
// accesses hit consecutive banks. Two passes over the cached row (mean, then centred variance):
//   LayerNorm: mean = avg x, rstd = 1/sqrt(avg (x-mean)^2 + eps), out = (x-mean) rstd w + bias
//   RMSNorm:   mean = 0 (not stored), rstd = 1/sqrt(avg x^2 + eps), out = x rstd w
// The norm reads the rounded bf16 residual, the same values the backward pass will see.
template <int VEC>
__global__ void norm_forward_kernel(NormKind kind, bf16* res_out, bf16* out, float* mean, float* rstd, const bf16* a,
                                    const bf16* b, const bf16* weight, const bf16* bias, int64_t C, float eps) {
  PPO_DYNAMIC_SHARED(float, row);  // (C) f32
  const int64_t n = blockIdx.x, slots = C / VEC;
  const int64_t base = n * C;
  float acc[1] = {0.0f};
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
    float x[VEC];
    load_bf16<VEC>(x, a + base + s * VEC);
    if (b) {
      float y[VEC];
      load_bf16<VEC>(y, b + base + s * VEC);
#pragma unroll
      for (int k = 0; k < VEC; ++k) x[k] += y[k];
      store_bf16<VEC>(res_out + base + s * VEC, x);
#pragma unroll
      for (int k = 0; k < VEC; ++k) x[k] = to_f32(to_bf16(x[k]));
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      row[k * slots + s] = x[k];
      acc[0] += x[k];
    }
  }
  const bool layer_norm = kind == NormKind::LayerNorm;
  float mu = 0.0f;
  if (layer_norm) {
    block_sum<1>(acc);
    mu = acc[0] / float(C);
  }
  // Each thread reads back only the entries it wrote: no barrier needed before this loop.
  float sq[1] = {0.0f};
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float d = row[k * slots + s] - mu;
      sq[0] += d * d;
    }
  }
  block_sum<1>(sq);
  const float rs = rsqrtf(sq[0] / float(C) + eps);
  for (int64_t s = threadIdx.x; s < slots; s += blockDim.x) {
    float w[VEC], y[VEC];
    load_bf16<VEC>(w, weight + s * VEC);
#pragma unroll
    for (int k = 0; k < VEC; ++k) y[k] = (row[k * slots + s] - mu) * rs * w[k];
    if (bias) {
      float bb[VEC];
      load_bf16<VEC>(bb, bias + s * VEC);
#pragma unroll
      for (int k = 0; k < VEC; ++k) y[k] += bb[k];
    }
    store_bf16<VEC>(out + base + s * VEC, y);
  }
  if (threadIdx.x == 0) {
    if (layer_norm && mean) mean[n] = mu;
    rstd[n] = rs;
  }
}

// Backward, first pass. Block blk owns rows [blk*rows_per_block, ...) and thread t the channels
// c = t + j*blockDim. Per row, with xhat = (x - mean) rstd (mean = 0 for RMSNorm), g = dout w:
//   dinp += rstd (g - avg_c g - xhat avg_c(g xhat))      (RMSNorm: without the avg_c g term)
// and per channel, in shared memory: pw[c] += dout xhat, pb[c] += dout. At the end the block writes
// its partials to partial_w/partial_b (blocks, C); norm_backward_params_kernel sums them in block order.
__global__ void norm_backward_kernel(NormKind kind, bf16* dinp, float* partial_w, float* partial_b, const bf16* dout,
                                     const bf16* inp, const bf16* weight, const float* mean, const float* rstd,
                                     int64_t N, int64_t C, int64_t rows_per_block) {
  PPO_DYNAMIC_SHARED(float, part);  // pw (C) then pb (C)
  float* pw = part;
  float* pb = part + C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) pw[c] = pb[c] = 0.0f;
  const bool layer_norm = kind == NormKind::LayerNorm;
  const int64_t first = blockIdx.x * rows_per_block, last = min(N, first + rows_per_block);
  for (int64_t n = first; n < last; ++n) {
    const int64_t base = n * C;
    const float mu = layer_norm ? mean[n] : 0.0f, rs = rstd[n];
    float sums[2] = {0.0f, 0.0f};  // sum_c g, sum_c g xhat
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float xhat = (to_f32(inp[base + c]) - mu) * rs;
      const float g = to_f32(dout[base + c]) * to_f32(weight[c]);
      sums[0] += g;
      sums[1] += g * xhat;
    }
    block_sum<2>(sums);
    const float mean_g = layer_norm ? sums[0] / float(C) : 0.0f, mean_gx = sums[1] / float(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float xhat = (to_f32(inp[base + c]) - mu) * rs;
      const float d = to_f32(dout[base + c]);
      const float g = d * to_f32(weight[c]);
      dinp[base + c] = to_bf16(to_f32(dinp[base + c]) + rs * (g - mean_g - xhat * mean_gx));
      pw[c] += d * xhat;
      pb[c] += d;
    }
  }
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    if (partial_w) partial_w[blockIdx.x * C + c] = pw[c];
    if (partial_b) partial_b[blockIdx.x * C + c] = pb[c];
  }
}

// dweight[c] += sum_blk partial_w[blk, c];  dbias[c] += sum_blk partial_b[blk, c]  (fixed order)
__global__ void norm_backward_params_kernel(float* dweight, float* dbias, const float* partial_w,
                                            const float* partial_b, int blocks, int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    float w = 0.0f, b = 0.0f;
    for (int blk = 0; blk < blocks; ++blk) {
      if (dweight) w += partial_w[blk * C + c];
      if (dbias) b += partial_b[blk * C + c];
    }
    if (dweight) dweight[c] += w;
    if (dbias) dbias[c] += b;
  }
}

// out = a + b, n elements, VEC per thread.
template <int VEC>
__global__ void residual_kernel(bf16* out, const bf16* a, const bf16* b, int64_t n) {
  const int64_t vecs = n / VEC;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < vecs; i += int64_t(gridDim.x) * blockDim.x) {
    float x[VEC], y[VEC];
    load_bf16<VEC>(x, a + i * VEC);
    load_bf16<VEC>(y, b + i * VEC);
#pragma unroll
    for (int k = 0; k < VEC; ++k) x[k] += y[k];
    store_bf16<VEC>(out + i * VEC, x);
  }
}

int norm_threads(int64_t work_per_row) { return work_per_row >= 1024 ? 256 : 128; }

// Raises a kernel's dynamic shared-memory limit when `bytes` needs more than the default 48 KiB.
template <class Kernel>
void allow_shared(const CudaContext& ctx, Kernel kernel, size_t bytes, const char* op) {
  PPO_ASSERT(bytes <= ctx.props.sharedMemPerBlockOptin, op, ": ", bytes, " bytes of shared memory per block, the device allows ",
             ctx.props.sharedMemPerBlockOptin);
  if (bytes > 48 * 1024) PPO_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int VEC>
void launch_norm_forward(CudaContext& ctx, NormKind kind, bf16* res_out, bf16* out, float* mean, float* rstd,
                         const bf16* a, const bf16* b, const bf16* weight, const bf16* bias, int64_t N, int64_t C,
                         float eps) {
  const size_t smem = size_t(C) * sizeof(float);
  allow_shared(ctx, norm_forward_kernel<VEC>, smem, "norm_forward");
  PPO_ASSERT(N <= INT32_MAX, "norm_forward: ", N, " rows");
  PPO_LAUNCH(unsigned(N), norm_threads(C / VEC), smem, ctx.stream, norm_forward_kernel<VEC>, kind, res_out, out, mean,
             rstd, a, b, weight, bias, C, eps);
}

}  // namespace

void norm_forward(CudaContext& ctx, NormKind kind, bf16* res_out, bf16* out, float* mean, float* rstd, const bf16* a,
                  const bf16* b, const bf16* weight, const bf16* bias, int64_t N, int64_t C, float eps) {
  if (N == 0 || C == 0) return;
  const bool vec8 = C % 8 == 0 && aligned16(out) && aligned16(a) && aligned16(weight) &&
                    (b == nullptr || (aligned16(b) && aligned16(res_out))) && (bias == nullptr || aligned16(bias));
  if (vec8) launch_norm_forward<8>(ctx, kind, res_out, out, mean, rstd, a, b, weight, bias, N, C, eps);
  else launch_norm_forward<1>(ctx, kind, res_out, out, mean, rstd, a, b, weight, bias, N, C, eps);
}

void norm_backward(CudaContext& ctx, NormKind kind, bf16* dinp, float* dweight, float* dbias, const bf16* dout,
                   const bf16* inp, const bf16* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
  if (N == 0 || C == 0) return;
  // Blocks: a function of N and C only (the partial sums' order must not depend on the device),
  // at most 256 and with at most 16 MiB of partials.
  const int64_t budget_blocks = std::max<int64_t>(1, (int64_t(16) << 20) / (2 * C * int64_t(sizeof(float))));
  const int blocks = int(std::min<int64_t>({N, 256, budget_blocks}));
  const int64_t rows_per_block = ceil_div(N, blocks);
  ScratchFrame scratch(ctx, "norm_backward");
  float* partial_w = dweight ? scratch.take<float>(int64_t(blocks) * C, "norm dweight partials") : nullptr;
  float* partial_b = dbias ? scratch.take<float>(int64_t(blocks) * C, "norm dbias partials") : nullptr;
  const size_t smem = 2 * size_t(C) * sizeof(float);
  allow_shared(ctx, norm_backward_kernel, smem, "norm_backward");
  PPO_LAUNCH(blocks, norm_threads(C), smem, ctx.stream, norm_backward_kernel, kind, dinp, partial_w, partial_b, dout,
             inp, weight, mean, rstd, N, C, rows_per_block);
  if (dweight || dbias) {
    PPO_LAUNCH(grid_for(ctx, C, 256), 256, 0, ctx.stream, norm_backward_params_kernel, dweight, dbias, partial_w,
               partial_b, blocks, C);
  }
}

void residual_forward(CudaContext& ctx, bf16* out, const bf16* a, const bf16* b, int64_t n) {
  if (n == 0) return;
  const int threads = 256;
  if (n % 8 == 0 && aligned16(out) && aligned16(a) && aligned16(b)) {
    PPO_LAUNCH(grid_for(ctx, n / 8, threads), threads, 0, ctx.stream, residual_kernel<8>, out, a, b, n);
  } else {
    PPO_LAUNCH(grid_for(ctx, n, threads), threads, 0, ctx.stream, residual_kernel<1>, out, a, b, n);
  }
}

}  // namespace ppo::cuda
