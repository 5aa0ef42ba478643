#include "io/safetensors.h"

#include <filesystem>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include "io/json_fields.h"

namespace ppo::io {
namespace {

using nlohmann::json;

// The largest header the format allows (the reference implementation's limit).
constexpr uint64_t kMaxHeaderBytes = 100000000;

// Bytes per element of the file dtypes this reader accepts.
size_t file_dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

bool is_float_dtype(const std::string& dtype) { return dtype[0] == 'F' || dtype == "BF16"; }

const char* file_dtype_of(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::F64: return "F64";
  }
  return "?";
}

// IEEE binary16 -> binary32, exact (every half is a float): sign, 5-bit exponent (bias 15),
// 10-bit mantissa; subnormals are mantissa * 2^-24.
float f32_from_f16(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = float(mantissa) * (1.0f / 16777216.0f);
    return f32_from_bits(sign | f32_bits(magnitude));
  }
  if (exponent == 31) return f32_from_bits(sign | 0x7f800000u | (mantissa << 13));
  return f32_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

template <class T>
T read_le(const uint8_t* p) {  // the engine runs on little-endian hosts only
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

double read_float(const std::string& dtype, const uint8_t* p) {
  if (dtype == "F32") return read_le<float>(p);
  if (dtype == "F64") return read_le<double>(p);
  if (dtype == "BF16") return f32_from_bf16(bf16{read_le<uint16_t>(p)});
  return f32_from_f16(read_le<uint16_t>(p));  // F16
}

std::string errno_text() { return std::strerror(errno); }

std::string directory_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// Parses and checks one header entry; `where` names the file and tensor.
SafetensorsEntry parse_entry(const json& value, const std::string& where) {
  if (!value.is_object()) PPO_FAIL(where, ": header entry is not an object");
  SafetensorsEntry e;
  auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) PPO_FAIL(where, ": missing string 'dtype'");
  e.dtype = dtype->get<std::string>();
  const size_t elem = file_dtype_size(e.dtype);
  if (elem == 0) PPO_FAIL(where, ": unknown dtype '", e.dtype, "' (supported: F32, BF16, F16, F64, I32, I64)");
  auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) PPO_FAIL(where, ": missing array 'shape'");
  uint64_t numel = 1;
  for (const json& d : *shape) {
    if (!d.is_number_unsigned()) PPO_FAIL(where, ": shape ", excerpt(*shape), " holds a dim that is not a non-negative integer");
    const uint64_t dim = d.get<uint64_t>();
    if (__builtin_mul_overflow(numel, dim, &numel) || dim > uint64_t(INT64_MAX))
      PPO_FAIL(where, ": shape ", excerpt(*shape), " overflows");
    e.shape.push_back(int64_t(dim));
  }
  auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
    PPO_FAIL(where, ": 'data_offsets' must be [begin, end] (non-negative integers)");
  e.begin = (*offsets)[0].get<size_t>();
  e.end = (*offsets)[1].get<size_t>();
  if (e.end < e.begin) PPO_FAIL(where, ": data_offsets [", e.begin, ", ", e.end, ") end before begin");
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t(elem), &bytes) || bytes != e.end - e.begin)
    PPO_FAIL(where, ": ", e.dtype, " shape ", excerpt(*shape), " needs ", numel, " x ", elem,
             " bytes but data_offsets [", e.begin, ", ", e.end, ") hold ", e.end - e.begin);
  return e;
}

}  // namespace

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor HostTensor::view() {
  PPO_ASSERT(shape.size() <= 4, "tensor '", name, "' has ", shape.size(), " dims; views hold at most 4");
  Tensor t;
  t.data = bytes.data();
  t.dtype = dtype;
  t.device = DeviceKind::CPU;
  t.name = name.c_str();
  if (shape.empty()) {
    t.ndim = 1;
    t.shape[0] = 1;
  }
  for (int64_t d : shape) t.shape[t.ndim++] = d;
  return t;
}

void check_finite(const HostTensor& t, const std::string& file) {
  const size_t n = size_t(t.numel());
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = t.bytes.data() + i * dtype_size(t.dtype);
    const double v = t.dtype == DType::F32  ? read_le<float>(p)
                     : t.dtype == DType::BF16 ? f32_from_bf16(bf16{read_le<uint16_t>(p)})
                     : t.dtype == DType::F64  ? read_le<double>(p)
                                              : 0.0;
    if (!std::isfinite(v)) PPO_FAIL(file, ": tensor '", t.name, "' holds ", v, " at index ", i, " (weights must be finite)");
  }
}

DType default_engine_dtype(const std::string& file_dtype) {
  if (file_dtype == "BF16") return DType::BF16;
  if (file_dtype == "F64") return DType::F64;
  if (file_dtype == "I32" || file_dtype == "I64") return DType::I32;
  if (file_dtype == "F32" || file_dtype == "F16") return DType::F32;
  PPO_FAIL("unknown safetensors dtype '", file_dtype, "'");
}

