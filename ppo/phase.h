// The cost of one phase of a step: its wall time, and the device work it asked for (launches,
// synchronizations, copies, allocations: engine/device_memory.h, counted on the emulated device).
#pragma once
#include <chrono>
#include "engine/device_memory.h"
#include "kernels/backend.h"

namespace ppo {

struct PhaseCost {
  double seconds = 0;
  DeviceCounters work;
};

// Adds what `body` costs to `cost` (null: just runs it). The backend is synchronized before the
// clock starts and after body, so the time is the device's too; that closing synchronization is
// the measurement's own and is not counted as the phase's work.
template <class F>
void timed(Backend& be, PhaseCost* cost, F&& body) {
  if (!cost) return body();
  be.synchronize();
  const DeviceCounters before = cuda_counters();
  const auto start = std::chrono::steady_clock::now();
  body();
  const DeviceCounters after = cuda_counters();
  be.synchronize();
  cost->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  cost->work += after - before;
}

}  // namespace ppo
