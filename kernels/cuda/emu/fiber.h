// Fibers for the emulated device: each thread of a block runs on its own small stack and gives the
// CPU back when it waits (a barrier, a warp collective) or exits. A fiber switch saves the callee-
// saved registers and the stack pointer (x86-64: a few instructions; elsewhere ucontext).
// Under AddressSanitizer every switch is announced, so ASan follows the stack in use.
#pragma once
#include <cstddef>
#include <vector>

namespace ppo::emu {

// A stack with a PROT_NONE guard page below it: an overflow faults instead of corrupting a neighbour.
class FiberStack {
 public:
  explicit FiberStack(size_t bytes);
  ~FiberStack();
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  void* bottom() const { return bottom_; }
  size_t size() const { return size_; }

 private:
  void* mapping_;
  size_t mapping_bytes_;
  void* bottom_;  // lowest usable byte
  size_t size_;
};

// The scheduler's side and each fiber's side of a switch.
using FiberEntry = void (*)(void* arg);

struct FiberContext {
  void* sp = nullptr;          // saved stack pointer (x86-64) or ucontext (elsewhere)
  FiberEntry entry = nullptr;  // what a prepared fiber runs (the ucontext path reads it here)
  void* arg = nullptr;
  void* asan_fake_stack = nullptr;
  const void* stack_bottom = nullptr;
  size_t stack_size = 0;
};

// Prepares `fiber` to run entry(arg) on `stack` when first switched to. The stack's top is lowered by
// `stagger` bytes: fibers whose stacks start at different cache sets do not evict each other.
void fiber_prepare(FiberContext& fiber, FiberStack& stack, size_t stagger, FiberEntry entry, void* arg);
// Saves the running context into `from` and continues `to`.
void fiber_switch(FiberContext& from, FiberContext& to);
// The same for a fiber that will never run again (its stack may be reused at once).
[[noreturn]] void fiber_exit_to(FiberContext& from, FiberContext& to);
// Called first thing in a fiber's entry: completes the switch that started it.
void fiber_started(FiberContext& from);

// Stacks reused across blocks and launches; grows to the largest block seen.
class StackPool {
 public:
  explicit StackPool(size_t stack_bytes) : stack_bytes_(stack_bytes) {}
  ~StackPool();
  FiberStack& at(size_t i);  // the i-th stack, created on first use

 private:
  size_t stack_bytes_;
  std::vector<FiberStack*> stacks_;
};

}  // namespace ppo::emu
