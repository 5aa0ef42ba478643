// The scheduler of the emulated device: blocks in turn, the threads of a block as fibers, every
// barrier and warp collective checked (see device.h).
#include "kernels/cuda/emu/device.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/cuda/emu/fiber.h"
#include "kernels/cuda/emu/internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define PPO_EMU_STACK_BYTES (size_t(512) << 10)  // ASan's redzones make frames several times larger
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PPO_EMU_STACK_BYTES (size_t(512) << 10)
#endif
#endif
#ifndef PPO_EMU_STACK_BYTES
#define PPO_EMU_STACK_BYTES (size_t(128) << 10)
#endif

namespace ppo::emu {

const ThreadCoords* current_coords = nullptr;

namespace {

enum class State : uint8_t { Ready, Barrier, Warp, Exited };

struct PendingCopy {
  void* dst;
  const void* src;
  size_t bytes, src_bytes;
  int group;
};

struct Thread {
  ThreadCoords coords;
  int linear = 0, warp = 0, lane = 0;
  FiberContext fiber;
  State state = State::Ready;
  Site site{nullptr, 0};  // where it waits
  Collective kind{};      // the collective it waits in
  unsigned mask = 0;
  LaneIn in;
  LaneOut out;
  std::vector<PendingCopy> copies;
  int open_group = 0;  // cp.async group being filled
};

// A warp collective some lanes have reached and others not yet.
struct PendingCollective {
  Collective kind;
  unsigned mask;
  unsigned arrived;
  Site site;
};

struct Warp {
  unsigned lanes = 0;  // lanes that exist (a block's last warp may be partial)
  unsigned exited = 0;
  std::vector<PendingCollective> pending;
};

struct Block {
  uint3 idx;
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  int live = 0;
  int exited = 0;
  int at_barrier = 0;
  Site barrier_site{nullptr, 0};
  BarrierReduce reduce = BarrierReduce::None;
  int reduce_acc = 0;
  int barrier_result = 0;
  void* smem = nullptr;
};

struct Launch {
  const char* name;
  const char* file;
  int line;
  dim3 grid, block;
  const std::function<void()>* body;
  bool failed = false;
  std::string error;
};

// The scheduler's own context and what it is running.
FiberContext scheduler;
Block* block_ = nullptr;
Launch* launch_ = nullptr;
Thread* current_ = nullptr;

StackPool& stacks() {
  static StackPool pool(PPO_EMU_STACK_BYTES);
  return pool;
}

std::string where(Site s) { return std::string(s.file ? s.file : "?") + ":" + std::to_string(s.line); }
std::string dim_str(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
std::string thread_str(const Thread& t) { return "thread " + dim_str(t.coords.thread_idx); }
std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

const char* collective_name(Collective k) {
  switch (k) {
    case Collective::ShflIdx:
      return "__shfl_sync";
    case Collective::ShflUp:
      return "__shfl_up_sync";
    case Collective::ShflDown:
      return "__shfl_down_sync";
    case Collective::ShflXor:
      return "__shfl_xor_sync";
    case Collective::Ballot:
      return "__ballot_sync";
    case Collective::SyncWarp:
      return "__syncwarp";
    case Collective::Ldmatrix:
      return "ldmatrix";
    case Collective::LdmatrixTrans:
      return "ldmatrix.trans";
    case Collective::Mma:
      return "mma.m16n8k16";
  }
  return "?";
}

// Thrown by fail on the failing thread's fiber and caught in thread_main, so that the frames it
// leaves (the message's temporaries among them) are unwound.
struct BlockFailed {};

// Ends the block: the launch fails with `what`; the running fiber never resumes.
[[noreturn]] void fail(const std::string& what) {
  Launch& l = *launch_;
  l.failed = true;
  l.error = "kernel " + kernel_name(l.name) + " (launched at " + l.file + ":" + std::to_string(l.line) + ") block " +
            dim_str(block_->idx) + ": " + what;
  throw BlockFailed{};
}

// Gives the CPU back to the scheduler until this thread is made ready again.
void wait() {
  Thread& t = *current_;
  fiber_switch(t.fiber, scheduler);
  // resumed: the scheduler set current_ and current_coords
  (void)t;
}

// Every thread that waits: runs of consecutive threads waiting at the same place, one line each.
std::string waiters() {
  std::ostringstream os;
  const std::vector<Thread>& ts = block_->threads;
  auto what = [](const Thread& t) {
    std::string w = t.state == State::Barrier ? "__syncthreads" : collective_name(t.kind);
    if (t.state == State::Warp) w += " (mask " + hex(t.mask) + ")";
    return w + " at " + where(t.site);
  };
  for (size_t i = 0; i < ts.size();) {
    if (ts[i].state != State::Barrier && ts[i].state != State::Warp) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < ts.size() && ts[j].state == ts[i].state && what(ts[j]) == what(ts[i])) ++j;
    os << "\n  "
       << (j - i == 1 ? thread_str(ts[i]) + " waits"
                      : "threads " + dim_str(ts[i].coords.thread_idx) + " to " + dim_str(ts[j - 1].coords.thread_idx) +
                            " wait")
       << " in " << what(ts[i]);
    i = j;
  }
  return os.str();
}

void run_pending_copies(Thread& t, int below_group) {
  auto keep = std::remove_if(t.copies.begin(), t.copies.end(), [&](const PendingCopy& c) {
    if (c.group >= below_group) return false;
    if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
    if (c.bytes > c.src_bytes) std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
    return true;
  });
  t.copies.erase(keep, t.copies.end());
}

void thread_main(void* arg) {
  Thread& t = *static_cast<Thread*>(arg);
  fiber_started(scheduler);
  try {
    (*launch_->body)();
    run_pending_copies(t, 1 << 30);
    Block& b = *block_;
    t.state = State::Exited;
    ++b.exited;
    --b.live;
    Warp& w = b.warps[size_t(t.warp)];
    w.exited |= 1u << t.lane;
    if (b.at_barrier > 0)
      fail(thread_str(t) + " exited while " + std::to_string(b.at_barrier) + " thread(s) wait at __syncthreads at " +
           where(b.barrier_site) + " (every thread of the block must reach it)" + waiters());
    for (const PendingCollective& p : w.pending)
      if (p.mask & (1u << t.lane))
        fail(thread_str(t) + " (lane " + std::to_string(t.lane) + ") exited while its warp waits for it in " +
             collective_name(p.kind) + " at " + where(p.site) + " with mask " + hex(p.mask) + waiters());
  } catch (const BlockFailed&) {
    t.state = State::Exited;
  }
  fiber_exit_to(t.fiber, scheduler);
}

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// 0..n-1 in the device's order, into `order`; `salt` varies the shuffle between blocks and launches.
void schedule(std::vector<int>& order, int n, uint64_t salt) {
  order.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[size_t(i)] = i;
  const DeviceState& d = device();
  if (d.order == Order::Reverse) std::reverse(order.begin(), order.end());
  if (d.order == Order::Shuffle) {
    uint64_t state = d.shuffle_seed ^ (salt * 0x2545F4914F6CDD1Dull);
    for (int i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(splitmix(state) % uint64_t(i + 1))]);
  }
}

// Runs one block to the end; false when the launch failed. Its storage is reused between blocks.
bool run_block(Launch& l, uint3 block_idx, size_t smem_bytes, uint64_t salt) {
  static Block b;
  static std::vector<int> order;
  b.idx = block_idx;
  const int n = int(l.block.x * l.block.y * l.block.z);
  b.threads.resize(size_t(n));
  b.warps.assign(size_t((n + 31) / 32), Warp{});
  b.live = n;
  b.exited = 0;
  b.at_barrier = 0;
  // Dynamic shared memory: exactly the bytes asked for, every byte 0xff (NaN as f32/f64).
  b.smem = std::malloc(smem_bytes ? smem_bytes : 1);
  if (smem_bytes) std::memset(b.smem, 0xff, smem_bytes);
  block_ = &b;
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[size_t(i)];
    t.state = State::Ready;
    t.copies.clear();
    t.open_group = 0;
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.coords.thread_idx =
        uint3{unsigned(i) % l.block.x, (unsigned(i) / l.block.x) % l.block.y, unsigned(i) / (l.block.x * l.block.y)};
    t.coords.block_idx = block_idx;
    t.coords.block_dim = l.block;
    t.coords.grid_dim = l.grid;
    b.warps[size_t(t.warp)].lanes |= 1u << t.lane;
    fiber_prepare(t.fiber, stacks().at(size_t(i)), size_t(i % 61) * 64, thread_main, &t);
  }
  schedule(order, n, salt);
  while (b.live > 0 && !l.failed) {
    bool ran = false;
    for (int i : order) {
      Thread& t = b.threads[size_t(i)];
      if (t.state != State::Ready) continue;
      current_ = &t;
      current_coords = &t.coords;
      fiber_switch(scheduler, t.fiber);
      ran = true;
      if (l.failed) break;
    }
    if (!ran && !l.failed) {
      l.failed = true;
      l.error = "kernel " + kernel_name(l.name) + " (launched at " + l.file + ":" + std::to_string(l.line) +
                ") block " + dim_str(b.idx) + ": deadlock, no thread can continue:" + waiters();
    }
  }
  current_ = nullptr;
  current_coords = nullptr;
  block_ = nullptr;
  std::free(b.smem);
  return !l.failed;
}

