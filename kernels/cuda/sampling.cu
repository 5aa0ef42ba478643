// Token sampling, one block per row of logits(B,V) bf16, the same function as the CPU reference
// (kernels/cpu/sampling.cpp):
//   z = float(logits) * inv_temperature (f32 product);  p_v = exp(z_v - max z) / sum_v exp(z_v - max z)
//   rank by z descending, ties by lower id; top_k > 0 keeps the first k (mass_k = their mass, else
//   mass_k = 1); top_p < 1 keeps the shortest prefix of the kept ranking whose mass reaches
//   top_p * mass_k (top-k, then top-p on what is left, as Hugging Face);
//   u = uniform_from_bits(philox_draw(seed, stream + b, 0).v[0]) (stream += *step * step_stride when
//   a step counter is given); token = first kept id (id order)
//   whose cumulative kept mass exceeds u * kept mass (the last kept id if rounding leaves a gap);
//   logp = z[token] - max z - log(sum) of the FULL distribution.
// No sort: since z is a monotone function of the bf16 logit, the ranking is the order of a 16-bit
// key of the logit's bits (equal keys <=> equal z, -0 counted as +0). The kept set is
// { key > K* } plus the first r ids with key == K*; K* is found by bisection over the 65536 keys,
// each step one pass over the row counting tokens / summing mass with key >= K.
// Precision: probabilities, masses and the inverse CDF are computed in f64 like the reference; the
// block reductions and scans run in a fixed order (deterministic) that differs from the
// reference's sequential order only at the 1e-16 relative level, so the kept set and the token
// match except when a cumulative mass lies within that distance of its threshold.
#include <cfloat>

#include "engine/philox.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/kernel_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"

