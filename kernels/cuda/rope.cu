// RoPE, rotate-half layout, in place on the q and k heads of packed qkv(B,T,(NH+2*NKV)*HS) bf16.
// For i < HS/2:  f = pos * theta^(-2i/HS)
//   forward:  (x_i, x_{i+HS/2}) <- (x_i cos f - x_{i+HS/2} sin f,  x_{i+HS/2} cos f + x_i sin f)
//   inverse:  the same with -f (the transposed rotation; used for the backward pass on dqkv).
// Precision: the angle is computed in f32 as float(pos) * powf(theta, -2i/HS) and sincosf (full
// range reduction, not the __sincosf intrinsic). The f32 product carries a relative error of about
// 1e-7, so at pos = 4096 the angle is off by at most ~5e-4 rad worst case, well under the bf16
// rounding (2^-8 relative) of the stored result. The rotation itself is done in f32 and rounded
// to bf16 once. (The CPU reference computes the angle in f64; the difference is below bf16 rounding.)
#include "kernels/cuda/context.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {
namespace {

// One thread per (b, t, head in [0, NH+NKV), i < HS/2): rotates the pair (i, i + HS/2).
__global__ void rope_kernel(bf16* __restrict__ qkv, const int32_t* __restrict__ pos, int64_t N, int heads,
                            int row_width, int HS, float theta, float direction) {
  const int half = HS / 2;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = N * heads * half;
  if (idx >= total) return;
  const int i = int(idx % half);
  const int head = int((idx / half) % heads);
  const int64_t n = idx / (int64_t(half) * heads);  // row = b*T + t
  const float inv_freq = powf(theta, -2.0f * float(i) / float(HS));
  const float angle = float(pos[n]) * inv_freq;
  float s, c;
  sincosf(angle, &s, &c);
  s *= direction;
  bf16* x = qkv + n * row_width + int64_t(head) * HS;  // q heads then k heads are contiguous
  const float x0 = f32_from_bf16(x[i]);
  const float x1 = f32_from_bf16(x[i + half]);
  x[i] = bf16_from_f32(x0 * c - x1 * s);
  x[i + half] = bf16_from_f32(x1 * c + x0 * s);
}

void launch_rope(cudaStream_t stream, bf16* qkv, const int32_t* pos, int64_t N, int NH, int NKV, int HS, float theta,
                 bool inverse) {
  const int heads = NH + NKV;  // the rotated heads: all q heads and all k heads
  const int64_t total = N * heads * (HS / 2);
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  PPO_LAUNCH(unsigned(blocks), threads, 0, stream, rope_kernel, qkv, pos, N, heads, (NH + 2 * NKV) * HS, HS, theta,
             inverse ? -1.0f : 1.0f);
}

}  // namespace

void rope(CudaContext& ctx, bf16* qkv, const int32_t* pos, int64_t B, int64_t T, int NH, int NKV, int HS, float theta,
          bool inverse) {
  PPO_ASSERT(HS % 2 == 0, "cuda rope: head size ", HS, " is odd");
  launch_rope(ctx.stream, qkv, pos, B * T, NH, NKV, HS, theta, inverse);
}

}  // namespace ppo::cuda