// Reads an element of an 8x8 b16 matrix whose row r starts at rows[r].
uint16_t matrix_element(const void* const* rows, int r, int c) {
  uint16_t v;
  std::memcpy(&v, static_cast<const char*>(rows[r]) + 2 * c, 2);
  return v;
}
uint32_t pack_halves(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }
float bf16_bits_to_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The results of a complete collective, into each participating lane's `out`.
__attribute__((noinline)) void complete(Warp& w, const PendingCollective& p, Thread* lanes[32]) {
  const unsigned mask = p.mask;
  switch (p.kind) {
    case Collective::ShflIdx:
    case Collective::ShflUp:
    case Collective::ShflDown:
    case Collective::ShflXor: {
      // PTX shfl.sync: c = segmask << 8 | clamp, segmask = 32 - width (clamp 0 for up, 31 otherwise).
      for (int lane = 0; lane < 32; ++lane) {
        if (!(mask & (1u << lane))) continue;
        Thread& t = *lanes[lane];
        const int segmask = 32 - t.in.width;
        const int b = t.in.b & 31;
        const int max_lane = (lane & segmask) | (p.kind == Collective::ShflUp ? 0 : (31 & ~segmask));
        const int min_lane = lane & segmask;
        int j = lane;
        bool ok = true;
        switch (p.kind) {
          case Collective::ShflUp:
            j = lane - b;
            ok = j >= max_lane;
            break;
          case Collective::ShflDown:
            j = lane + b;
            ok = j <= max_lane;
            break;
          case Collective::ShflXor:
            j = lane ^ b;
            ok = j <= max_lane;
            break;
          default:
            j = min_lane | (b & ~segmask);
            ok = j <= max_lane;
            break;
        }
        if (!ok) j = lane;
        // A source lane outside the mask gives an undefined value: all ones (NaN as f32/f64).
        t.out.value = (mask & (1u << j)) ? lanes[j]->in.value : ~uint64_t(0);
      }
      break;
    }
    case Collective::Ballot: {
      unsigned bits = 0;
      for (int lane = 0; lane < 32; ++lane)
        if ((mask & (1u << lane)) && lanes[lane]->in.value) bits |= 1u << lane;
      for (int lane = 0; lane < 32; ++lane)
        if (mask & (1u << lane)) lanes[lane]->out.value = bits;
      break;
    }
    case Collective::SyncWarp:
      break;
    case Collective::Ldmatrix:
    case Collective::LdmatrixTrans: {
      // .x4: lane 8i + r gives the address of row r of matrix i; lane l receives, of each matrix,
      // row l/4 columns 2(l%4), 2(l%4)+1 (transposed: rows 2(l%4), 2(l%4)+1 of column l/4).
      const void* rows[4][8];
      for (int lane = 0; lane < 32; ++lane) rows[lane / 8][lane % 8] = lanes[lane]->in.address;
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, c = 2 * (lane % 4);
        for (int m = 0; m < 4; ++m) {
          lanes[lane]->out.regs[m] =
              p.kind == Collective::Ldmatrix
                  ? pack_halves(matrix_element(rows[m], g, c), matrix_element(rows[m], g, c + 1))
                  : pack_halves(matrix_element(rows[m], c, g), matrix_element(rows[m], c + 1, g));
        }
      }
      break;
    }
    case Collective::Mma: {
      // m16n8k16, A row-major 16x16, B column-major 16x8 (bf16), C/D 16x8 f32; g = lane/4, t = lane%4:
      // A element i at row g + 8((i>>1)&1), column 2t + (i&1) + 8(i>>2); B element i at k = 2t + (i&1)
      // + 8(i>>1), n = g; C/D element i at row g + 8(i>>1), column 2t + (i&1). Exact products summed
      // in double, rounded once (tensor cores leave the summation order unspecified).
      float A[16][16], B[16][8], C[16][8];
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        const LaneIn& in = lanes[lane]->in;
        for (int i = 0; i < 8; ++i) {
          const uint16_t h = uint16_t(in.regs[i >> 1] >> (16 * (i & 1)));
          A[g + 8 * ((i >> 1) & 1)][2 * t + (i & 1) + 8 * (i >> 2)] = bf16_bits_to_float(h);
        }
        for (int i = 0; i < 4; ++i) {
          const uint16_t h = uint16_t(in.regs[4 + (i >> 1)] >> (16 * (i & 1)));
          B[2 * t + (i & 1) + 8 * (i >> 1)][g] = bf16_bits_to_float(h);
          C[g + 8 * (i >> 1)][2 * t + (i & 1)] = in.acc[i];
        }
      }
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; ++i) {
          const int r = g + 8 * (i >> 1), c = 2 * t + (i & 1);
          double acc = C[r][c];
          for (int k = 0; k < 16; ++k) acc += double(A[r][k]) * double(B[k][c]);
          lanes[lane]->out.acc[i] = float(acc);
        }
      }
      break;
    }
  }
  (void)w;
}

}  // namespace

