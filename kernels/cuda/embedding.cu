// Token + position embedding, forward and backward. See kernels/backend.h.
//
// Backward is deterministic without float atomics: the rows n are sorted by token id with a
// stable radix sort (radix_sort.h), so each vocabulary row's contributions sit together in increasing n;
// one block per (run of equal ids, channel slice) sums them in that order and adds the sum to
// dwte once. The same for positions into dwpe. A very frequent token (padding) makes one long
// serial run; the channel slices still spread it over C / kChannelsPerBlock blocks.
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/radix_sort.h"

namespace ppo::cuda {

namespace {

// out[n, c] = wte[tokens[n], c] + wpe[pos[n], c]   (wpe may be null)
// One thread per VEC channels of one row; out, wte, wpe (N|V|P, C) bf16, sum in f32.
template <int VEC>
__global__ void embedding_forward_kernel(bf16* out, const int32_t* tokens, const int32_t* pos, const bf16* wte,
                                         const bf16* wpe, int64_t N, int64_t C) {
  const int64_t vecs_per_row = C / VEC, total = N * vecs_per_row;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / vecs_per_row, c = (i % vecs_per_row) * VEC;
    float x[VEC];
    load_bf16<VEC>(x, wte + int64_t(tokens[n]) * C + c);
    if (wpe) {
      float p[VEC];
      load_bf16<VEC>(p, wpe + int64_t(pos[n]) * C + c);
#pragma unroll
      for (int k = 0; k < VEC; ++k) x[k] += p[k];
    }
    store_bf16<VEC>(out + n * C + c, x);
  }
}

// rows[i] = i: the values carried through the sort.
__global__ void iota_kernel(int32_t* rows, int64_t N) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(gridDim.x) * blockDim.x)
    rows[i] = int32_t(i);
}

constexpr int kChannelsPerBlock = 256;  // one thread per channel

// sorted_ids (N) ascending, sorted_rows (N) the matching rows of dout (N, C), ascending within
// equal ids. Block (i, slice): if i starts a run of equal ids, for its channels c,
//   dtable[id, c] += sum over the run (in order) of dout[row, c].
__global__ void embedding_backward_kernel(float* dtable, const bf16* dout, const int32_t* sorted_ids,
                                          const int32_t* sorted_rows, int64_t N, int64_t C) {
  const int64_t i = blockIdx.x;
  const int32_t id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;  // not the start of a run
  const int64_t c = int64_t(blockIdx.y) * kChannelsPerBlock + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int64_t j = i; j < N && sorted_ids[j] == id; ++j) acc += to_f32(dout[int64_t(sorted_rows[j]) * C + c]);
  dtable[int64_t(id) * C + c] += acc;
}

int bits_for(int64_t count) {  // radix bits that cover ids in [0, count)
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) < count) ++bits;
  return bits;
}

void launch_embedding_forward(CudaContext& ctx, bf16* out, const int32_t* tokens, const int32_t* pos, const bf16* wte,
                              const bf16* wpe, int64_t N, int64_t C) {
  const int threads = 256;
  const bool vec8 = C % 8 == 0 && aligned16(out) && aligned16(wte) && (wpe == nullptr || aligned16(wpe));
  if (vec8) {
    PPO_LAUNCH(grid_for(ctx, N * C / 8, threads), threads, 0, ctx.stream, embedding_forward_kernel<8>, out, tokens, pos,
               wte, wpe, N, C);
  } else {
    PPO_LAUNCH(grid_for(ctx, N * C, threads), threads, 0, ctx.stream, embedding_forward_kernel<1>, out, tokens, pos,
               wte, wpe, N, C);
  }
}

// dtable(count, C) += rows of dout grouped by ids (N), deterministically (see the file comment).
void launch_embedding_backward(CudaContext& ctx, float* dtable, const bf16* dout, const int32_t* ids, int64_t N,
                               int64_t C, int64_t count) {
  PPO_ASSERT(N < INT32_MAX && count <= INT32_MAX, "embedding_backward: N = ", N, " rows or ", count,
             " table rows exceed the 32-bit sort");
  PPO_ASSERT(ceil_div(C, kChannelsPerBlock) <= 65535, "embedding_backward: C = ", C, " is too wide");
  ScratchFrame scratch(ctx, "embedding_backward");
  int32_t* rows = scratch.take<int32_t>(N, "embedding rows");
  int32_t* sorted_ids = scratch.take<int32_t>(N, "embedding sorted ids");
  int32_t* sorted_rows = scratch.take<int32_t>(N, "embedding sorted rows");
  PPO_LAUNCH(grid_for(ctx, N, 256), 256, 0, ctx.stream, iota_kernel, rows, N);

  const int end_bit = bits_for(count);
  size_t temp_bytes = 0;
  PPO_CHECK_CUDA(
      radix_sort_pairs(nullptr, temp_bytes, ids, sorted_ids, rows, sorted_rows, int(N), 0, end_bit, ctx.stream));
  void* temp = scratch.take<char>(int64_t(temp_bytes), "embedding sort temp");
  PPO_CHECK_CUDA(
      radix_sort_pairs(temp, temp_bytes, ids, sorted_ids, rows, sorted_rows, int(N), 0, end_bit, ctx.stream));

  const dim3 grid(unsigned(N), unsigned(ceil_div(C, kChannelsPerBlock)));
  PPO_LAUNCH(grid, kChannelsPerBlock, 0, ctx.stream, embedding_backward_kernel, dtable, dout, sorted_ids, sorted_rows,
             N, C);
}

}  // namespace

void embedding_forward(CudaContext& ctx, bf16* out, const int32_t* tokens, const int32_t* pos, const bf16* wte,
                       const bf16* wpe, int64_t N, int64_t C) {
  if (N == 0 || C == 0) return;
  launch_embedding_forward(ctx, out, tokens, pos, wte, wpe, N, C);
}

void embedding_backward(CudaContext& ctx, float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens,
                        const int32_t* pos, int64_t N, int64_t C, int64_t V, int64_t P) {
  if (N == 0 || C == 0) return;
  launch_embedding_backward(ctx, dwte, dout, tokens, N, C, V);
  if (dwpe) launch_embedding_backward(ctx, dwpe, dout, pos, N, C, P);
}

}  // namespace ppo::cuda
