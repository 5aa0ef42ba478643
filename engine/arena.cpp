#include "engine/arena.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include "engine/device_memory.h"

namespace ppo {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Always: return "always";
    case Phase::Rollout: return "rollout";
    case Phase::Train: return "train";
  }
  return "?";
}

std::string format_bytes(size_t n) {
  char buf[64];
  const double x = double(n);
  if (x >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", x / (1024.0 * 1024 * 1024));
  else if (x >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.2f MiB", x / (1024.0 * 1024));
  else if (x >= 1024.0) std::snprintf(buf, sizeof buf, "%.2f KiB", x / 1024.0);
  else std::snprintf(buf, sizeof buf, "%zu B", n);
  return buf;
}

ArenaPlan ArenaPlan::make(const std::vector<RegionSpec>& specs) {
  ArenaPlan plan;
  auto end_of = [](size_t offset, const RegionSpec& s) {
    return checked_add(offset, align_up(s.bytes), "arena plan, region " + s.owner + "/" + s.name);
  };
  size_t always_end = 0;
  for (const RegionSpec& s : specs) {
    if (s.phase != Phase::Always) continue;
    plan.regions.push_back({s, always_end});
    always_end = end_of(always_end, s);
  }
  size_t phase_end[3] = {0, always_end, always_end};  // indexed by Phase
  for (const RegionSpec& s : specs) {
    if (s.phase == Phase::Always) continue;
    size_t& end = phase_end[int(s.phase)];
    plan.regions.push_back({s, end});
    end = end_of(end, s);
  }
  plan.total_bytes = std::max(phase_end[int(Phase::Rollout)], phase_end[int(Phase::Train)]);
  for (size_t i = 0; i < plan.regions.size(); ++i)
    for (size_t j = i + 1; j < plan.regions.size(); ++j) {
      const RegionSpec &a = plan.regions[i].spec, &b = plan.regions[j].spec;
      PPO_ASSERT(a.owner != b.owner || a.name != b.name, "arena plan lists region ", a.owner, "/",
                 a.name, " twice");
    }
  return plan;
}

const Region* ArenaPlan::find(const std::string& owner, const std::string& name) const {
  for (const Region& r : regions)
    if (r.spec.owner == owner && r.spec.name == name) return &r;
  return nullptr;
}

bool ArenaPlan::overlaps(const Region& a, const Region& b) const {
  const size_t a_end = a.offset + a.spec.bytes, b_end = b.offset + b.spec.bytes;
  return a.offset < b_end && b.offset < a_end && a.spec.bytes > 0 && b.spec.bytes > 0;
}

std::string ArenaPlan::table(std::optional<size_t> capacity) const {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-10s %-14s %-8s %14s %14s\n", "owner", "region", "phase", "bytes", "size");
  out += line;
  std::map<std::string, size_t> per_owner;
  std::vector<std::string> owner_order;
  for (const Region& r : regions) {
    std::snprintf(line, sizeof line, "%-10s %-14s %-8s %14zu %14s\n", r.spec.owner.c_str(),
                  r.spec.name.c_str(), phase_name(r.spec.phase), r.spec.bytes,
                  format_bytes(r.spec.bytes).c_str());
    out += line;
    if (!per_owner.count(r.spec.owner)) owner_order.push_back(r.spec.owner);
    per_owner[r.spec.owner] += r.spec.bytes;
  }
  out += "per owner (sum of its regions; rollout and train regions share bytes in the arena):\n";
  for (const std::string& o : owner_order) {
    std::snprintf(line, sizeof line, "  %-10s %14zu %14s\n", o.c_str(), per_owner[o], format_bytes(per_owner[o]).c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "arena total %14zu %14s\n", total_bytes, format_bytes(total_bytes).c_str());
  out += line;
  if (capacity) {
    if (*capacity >= total_bytes)
      std::snprintf(line, sizeof line, "device capacity %s, free after arena %s\n",
                    format_bytes(*capacity).c_str(), format_bytes(*capacity - total_bytes).c_str());
    else
      std::snprintf(line, sizeof line, "device capacity %s, SHORTFALL %zu bytes (%s)\n",
                    format_bytes(*capacity).c_str(), total_bytes - *capacity,
                    format_bytes(total_bytes - *capacity).c_str());
    out += line;
  }
  return out;
}

size_t TensorSpec::bytes() const {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n = checked_mul(n, size_t(d), "tensor '" + name + "'");
  return n;
}

size_t packed_bytes(const std::vector<TensorSpec>& tensors) {
  size_t n = 0;
  for (const TensorSpec& t : tensors) n = checked_add(n, align_up(t.bytes()), "tensor '" + t.name + "'");
  return n;
}

Carver::Carver(void* base, size_t capacity, DeviceKind device, std::string what)
    : base_(static_cast<char*>(base)), capacity_(capacity), device_(device), what_(std::move(what)) {}

Tensor Carver::take(DType dtype, std::initializer_list<int64_t> dims, const char* name) {
  Tensor t(nullptr, dtype, device_, dims, name);
  const size_t need = align_up(t.bytes());
  PPO_ASSERT(used_ + need <= capacity_, "region ", what_, " is too small for tensor '", name, "' ",
             t.shape_str(), ": ", used_, " of ", capacity_, " bytes used, ", need, " more needed");
  t.data = base_ + used_;
  used_ += need;
  return t;
}

Tensor Carver::take(const TensorSpec& spec, const char* name) {
  PPO_ASSERT(!spec.shape.empty() && spec.shape.size() <= 4, "tensor '", name, "' must have 1 to 4 dims");
  int64_t d[4] = {1, 1, 1, 1};
  for (size_t i = 0; i < spec.shape.size(); ++i) d[i] = spec.shape[i];
  Tensor t = take(spec.dtype, {d[0] * d[1] * d[2] * d[3]}, name);
  t.ndim = int(spec.shape.size());
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = spec.shape[size_t(i)];
  return t;
}

void Carver::rewind(size_t mark) {
  PPO_ASSERT(mark <= used_, "scratch rewind past the fill level of ", what_);
  used_ = mark;
}

void check_fits(const ArenaPlan& plan, DeviceKind device, size_t capacity) {
  if (plan.total_bytes > capacity)
    PPO_FAIL("the ", device_name(device), " device is too small for this run (", device == DeviceKind::CPU ?
             "available host memory" : "free device memory", "); arena plan:\n", plan.table(capacity));
}

Arena::Arena(ArenaPlan plan, DeviceKind device, size_t device_capacity)
    : plan_(std::move(plan)), device_(device) {
  check_fits(plan_, device, device_capacity);
  try {
    base_ = device_alloc(device, std::max<size_t>(plan_.total_bytes, kArenaAlignment));
  } catch (const Error& e) {
    PPO_FAIL("allocating the ", device_name(device), " arena failed (", e.what(), "); arena plan:\n",
             plan_.table(device_capacity));
  }
}

Arena::~Arena() {
  if (base_) device_free(device_, base_);
}

Carver Arena::carver(const std::string& owner, const std::string& name) const {
  const Region* r = plan_.find(owner, name);
  PPO_ASSERT(r != nullptr, "the arena plan has no region ", owner, "/", name);
  return Carver(static_cast<char*>(base_) + r->offset, r->spec.bytes, device_, owner + "/" + name);
}

}  // namespace ppo