int syncthreads(Site site, BarrierReduce reduce, int predicate) {
  Block& b = *block_;
  Thread& t = *current_;
  if (b.exited > 0) {
    std::string who;
    for (const Thread& o : b.threads)
      if (o.state == State::Exited) {
        who = thread_str(o);
        break;
      }
    fail(thread_str(t) + " reached __syncthreads at " + where(site) + " after " + std::to_string(b.exited) +
         " thread(s) of the block exited (first: " + who + "); every thread of the block must reach it");
  }
  if (b.at_barrier == 0) {
    b.barrier_site = site;
    b.reduce = reduce;
    b.reduce_acc = reduce == BarrierReduce::And ? 1 : 0;
  } else if (site.line != b.barrier_site.line || std::strcmp(site.file, b.barrier_site.file) != 0) {
    t.state = State::Barrier;
    t.site = site;
    fail("threads wait at different __syncthreads: " + thread_str(t) + " at " + where(site) + ", others at " +
         where(b.barrier_site) + waiters());
  }
  switch (reduce) {
    case BarrierReduce::None:
      break;
    case BarrierReduce::Count:
      b.reduce_acc += predicate != 0;
      break;
    case BarrierReduce::And:
      b.reduce_acc = b.reduce_acc && predicate != 0;
      break;
    case BarrierReduce::Or:
      b.reduce_acc = b.reduce_acc || predicate != 0;
      break;
  }
  t.state = State::Barrier;
  t.site = site;
  if (++b.at_barrier == b.live) {  // the last one: everyone continues, in the schedule's order
    b.barrier_result = b.reduce_acc;
    b.at_barrier = 0;
    for (Thread& o : b.threads)
      if (o.state == State::Barrier) o.state = State::Ready;
  }
  wait();
  return b.barrier_result;
}

