// What device code sees on the emulated device: the built-in variables, barriers, warp collectives
// (PTX shfl.sync semantics), atomics, tensor-core fragments, and the kernel launch. Included
// (through prelude.h) by every .cu file of an emulated build, after the CUDA headers.
//
// Execution model: a launch runs its blocks one after another on the calling host thread; the
// threads of a block are fibers that run until they wait (a barrier, a warp collective) or exit.
// Every wait is checked: a barrier must be reached by every thread of the block at one source line,
// a warp collective by every lane of its mask with the same mask and kind; a thread that exits
// while others wait for it, or a deadlock, fails the launch with the kernel, block, thread and
// source line of each waiter. A failed launch reports cudaErrorLaunchFailure at its check.
// PPO_EMU_ORDER = forward (default) | reverse | shuffle[:seed] sets the order in which blocks and
// the threads of a block are run: a missing barrier changes the results between orders.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace ppo::emu {

struct Site {
  const char* file;
  int line;
};
#define PPO_EMU_HERE (::ppo::emu::Site{__FILE__, __LINE__})

// The built-in variables of the thread being run.
struct ThreadCoords {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern const ThreadCoords* current_coords;  // set by the scheduler before a fiber runs

// ---- barriers and warp collectives ---------------------------------------------------------------
enum class Collective : uint8_t { ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, SyncWarp, Ldmatrix, LdmatrixTrans, Mma };

// What a lane brings to a collective and what it gets back.
struct LaneIn {
  uint64_t value = 0;             // shuffled bits, ballot predicate
  int b = 0;                      // source lane, delta or lane mask
  int width = 32;                 // shuffle segment width
  const void* address = nullptr;  // ldmatrix: this lane's row
  uint32_t regs[6] = {};          // mma: A (4), B (2)
  float acc[4] = {};              // mma: C
};
struct LaneOut {
  uint64_t value = 0;
  uint32_t regs[4] = {};  // ldmatrix results
  float acc[4] = {};      // mma D
};

enum class BarrierReduce : uint8_t { None, Count, And, Or };
int syncthreads(Site site, BarrierReduce reduce = BarrierReduce::None, int predicate = 0);
LaneOut warp_collective(Collective kind, unsigned mask, Site site, const LaneIn& in);
unsigned active_mask();  // lanes of the running warp that have not exited

template <class T>
T shuffle(Collective kind, Site site, unsigned mask, T var, int b, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  LaneIn in;
  std::memcpy(&in.value, &var, sizeof(T));
  in.b = b;
  in.width = width;
  const LaneOut out = warp_collective(kind, mask, site, in);
  T r;
  std::memcpy(&r, &out.value, sizeof(T));
  return r;
}

inline unsigned ballot(Site site, unsigned mask, int predicate) {
  LaneIn in;
  in.value = predicate != 0;
  return unsigned(warp_collective(Collective::Ballot, mask, site, in).value);
}

// ---- asynchronous copies (cp.async): performed when waited for ------------------------------------
void cp_async(void* dst, const void* src, size_t bytes, size_t src_bytes);  // zero-fills past src_bytes
void cp_async_commit();
void cp_async_wait(int pending_groups);

// ---- dynamic shared memory of the running block ---------------------------------------------------
void* dynamic_shared_memory();

// ---- launch ---------------------------------------------------------------------------------------
bool is_device_pointer(const void* p);  // null, or inside a live device allocation

// Runs `body` once per thread of the grid (see the file comment); errors are reported through
// cudaGetLastError like a real launch. `kernel` identifies the function for cudaFuncSetAttribute.
// The configuration is checked at the launch; on a capturing stream the grid runs at each launch of
// the captured graph, with the arguments `body` holds (converted at the launch).
void run_kernel(const char* name, const char* file, int line, const void* kernel, dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, std::function<void()> body);
void fail_pointer_argument(const char* name, const char* file, int line, int index, const void* p);

template <class... Params, class... Args>
void launch(const char* name, const char* file, int line, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            void (*kernel)(Params...), Args&&... args) {
  // The arguments converted to the parameter types once, as a launch copies them to the device.
  auto params = std::make_shared<std::tuple<std::decay_t<Params>...>>(std::forward<Args>(args)...);
  bool pointers_ok = true;
  std::apply(
      [&](const auto&... p) {
        int index = 0;
        auto check = [&](const auto& value) {
          using P = std::decay_t<decltype(value)>;
          if constexpr (std::is_pointer_v<P> && !std::is_function_v<std::remove_pointer_t<P>>) {
            if (pointers_ok && !is_device_pointer(value)) {
              fail_pointer_argument(name, file, line, index, value);
              pointers_ok = false;
            }
          }
          ++index;
        };
        (check(p), ...);
      },
      *params);
  if (!pointers_ok) return;
  run_kernel(name, file, line, reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
             [kernel, params] { std::apply(kernel, *params); });
}

}  // namespace ppo::emu

