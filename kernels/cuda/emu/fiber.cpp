#include "kernels/cuda/emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if defined(__SANITIZE_ADDRESS__)
#define PPO_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PPO_EMU_ASAN 1
#endif
#endif
#if defined(PPO_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace ppo::emu {

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "emulated device: %s\n", what);
  std::abort();
}

// Announces a switch to ASan (a no-op otherwise). `to` is the stack about to run; a null
// `fake_stack_save` says the running fiber will never resume.
inline void asan_start_switch(void** fake_stack_save, const FiberContext& to) {
#if defined(PPO_EMU_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_save, to.stack_bottom, to.stack_size);
#else
  (void)fake_stack_save;
  (void)to;
#endif
}
inline void asan_finish_switch(void* fake_stack_save, FiberContext& previous) {
#if defined(PPO_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack_save, &previous.stack_bottom, &previous.stack_size);
#else
  (void)fake_stack_save;
  (void)previous;
#endif
}

}  // namespace

FiberStack::FiberStack(size_t bytes) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  size_ = (bytes + page - 1) / page * page;
  mapping_bytes_ = size_ + page;
  mapping_ = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping_ == MAP_FAILED) die("cannot map a fiber stack");
  if (mprotect(mapping_, page, PROT_NONE) != 0) die("cannot protect a fiber stack's guard page");
  bottom_ = static_cast<char*>(mapping_) + page;
}

FiberStack::~FiberStack() { munmap(mapping_, mapping_bytes_); }

StackPool::~StackPool() {
  for (FiberStack* s : stacks_) delete s;
}

FiberStack& StackPool::at(size_t i) {
  while (stacks_.size() <= i) stacks_.push_back(new FiberStack(stack_bytes_));
  return *stacks_[i];
}

#if defined(__x86_64__)

// ppo_emu_switch(save_sp, load_sp): pushes rbp, rbx, r12-r15, stores rsp in *save_sp, loads load_sp
// and pops the same frame from there. A new fiber's frame returns into ppo_emu_trampoline with r12 =
// arg and r13 = entry. The SSE/x87 control words are not switched: device code never changes them.
extern "C" void ppo_emu_switch(void** save_sp, void* load_sp);
extern "C" void ppo_emu_trampoline();
asm(R"(
  .text
  .globl ppo_emu_switch
  .type ppo_emu_switch, @function
ppo_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ppo_emu_switch, .-ppo_emu_switch

  .globl ppo_emu_trampoline
  .type ppo_emu_trampoline, @function
ppo_emu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size ppo_emu_trampoline, .-ppo_emu_trampoline
)");

void fiber_prepare(FiberContext& fiber, FiberStack& stack, size_t stagger, FiberEntry entry, void* arg) {
#if defined(PPO_EMU_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(stack.bottom(), stack.size());  // frames an abandoned fiber left poisoned
#endif
  const uintptr_t top =
      (reinterpret_cast<uintptr_t>(stack.bottom()) + stack.size() - stagger % stack.size()) & ~uintptr_t(15);
  uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 7;
  frame[0] = 0;                                                // r15
  frame[1] = 0;                                                // r14
  frame[2] = reinterpret_cast<uint64_t>(entry);                // r13
  frame[3] = reinterpret_cast<uint64_t>(arg);                  // r12
  frame[4] = 0;                                                // rbx
  frame[5] = 0;                                                // rbp
  frame[6] = reinterpret_cast<uint64_t>(&ppo_emu_trampoline);  // return address; rsp then 16-aligned
  fiber.sp = frame;
  fiber.stack_bottom = stack.bottom();
  fiber.stack_size = stack.size();
}

void fiber_switch(FiberContext& from, FiberContext& to) {
  asan_start_switch(&from.asan_fake_stack, to);
  ppo_emu_switch(&from.sp, to.sp);
  asan_finish_switch(from.asan_fake_stack, to);
}

void fiber_exit_to(FiberContext& from, FiberContext& to) {
  asan_start_switch(nullptr, to);
  ppo_emu_switch(&from.sp, to.sp);
  die("an exited fiber was resumed");
}

#else  // ucontext

namespace {
// makecontext passes int arguments only: the context's address travels as two halves.
void ucontext_entry(unsigned hi, unsigned lo) {
  const auto* f = reinterpret_cast<const FiberContext*>((uintptr_t(hi) << 32) | uintptr_t(lo));
  f->entry(f->arg);
  die("a fiber entry returned");
}
ucontext_t& uc(FiberContext& f) {
  if (!f.sp) f.sp = new ucontext_t();  // owned by the context for the process's lifetime
  return *static_cast<ucontext_t*>(f.sp);
}
}  // namespace

void fiber_prepare(FiberContext& fiber, FiberStack& stack, size_t stagger, FiberEntry entry, void* arg) {
#if defined(PPO_EMU_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(stack.bottom(), stack.size());
#endif
  ucontext_t& u = uc(fiber);
  getcontext(&u);
  u.uc_stack.ss_sp = stack.bottom();
  u.uc_stack.ss_size = stack.size() - stagger % stack.size();
  u.uc_link = nullptr;
  fiber.entry = entry;
  fiber.arg = arg;
  const uintptr_t self = reinterpret_cast<uintptr_t>(&fiber);
  makecontext(&u, reinterpret_cast<void (*)()>(ucontext_entry), 2, unsigned(self >> 32), unsigned(self));
  fiber.stack_bottom = stack.bottom();
  fiber.stack_size = stack.size();
}

void fiber_switch(FiberContext& from, FiberContext& to) {
  asan_start_switch(&from.asan_fake_stack, to);
  swapcontext(&uc(from), &uc(to));
  asan_finish_switch(from.asan_fake_stack, to);
}

void fiber_exit_to(FiberContext& from, FiberContext& to) {
  asan_start_switch(nullptr, to);
  swapcontext(&uc(from), &uc(to));
  die("an exited fiber was resumed");
}

#endif

void fiber_started(FiberContext& from) { asan_finish_switch(nullptr, from); }

}  // namespace ppo::emu
