// safetensors read/write (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end)},
// "__metadata__": {string: string}}, then the data buffer; offsets are relative to the buffer.
//
// Reading memory-maps the file and validates the whole layout once, on open: every failure is a
// ppo::Error naming the file and, where there is one, the tensor. Tensors come out in the
// engine's dtypes: F32 -> f32, BF16 -> bf16, F16 -> f32, F64 -> f64, I32/I64 -> i32 (range
// checked), or converted to any float dtype on request (load(name, DType)).
// Writing is atomic: path.tmp is written, fsync'ed, then renamed over path.
// Sharded checkpoints (model.safetensors.index.json with a weight_map) open as one view.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "engine/tensor.h"

namespace ppo::io {

// One tensor as the file stores it.
struct SafetensorsEntry {
  std::string dtype;           // the file's dtype string: "F32", "BF16", "F16", "F64", "I32", "I64"
  std::vector<int64_t> shape;  // any rank, including 0 (a scalar)
  size_t begin = 0, end = 0;   // byte range inside the data buffer
};

// A tensor owned in host memory, in an engine dtype.
struct HostTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
  // A CPU view of the bytes (1 to 4 dims; a scalar shows as [1]). Valid while this object lives.
  Tensor view();
};

// Fails, naming `file`, the tensor and the index, when a float tensor holds NaN or Inf.
void check_finite(const HostTensor& t, const std::string& file);

// The engine dtype a file dtype loads as by default.
DType default_engine_dtype(const std::string& file_dtype);

// One memory-mapped, validated .safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  // Raw stored bytes of one tensor (little-endian, as in the file).
  const uint8_t* data(const std::string& name) const;

  // The tensor in its default engine dtype.
  HostTensor load(const std::string& name) const;
  // The tensor converted to `dtype`: float file dtypes to F32/BF16/F64, int file dtypes to I32.
  HostTensor load(const std::string& name, DType dtype) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t file_bytes_ = 0;
  const uint8_t* buffer_ = nullptr;  // start of the data buffer inside the mapping
  std::map<std::string, std::string> metadata_;
  std::map<std::string, SafetensorsEntry> entries_;
};

// A checkpoint: one .safetensors file, or the shards listed by a model.safetensors.index.json.
// `path` is a .safetensors file, an index .json, or a directory holding
// model.safetensors.index.json or model.safetensors.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& path);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return shard_of_.count(name) != 0; }
  const SafetensorsFile& file_of(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const { return file_of(name).entry(name); }
  HostTensor load(const std::string& name) const { return file_of(name).load(name); }
  HostTensor load(const std::string& name, DType dtype) const { return file_of(name).load(name, dtype); }
  size_t shard_count() const { return shards_.size(); }

 private:
  std::string where_;  // the file the names come from, for error messages
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> shard_of_;
};

// A named CPU tensor to write.
struct NamedTensor {
  std::string name;
  Tensor tensor;  // CPU, contiguous; F32, BF16, I32 or F64
};

// Writes `tensors` (unique names) and `metadata` to `path` atomically.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace ppo::io