// ---- reading ------------------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) PPO_FAIL(path, ": cannot open: ", errno_text());
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    PPO_FAIL(path, ": cannot stat: ", errno_text());
  }
  file_bytes_ = size_t(st.st_size);
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    PPO_FAIL(path, ": not a regular file");
  }
  if (file_bytes_ < 8) {
    ::close(fd);
    PPO_FAIL(path, ": truncated file: ", file_bytes_, " bytes, fewer than the 8-byte header length");
  }
  map_ = ::mmap(nullptr, file_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    PPO_FAIL(path, ": mmap failed: ", errno_text());
  }
  try {
    const uint8_t* bytes = static_cast<const uint8_t*>(map_);
    const uint64_t header_bytes = read_le<uint64_t>(bytes);
    if (header_bytes > file_bytes_ - 8)
      PPO_FAIL(path, ": header length ", header_bytes, " runs past the end of the file (", file_bytes_, " bytes)");
    if (header_bytes > kMaxHeaderBytes)
      PPO_FAIL(path, ": header length ", header_bytes, " exceeds the format's limit of ", kMaxHeaderBytes, " bytes");
    buffer_ = bytes + 8 + header_bytes;
    const size_t buffer_bytes = file_bytes_ - 8 - size_t(header_bytes);

    const json header = parse_json({reinterpret_cast<const char*>(bytes + 8), size_t(header_bytes)}, path + ": header");
    if (!header.is_object()) PPO_FAIL(path, ": header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) PPO_FAIL(path, ": __metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) PPO_FAIL(path, ": __metadata__ value '", m.key(), "' is not a string");
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      entries_[it.key()] = parse_entry(*it, path + ": tensor '" + it.key() + "'");
    }

    // The byte ranges, sorted, must tile the data buffer exactly: no gap, no overlap, no excess.
    std::vector<std::pair<const std::string*, const SafetensorsEntry*>> order;
    for (const auto& [name, e] : entries_) order.push_back({&name, &e});
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return std::make_pair(a.second->begin, a.second->end) < std::make_pair(b.second->begin, b.second->end);
    });
    size_t covered = 0;
    for (const auto& [name, e] : order) {
      if (e->end > buffer_bytes)
        PPO_FAIL(path, ": tensor '", *name, "': data_offsets [", e->begin, ", ", e->end,
                 ") run past the end of the data buffer (", buffer_bytes, " bytes): truncated file?");
      if (e->begin < covered)
        PPO_FAIL(path, ": tensor '", *name, "': data_offsets [", e->begin, ", ", e->end,
                 ") overlap the previous tensor, which ends at ", covered);
      if (e->begin > covered)
        PPO_FAIL(path, ": tensor '", *name, "': data_offsets [", e->begin, ", ", e->end,
                 ") leave a gap: the previous tensor ends at ", covered);
      covered = e->end;
    }
    if (covered != buffer_bytes)
      PPO_FAIL(path, ": the tensors cover ", covered, " bytes of the ", buffer_bytes, "-byte data buffer");
  } catch (...) {
    ::munmap(map_, file_bytes_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, file_bytes_);
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) PPO_FAIL(path_, ": no tensor '", name, "'");
  return it->second;
}

const uint8_t* SafetensorsFile::data(const std::string& name) const { return buffer_ + entry(name).begin; }

HostTensor SafetensorsFile::load(const std::string& name) const {
  return load(name, default_engine_dtype(entry(name).dtype));
}

HostTensor SafetensorsFile::load(const std::string& name, DType dtype) const {
  const SafetensorsEntry& e = entry(name);
  HostTensor out;
  out.name = name;
  out.dtype = dtype;
  out.shape = e.shape;
  const size_t n = size_t(out.numel());
  out.bytes.resize(n * dtype_size(dtype));
  const uint8_t* src = buffer_ + e.begin;
  const size_t src_elem = file_dtype_size(e.dtype);
  const std::string where = path_ + ": tensor '" + name + "'";

  if (n == 0) {  // no bytes to copy (memcpy's pointers may not be null even then)
  } else if (file_dtype_of(dtype) == e.dtype) {  // stored as wanted
    std::memcpy(out.bytes.data(), src, out.bytes.size());
  } else if (dtype == DType::I32) {
    if (e.dtype != "I64") PPO_FAIL(where, ": cannot load ", e.dtype, " as i32");
    int32_t* dst = reinterpret_cast<int32_t*>(out.bytes.data());
    for (size_t i = 0; i < n; ++i) {
      const int64_t v = read_le<int64_t>(src + i * 8);
      if (v < INT32_MIN || v > INT32_MAX) PPO_FAIL(where, ": I64 value ", v, " at index ", i, " does not fit i32");
      dst[i] = int32_t(v);
    }
  } else {
    if (!is_float_dtype(e.dtype)) PPO_FAIL(where, ": cannot load ", e.dtype, " as ", dtype_name(dtype));
    for (size_t i = 0; i < n; ++i) {
      const double v = read_float(e.dtype, src + i * src_elem);
      uint8_t* dst = out.bytes.data() + i * dtype_size(dtype);
      if (dtype == DType::F32) {
        const float f = float(v);
        std::memcpy(dst, &f, 4);
      } else if (dtype == DType::BF16) {
        const bf16 h = bf16_from_f32(float(v));
        std::memcpy(dst, &h, 2);
      } else {
        std::memcpy(dst, &v, 8);
      }
    }
  }
  return out;
}