LaneOut warp_collective(Collective kind, unsigned mask, Site site, const LaneIn& in) {
  Block& b = *block_;
  Thread& t = *current_;
  Warp& w = b.warps[size_t(t.warp)];
  const unsigned bit = 1u << t.lane;
  auto call = [&] { return std::string(collective_name(kind)) + " at " + where(site) + " with mask " + hex(mask); };
  if (!(mask & bit))
    fail(thread_str(t) + " (lane " + std::to_string(t.lane) + ") calls " + call() + ", which does not include it");
  if (mask & ~w.lanes)
    fail(thread_str(t) + " calls " + call() + ", which names lanes the block does not have (" + hex(mask & ~w.lanes) +
         ")");
  if (mask & w.exited)
    fail(thread_str(t) + " calls " + call() + ", which names lane(s) that exited (" + hex(mask & w.exited) +
         "): an early return before a full-mask collective?");
  const bool shuffle = kind == Collective::ShflIdx || kind == Collective::ShflUp || kind == Collective::ShflDown ||
                       kind == Collective::ShflXor;
  if (shuffle && (in.width < 1 || in.width > 32 || (in.width & (in.width - 1)) != 0))
    fail(thread_str(t) + ": " + call() + ": width " + std::to_string(in.width) + " is not a power of two in [1, 32]");
  const bool full_warp = kind == Collective::Ldmatrix || kind == Collective::LdmatrixTrans || kind == Collective::Mma;
  if (full_warp && mask != 0xffffffffu) fail(call() + ": the whole warp must execute it");
  if ((kind == Collective::Ldmatrix || kind == Collective::LdmatrixTrans) &&
      (reinterpret_cast<uintptr_t>(in.address) & 15) != 0)
    fail(thread_str(t) + ": " + call() + ": row address is not 16-byte aligned");

  PendingCollective* p = nullptr;
  for (PendingCollective& q : w.pending)
    if (q.mask & mask) p = &q;
  if (p && (p->mask != mask || p->kind != kind)) {
    t.state = State::Warp;
    t.kind = kind;
    t.mask = mask;
    t.site = site;
    fail("lanes of warp " + std::to_string(t.warp) + " disagree: " + thread_str(t) + " calls " + call() + ", lanes " +
         hex(p->arrived) + " wait in " + collective_name(p->kind) + " at " + where(p->site) + " with mask " +
         hex(p->mask) + waiters());
  }
  if (!p) {
    w.pending.push_back({kind, mask, 0u, site});
    p = &w.pending.back();
  }
  t.in = in;
  t.state = State::Warp;
  t.kind = kind;
  t.mask = mask;
  t.site = site;
  p->arrived |= bit;
  if (p->arrived == mask) {
    Thread* lanes[32] = {};
    const int first = t.warp * 32;
    for (int lane = 0; lane < 32; ++lane)
      if (mask & (1u << lane)) lanes[lane] = &b.threads[size_t(first + lane)];
    const PendingCollective done = *p;
    w.pending.erase(w.pending.begin() + (p - w.pending.data()));
    complete(w, done, lanes);
    for (int lane = 0; lane < 32; ++lane)
      if (lanes[lane]) lanes[lane]->state = State::Ready;
    return t.out;  // the last lane to arrive goes on at once
  }
  wait();
  return t.out;
}

