// One memory arena per device. A plan lists every region (owner, name, bytes, lifetime); the
// arena is one allocation carved by that plan. Regions live either for the whole run (Always) or
// only in one phase of the PPO step; Rollout-only and Train-only regions share the same bytes.
//
//   [ Always regions ............ ][ Rollout regions ....... ]
//                                 [ Train regions ............. ]
//   total = always + max(rollout, train), every offset 256-byte aligned.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>
#include "engine/tensor.h"

namespace ppo {

constexpr size_t kArenaAlignment = 256;
inline size_t align_up(size_t n, size_t a = kArenaAlignment) { return checked_add(n, a - 1, "align_up") / a * a; }

enum class Phase : uint8_t { Always, Rollout, Train };
const char* phase_name(Phase p);

struct RegionSpec {
  std::string owner;  // "policy", "reference", "reward", "value", "run"
  std::string name;   // "weights", "master", "grads", "adam_m", "adam_v", "activations", "kv_cache", "scratch", ...
  size_t bytes = 0;
  Phase phase = Phase::Always;
};

struct Region {
  RegionSpec spec;
  size_t offset = 0;  // from the arena base, 256-byte aligned
};

struct ArenaPlan {
  std::vector<Region> regions;
  size_t total_bytes = 0;

  static ArenaPlan make(const std::vector<RegionSpec>& specs);
  const Region* find(const std::string& owner, const std::string& name) const;
  // Human-readable table: one row per region, subtotals per owner, the total, and when
  // `capacity` is given, the free bytes or the shortfall.
  std::string table(std::optional<size_t> capacity = std::nullopt) const;
  bool overlaps(const Region& a, const Region& b) const;
};

std::string format_bytes(size_t n);  // "1.50 MiB"

// A tensor to be carved out of a region: the planner sizes regions with packed_bytes() and the
// owner carves them with Carver, so a plan's bytes equal what is used.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t bytes() const;
};
size_t packed_bytes(const std::vector<TensorSpec>& tensors);

// Bump allocator over one region: each take() is 256-byte aligned.
class Carver {
 public:
  Carver(void* base, size_t capacity, DeviceKind device, std::string what);
  Tensor take(DType dtype, std::initializer_list<int64_t> dims, const char* name);
  Tensor take(const TensorSpec& spec, const char* name);
  size_t used() const { return used_; }
  size_t capacity() const { return capacity_; }
  // LIFO scratch use: remember the fill level, take, then rewind to it.
  size_t mark() const { return used_; }
  void rewind(size_t mark);

 private:
  char* base_;
  size_t capacity_;
  size_t used_ = 0;
  DeviceKind device_;
  std::string what_;
};

// Fails, before any work, with the plan table and the shortfall when `capacity` bytes of `device`
// cannot hold the plan.
void check_fits(const ArenaPlan& plan, DeviceKind device, size_t capacity);

// Owns the one allocation of a device. Construction fails (check_fits) when the device cannot hold
// the plan.
class Arena {
 public:
  Arena(ArenaPlan plan, DeviceKind device, size_t device_capacity);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  const ArenaPlan& plan() const { return plan_; }
  DeviceKind device() const { return device_; }
  // A carver over region (owner, name); throws if the plan has no such region.
  Carver carver(const std::string& owner, const std::string& name) const;
  void* base() const { return base_; }

 private:
  ArenaPlan plan_;
  DeviceKind device_;
  void* base_ = nullptr;
};

}  // namespace ppo