// ---- sharded checkpoints ------------------------------------------------------------------------

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) {
  std::string file = path;
  if (std::filesystem::is_directory(path)) {
    file = path + "/model.safetensors.index.json";
    if (!std::filesystem::is_regular_file(file)) file = path + "/model.safetensors";
    if (!std::filesystem::is_regular_file(file))
      PPO_FAIL(path, ": holds neither model.safetensors.index.json nor model.safetensors");
  }
  where_ = file;
  if (std::filesystem::path(file).extension() != ".json") {
    shards_.push_back(std::make_unique<SafetensorsFile>(file));
    for (const auto& [name, e] : shards_[0]->entries()) shard_of_[name] = 0;
    return;
  }

  const json index = read_json_file(file);
  auto weight_map = index.find("weight_map");
  if (!index.is_object() || weight_map == index.end() || !weight_map->is_object())
    PPO_FAIL(file, ": missing object 'weight_map'");
  std::map<std::string, size_t> shard_index;  // shard file name -> position in shards_
  for (auto it = weight_map->begin(); it != weight_map->end(); ++it) {
    if (!it->is_string()) PPO_FAIL(file, ": weight_map entry '", it.key(), "' is not a file name");
    const std::string shard = it->get<std::string>();
    auto [pos, added] = shard_index.try_emplace(shard, shards_.size());
    if (added) shards_.push_back(std::make_unique<SafetensorsFile>(directory_of(file) + "/" + shard));
    if (!shards_[pos->second]->contains(it.key()))
      PPO_FAIL(file, ": tensor '", it.key(), "' is mapped to ", shard, ", which does not hold it");
    shard_of_[it.key()] = pos->second;
  }
  for (size_t s = 0; s < shards_.size(); ++s)
    for (const auto& [name, e] : shards_[s]->entries()) {
      auto it = shard_of_.find(name);
      if (it == shard_of_.end() || it->second != s)
        PPO_FAIL(file, ": tensor '", name, "' in ", shards_[s]->path(), " is not mapped to that shard by the weight_map");
    }
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, shard] : shard_of_) out.push_back(name);
  return out;
}

const SafetensorsFile& SafetensorsCheckpoint::file_of(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) PPO_FAIL(where_, ": no tensor '", name, "'");
  return *shards_[it->second];
}

// ---- writing ------------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const NamedTensor& t : tensors) {
    const std::string where = path + ": tensor '" + t.name + "'";
    if (t.name.empty() || t.name == "__metadata__") PPO_FAIL(where, ": invalid tensor name");
    if (header.contains(t.name)) PPO_FAIL(where, ": written twice");
    if (t.tensor.device != DeviceKind::CPU) PPO_FAIL(where, ": must be on the cpu to be written");
    if (t.tensor.empty() && t.tensor.numel() != 0) PPO_FAIL(where, ": has no data");
    std::vector<int64_t> shape(t.tensor.shape, t.tensor.shape + t.tensor.ndim);
    header[t.name] = {{"dtype", file_dtype_of(t.tensor.dtype)},
                      {"shape", shape},
                      {"data_offsets", {offset, offset + t.tensor.bytes()}}};
    offset += t.tensor.bytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data buffer starts 8-byte aligned
  const uint64_t header_bytes = text.size();

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) PPO_FAIL(tmp, ": cannot create: ", errno_text());
  auto write_all = [&](const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        const std::string reason = errno_text();
        ::close(fd);
        ::unlink(tmp.c_str());
        PPO_FAIL(tmp, ": write failed: ", reason);
      }
      p += w;
      n -= size_t(w);
    }
  };
  write_all(&header_bytes, 8);
  write_all(text.data(), text.size());
  for (const NamedTensor& t : tensors) write_all(t.tensor.data, t.tensor.bytes());
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp.c_str());
    PPO_FAIL(tmp, ": fsync/close failed: ", reason);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp.c_str());
    PPO_FAIL(path, ": rename from ", tmp, " failed: ", reason);
  }
  // Make the rename itself durable.
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace ppo::io