namespace ppo::cuda {
namespace {

constexpr int kSampleThreads = 512;
constexpr int kSampleWarps = kSampleThreads / 32;
constexpr int kKeyCount = 65536;

// Monotone 16-bit key of a bf16 value (larger value, larger key); -0 maps like +0.
__device__ __forceinline__ int order_key(uint16_t bits) {
  if (bits == 0x8000u) bits = 0;
  return (bits & 0x8000u) ? int(uint16_t(~bits)) : int(bits | 0x8000u);
}
__device__ __forceinline__ uint16_t bits_of_key(int key) {
  return (key & 0x8000) ? uint16_t(key & 0x7fff) : uint16_t(~uint16_t(key));
}

template <class T>
__device__ T block_sum(T x) {
  __shared__ T partial[kSampleWarps];
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = x;
  __syncthreads();
  T total = partial[0];
  for (int w = 1; w < kSampleWarps; ++w) total += partial[w];
  __syncthreads();
  return total;
}

template <class T, class Op>
__device__ T block_reduce(T x, Op op) {
  __shared__ T partial[kSampleWarps];
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = x;
  __syncthreads();
  T total = partial[0];
  for (int w = 1; w < kSampleWarps; ++w) total = op(total, partial[w]);
  __syncthreads();
  return total;
}

// Scan over threads in thread order: this thread's [begin, end) with end of thread t bitwise equal to
// begin of thread t+1; total = end of the last thread.
template <class T>
struct ScanRange {
  T begin, end, total;
};
template <class T>
__device__ ScanRange<T> block_scan(T x) {
  __shared__ T warp_total[kSampleWarps];
  __shared__ T warp_offset[kSampleWarps];
  __shared__ T total_s;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  T incl = x;
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  if (threadIdx.x == 0) {
    T run = T(0);
    for (int w = 0; w < kSampleWarps; ++w) {
      warp_offset[w] = run;
      run += warp_total[w];
    }
    total_s = run;
  }
  __syncthreads();
  const T end = warp_offset[warp] + incl;
  const T prev = __shfl_up_sync(0xffffffffu, end, 1);
  ScanRange<T> r{lane == 0 ? warp_offset[warp] : prev, end, total_s};
  __syncthreads();
  return r;
}

struct Row {
  const uint16_t* bits;  // the row's bf16 logits as raw bits
  int64_t V;
  float inv_temperature;
  double max_z, sum_e;
  __device__ float z(int64_t v) const { return f32_from_bf16(bf16{bits[v]}) * inv_temperature; }
  __device__ double p_of_z(float z) const { return exp(double(z) - max_z) / sum_e; }
  __device__ double p_of_key(int key) const { return p_of_z(f32_from_bf16(bf16{bits_of_key(key)}) * inv_temperature); }
};

// Number of tokens with key >= K (and their mass when with_mass), over the whole block.
struct CountMass {
  int64_t count;
  double mass;
};
__device__ CountMass count_mass_at_least(const Row& row, int K, bool with_mass) {
  if (K >= kKeyCount) return {0, 0.0};
  int64_t count = 0;
  double mass = 0.0;
  for (int64_t v = threadIdx.x; v < row.V; v += blockDim.x) {
    if (order_key(row.bits[v]) < K) continue;
    ++count;
    if (with_mass) mass += row.p_of_z(row.z(v));
  }
  return {block_sum(count), with_mass ? block_sum(mass) : 0.0};
}

// The largest K in [lo, kKeyCount) with pred(K) true, given pred(lo) true and pred non-increasing.
template <class Pred>
__device__ int bisect_last_true(int lo, Pred pred) {
  int hi = kKeyCount;  // pred treated as false here
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (pred(mid))
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

__global__ void __launch_bounds__(kSampleThreads)
    sample_tokens_kernel(int32_t* __restrict__ tokens, float* __restrict__ logp, const bf16* __restrict__ logits,
                         int64_t V, float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream,
                         const int32_t* __restrict__ step, uint64_t step_stride) {
  const int64_t b = blockIdx.x;
  if (step) stream += uint64_t(*step) * step_stride;
  Row row{reinterpret_cast<const uint16_t*>(logits + b * V), V, inv_temperature, 0.0, 0.0};

  // Full tempered distribution: max z, then sum exp(z - max) in f64.
  float mz = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mz = fmaxf(mz, row.z(v));
  row.max_z = double(block_reduce(mz, [](float a, float c) { return fmaxf(a, c); }));
  double se = 0.0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) se += exp(double(row.z(v)) - row.max_z);
  row.sum_e = block_sum(se);

  // Kept set: key > k_star, or key == k_star among the first `ties_kept` such ids.
  int k_star = 0;
  int64_t ties_kept = V;
  const bool use_k = top_k > 0 && top_k < V;
  const bool use_p = top_p < 1.0f;
  if (use_k || use_p) {  // block-uniform
    int k_lo = 0;
    int64_t r_k = V;
    double mass_k;
    if (use_k) {
      k_lo = bisect_last_true(0, [&](int K) { return count_mass_at_least(row, K, false).count >= top_k; });
      const CountMass above = count_mass_at_least(row, k_lo + 1, true);
      r_k = top_k - above.count;
      mass_k = above.mass + double(r_k) * row.p_of_key(k_lo);
      k_star = k_lo;
      ties_kept = r_k;
    } else {
      mass_k = count_mass_at_least(row, 0, true).mass;
    }
    if (use_p) {
      const double threshold = double(top_p) * mass_k;
      if (count_mass_at_least(row, k_lo, true).mass >= threshold) {
        const int k_p = bisect_last_true(k_lo, [&](int K) { return count_mass_at_least(row, K, true).mass >= threshold; });
        const CountMass above = count_mass_at_least(row, k_p + 1, true);
        const int64_t ties = count_mass_at_least(row, k_p, false).count - above.count;
        const int64_t limit = k_p == k_lo && use_k ? r_k : ties;
        const double p_tie = row.p_of_key(k_p);
        double cum = above.mass;  // then the ties one by one, as the reference's running sum
        int64_t r_p = 0;
        while (r_p < limit && cum < threshold) {
          cum += p_tie;
          ++r_p;
        }
        if (cum >= threshold) {
          k_star = k_p;
          ties_kept = r_p;
        }
      }
    }
  }

  // Each thread owns a contiguous id range, so scans over threads follow id order.
  const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
  const int64_t v_begin = min(V, int64_t(threadIdx.x) * chunk), v_end = min(V, v_begin + chunk);

  // Id of the last kept tie: the ties_kept-th id with key == k_star (every tie when none is cut).
  __shared__ int64_t tie_cut_s;
  if (threadIdx.x == 0) tie_cut_s = V;
  __syncthreads();
  {
    int64_t local = 0;
    for (int64_t v = v_begin; v < v_end; ++v) local += order_key(row.bits[v]) == k_star;
    const ScanRange<int64_t> ties = block_scan(local);
    if (ties_kept < ties.total && ties.begin < ties_kept && ties_kept <= ties.end) {
      int64_t seen = ties.begin;
      for (int64_t v = v_begin; v < v_end; ++v)
        if (order_key(row.bits[v]) == k_star && ++seen == ties_kept) {
          tie_cut_s = v;
          break;
        }
    }
    __syncthreads();
  }
  const int64_t tie_cut = tie_cut_s;
  auto kept = [&](int64_t v) {
    const int key = order_key(row.bits[v]);
    return key > k_star || (key == k_star && v <= tie_cut);
  };

  // Inverse CDF over kept tokens in id order.
  double local_mass = 0.0;
  int64_t local_last = -1;
  for (int64_t v = v_begin; v < v_end; ++v)
    if (kept(v)) {
      local_mass += row.p_of_z(row.z(v));
      local_last = v;
    }
  const ScanRange<double> mass = block_scan(local_mass);
  const int64_t last_kept = block_reduce(local_last, [](int64_t a, int64_t c) { return a > c ? a : c; });
  const double target = double(uniform_from_bits(philox_draw(seed, stream + uint64_t(b), 0).v[0])) * mass.total;
  __shared__ int64_t token_s;
  if (threadIdx.x == 0) token_s = last_kept;
  __syncthreads();
  if (mass.begin <= target && target < mass.end) {  // at most one thread: the ranges are disjoint
    double cum = mass.begin;
    int64_t token = local_last;
    for (int64_t v = v_begin; v < v_end; ++v) {
      if (!kept(v)) continue;
      cum += row.p_of_z(row.z(v));
      if (cum > target) {
        token = v;
        break;
      }
    }
    token_s = token;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t token = token_s;
    tokens[b] = int32_t(token);
    logp[b] = float(double(row.z(token)) - row.max_z - log(row.sum_e));
  }
}

void launch_sample_tokens(cudaStream_t stream_handle, int32_t* tokens, float* logp, const bf16* logits, int64_t B,
                          int64_t V, float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream,
                          const int32_t* step, uint64_t step_stride) {
  if (B == 0) return;
  PPO_LAUNCH(unsigned(B), kSampleThreads, 0, stream_handle, sample_tokens_kernel, tokens, logp, logits, V,
             inv_temperature, top_k, top_p, seed, stream, step, step_stride);
}

// The ids travel by value (kernel parameter space): no device buffer for a handful of ints.
struct MaskedIds {
  int32_t id[Backend::kMaxMaskedTokens];
  int n;
};

// grid B, block kMaxMaskedTokens: logits[b, ids[i]] = -inf (with a step: only while *step < below).
__global__ void mask_token_logits_kernel(bf16* logits, int64_t V, MaskedIds ids, const int32_t* step, int64_t below) {
  if (step && *step >= below) return;
  if (int(threadIdx.x) < ids.n) logits[int64_t(blockIdx.x) * V + ids.id[threadIdx.x]] = bf16_from_f32(-INFINITY);
}

// One block, a thread per row: backend.h's append_sampled at column t = *step; then *step = t + 1,
// after every thread has read it (one block: a second block could read the advanced step).
__global__ void append_sampled_kernel(int32_t* tokens, float* logp, int32_t* done, int32_t* pos,
                                      const int32_t* step_tokens, const float* step_logp, int64_t B, int64_t R,
                                      int32_t* step, DeviceStatus* status, MaskedIds stop, int32_t pad) {
  const int32_t t = *step;
  if (!in_range(status, RangeCheck::SampleColumn, t, R, 0)) return;  // block-uniform
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    ++pos[b];
    const int32_t id = step_tokens[b];
    const bool was_done = done[b] != 0;
    tokens[b * R + t] = was_done ? pad : id;
    logp[b * R + t] = was_done ? 0.0f : step_logp[b];
    bool stops = false;
    for (int i = 0; i < stop.n; ++i) stops = stops || id == stop.id[i];
    if (!was_done && stops) done[b] = 1;
  }
  __syncthreads();
  if (threadIdx.x == 0) *step = t + 1;
}

// The ids of a host list, by value.
MaskedIds masked_ids(const int32_t* ids, int n_ids) {
  MaskedIds m{};
  for (int i = 0; i < n_ids; ++i) m.id[i] = ids[i];
  m.n = n_ids;
  return m;
}

}  // namespace