// ---- the CUDA names device code uses ----------------------------------------------------------------
#define threadIdx (::ppo::emu::current_coords->thread_idx)
#define blockIdx (::ppo::emu::current_coords->block_idx)
#define blockDim (::ppo::emu::current_coords->block_dim)
#define gridDim (::ppo::emu::current_coords->grid_dim)

#define __syncthreads() ((void)::ppo::emu::syncthreads(PPO_EMU_HERE))
#define __syncthreads_count(p) ::ppo::emu::syncthreads(PPO_EMU_HERE, ::ppo::emu::BarrierReduce::Count, (p))
#define __syncthreads_and(p) ::ppo::emu::syncthreads(PPO_EMU_HERE, ::ppo::emu::BarrierReduce::And, (p))
#define __syncthreads_or(p) ::ppo::emu::syncthreads(PPO_EMU_HERE, ::ppo::emu::BarrierReduce::Or, (p))
#define __shfl_sync(...) ::ppo::emu::shuffle(::ppo::emu::Collective::ShflIdx, PPO_EMU_HERE, __VA_ARGS__)
#define __shfl_up_sync(...) ::ppo::emu::shuffle(::ppo::emu::Collective::ShflUp, PPO_EMU_HERE, __VA_ARGS__)
#define __shfl_down_sync(...) ::ppo::emu::shuffle(::ppo::emu::Collective::ShflDown, PPO_EMU_HERE, __VA_ARGS__)
#define __shfl_xor_sync(...) ::ppo::emu::shuffle(::ppo::emu::Collective::ShflXor, PPO_EMU_HERE, __VA_ARGS__)
#define __ballot_sync(mask, p) ::ppo::emu::ballot(PPO_EMU_HERE, (mask), (p))
#define __any_sync(mask, p) (::ppo::emu::ballot(PPO_EMU_HERE, (mask), (p)) != 0u)
#define __all_sync(mask, p) (::ppo::emu::ballot(PPO_EMU_HERE, (mask), (p)) == (mask))
#define __syncwarp(...)                                                                                        \
  ((void)::ppo::emu::warp_collective(::ppo::emu::Collective::SyncWarp, ::ppo::emu::syncwarp_mask(__VA_ARGS__), \
                                     PPO_EMU_HERE, {}))
#define __activemask() ::ppo::emu::active_mask()

namespace ppo::emu {
constexpr unsigned syncwarp_mask(unsigned mask = 0xffffffffu) { return mask; }
}  // namespace ppo::emu

// Memory fences order nothing here: fibers switch only at barriers and collectives.
inline void __threadfence() {}
inline void __threadfence_block() {}

// Atomics: a fiber is never interrupted inside one, so plain read-modify-writes are atomic.
template <class T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T atomicSub(T* p, T v) {
  const T old = *p;
  *p = old - v;
  return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
  const T old = *p;
  *p = old < v ? v : old;
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  const T old = *p;
  *p = v < old ? v : old;
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}
template <class T>
inline T atomicCAS(T* p, T compare, T v) {
  const T old = *p;
  if (old == compare) *p = v;
  return old;
}
template <class T>
inline T atomicOr(T* p, T v) {
  const T old = *p;
  *p = old | v;
  return old;
}
template <class T>
inline T atomicAnd(T* p, T v) {
  const T old = *p;
  *p = old & v;
  return old;
}

// Host versions of device-only intrinsics.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline void __sincosf(float x, float* s, float* c) {
  *s = sinf(x);
  *c = cosf(x);
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) { return int(__float_as_uint(f)); }
inline float __int_as_float(int i) { return __uint_as_float(unsigned(i)); }
inline long long __double_as_longlong(double d) {
  long long u;
  std::memcpy(&u, &d, 8);
  return u;
}
inline double __longlong_as_double(long long u) {
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
// CUDA's min/max over integers of mixed width (the wider type wins), as nvcc resolves them.
template <class A, class B, class = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(a) : C(b);
}
template <class A, class B, class = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}

// cuda_runtime.h's typed overload (defined for nvcc only): a kernel's attributes by its function.
template <class... Params>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