unsigned active_mask() {
  const Warp& w = block_->warps[size_t(current_->warp)];
  return w.lanes & ~w.exited;
}

void cp_async(void* dst, const void* src, size_t bytes, size_t src_bytes) {
  Thread& t = *current_;
  t.copies.push_back({dst, src, bytes, src_bytes < bytes ? src_bytes : bytes, t.open_group});
}
void cp_async_commit() { ++current_->open_group; }
void cp_async_wait(int pending_groups) {
  Thread& t = *current_;
  run_pending_copies(t, t.open_group - pending_groups);
}

void* dynamic_shared_memory() { return block_->smem; }

bool is_device_pointer(const void* p) { return p == nullptr || device_range(p, 1); }

void fail_pointer_argument(const char* name, const char* file, int line, int index, const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  set_error(cudaErrorIllegalAddress, "kernel " + kernel_name(name) + " (launched at " + file + ":" +
                                         std::to_string(line) + "): argument " + std::to_string(index) + " (" + buf +
                                         ") is not device memory");
}

void run_kernel(const char* name, const char* file, int line, const void* kernel, dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, std::function<void()> body) {
  DeviceState& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mutex);
  auto at = [&] { return "kernel " + kernel_name(name) + " (launched at " + file + ":" + std::to_string(line) + ")"; };
  const cudaDeviceProp& props = properties();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0 ||
      threads > uint64_t(props.maxThreadsPerBlock) || block.x > unsigned(props.maxThreadsDim[0]) ||
      block.y > unsigned(props.maxThreadsDim[1]) || block.z > unsigned(props.maxThreadsDim[2]) ||
      grid.x > unsigned(props.maxGridSize[0]) || grid.y > unsigned(props.maxGridSize[1]) ||
      grid.z > unsigned(props.maxGridSize[2])) {
    set_error(cudaErrorInvalidConfiguration, at() + ": grid " + dim_str(uint3{grid.x, grid.y, grid.z}) + " block " +
                                                 dim_str(uint3{block.x, block.y, block.z}) + " is not a valid launch");
    return;
  }
  const auto attr = d.max_dynamic_smem.find(kernel);
  const size_t smem_limit = attr != d.max_dynamic_smem.end() ? size_t(attr->second) : props.sharedMemPerBlock;
  if (smem > smem_limit) {
    set_error(cudaErrorInvalidValue,
              at() + ": " + std::to_string(smem) + " bytes of dynamic shared memory, the limit is " +
                  std::to_string(smem_limit) +
                  (attr == d.max_dynamic_smem.end() ? " (raise it with cudaFuncAttributeMaxDynamicSharedMemorySize)"
                                                    : " (cudaFuncAttributeMaxDynamicSharedMemorySize)"));
    return;
  }
  // Validated now; the blocks run when the launch executes (now, or at each replay of a captured graph).
  submit(stream, at(), 1, [name, file, line, grid, block, smem, body = std::move(body)] {
    Launch l{name, file, line, grid, block, &body, false, {}};
    launch_ = &l;
    const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
    static uint64_t launch_count = 0;
    ++launch_count;
    // Blocks in the device's order too (a shuffle per launch; the thread shuffle varies per block).
    const uint64_t salt = launch_count * 0x9e3779b97f4a7c15ull;
    static std::vector<int> block_order;
    block_order.clear();
    if (blocks <= uint64_t(1) << 24) schedule(block_order, int(blocks), salt);
    for (uint64_t i = 0; i < blocks; ++i) {
      const uint64_t linear = block_order.empty() ? i : uint64_t(block_order[size_t(i)]);
      const uint3 idx{unsigned(linear % grid.x), unsigned((linear / grid.x) % grid.y),
                      unsigned(linear / (uint64_t(grid.x) * grid.y))};
      if (!run_block(l, idx, smem, salt + linear)) break;
    }
    launch_ = nullptr;
    if (l.failed) set_error(cudaErrorLaunchFailure, l.error);
  });
}

}  // namespace ppo::emu

// For conditional breakpoints in gdb: break norm.cu:40 if ppo_emu_block() == 3 && ppo_emu_thread() == 17
extern "C" int ppo_emu_thread() {
  const ppo::emu::ThreadCoords* c = ppo::emu::current_coords;
  return c ? int(c->thread_idx.x + c->block_dim.x * (c->thread_idx.y + c->block_dim.y * c->thread_idx.z)) : -1;
}
extern "C" int ppo_emu_block() {
  const ppo::emu::ThreadCoords* c = ppo::emu::current_coords;
  return c ? int(c->block_idx.x + c->grid_dim.x * (c->block_idx.y + c->grid_dim.y * c->block_idx.z)) : -1;
}