void append_sampled(CudaContext& ctx, int32_t* tokens, float* logp, int32_t* done, int32_t* pos,
                    const int32_t* step_tokens, const float* step_logp, int64_t B, int64_t R, int32_t* step,
                    const int32_t* stop_ids, int n_stop, int32_t pad) {
  PPO_LAUNCH(1, 256, 0, ctx.stream, append_sampled_kernel, tokens, logp, done, pos, step_tokens, step_logp, B, R, step,
             ctx.status, masked_ids(stop_ids, n_stop), pad);
}

void mask_token_logits(CudaContext& ctx, bf16* logits, int64_t B, int64_t V, const int32_t* ids, int n_ids,
                       const int32_t* step, int64_t below) {
  if (B == 0 || n_ids == 0) return;
  const MaskedIds m = masked_ids(ids, n_ids);
  PPO_LAUNCH(unsigned(B), Backend::kMaxMaskedTokens, 0, ctx.stream, mask_token_logits_kernel, logits, V, m, step,
             below);
}

void sample_tokens(CudaContext& ctx, int32_t* tokens, float* logp, const bf16* logits, int64_t B, int64_t V,
                   float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream, const int32_t* step,
                   uint64_t step_stride) {
  PPO_ASSERT(V >= 1 && V <= INT32_MAX, "cuda sample_tokens: vocabulary size ", V, " outside [1, 2^31)");
  launch_sample_tokens(ctx.stream, tokens, logp, logits, B, V, inv_temperature, top_k, top_p, seed, stream, step,
                       step_stride);
}

}  // namespace ppo::cuda
