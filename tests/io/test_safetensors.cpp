// safetensors: write/read round trips for every engine dtype, F16 and I64 loading, dtype
// conversion on load, every layout check on corrupt files (each error names the file and the
// tensor), atomic writes, and sharded checkpoints through model.safetensors.index.json.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>  // access
#include <vector>
#include "engine/dtype.h"
#include "engine/error.h"
#include "helpers.h"
#include "io/safetensors.h"
#include "temp_files.h"

using namespace ppo;
using namespace ppo::io;
using nlohmann::json;
using test::contains;
using test::error_of;
using test::temp_dir;

namespace {

// A file laid out by hand: 8-byte header length, header text, data bytes.
std::string raw_file(const std::string& path, const std::string& header, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  return path;
}

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Host tensors of every engine dtype with awkward shapes and seeded random values.
struct Sample {
  std::vector<float> f32 = test::randn(7 * 24, 1);
  std::vector<bf16> b16;
  std::vector<int32_t> i32 = test::randint(37, 2, -1000, 50000);
  std::vector<double> f64;
  Sample() {
    for (float x : test::randn(3 * 5 * 2, 3)) b16.push_back(bf16_from_f32(x));
    for (float x : test::randn(11, 4)) f64.push_back(double(x) / 3.0);
  }
  std::vector<NamedTensor> named() {
    return {{"w.f32", Tensor(f32.data(), DType::F32, DeviceKind::CPU, {7, 24})},
            {"w.bf16", Tensor(b16.data(), DType::BF16, DeviceKind::CPU, {3, 5, 2})},
            {"ids", Tensor(i32.data(), DType::I32, DeviceKind::CPU, {37})},
            {"x.f64", Tensor(f64.data(), DType::F64, DeviceKind::CPU, {1, 11})}};
  }
};

}  // namespace

TEST_CASE("write then read gives back every dtype, shape, byte and the metadata") {
  const std::string dir = temp_dir(), path = dir + "/model.safetensors";
  Sample s;
  write_safetensors(path, s.named(), {{"format", "pt"}, {"note", "seeded"}});
  CHECK(::access((path + ".tmp").c_str(), F_OK) != 0);  // renamed away

  const std::vector<uint8_t> file = read_all(path);
  uint64_t header_bytes;
  std::memcpy(&header_bytes, file.data(), 8);
  CHECK((8 + header_bytes) % 8 == 0);  // data buffer aligned

  SafetensorsFile f(path);
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "seeded"}});
  CHECK(f.entries().size() == 4);
  for (NamedTensor& t : s.named()) {
    INFO(t.name);
    HostTensor h = f.load(t.name);
    CHECK(h.dtype == t.tensor.dtype);
    CHECK(h.shape == std::vector<int64_t>(t.tensor.shape, t.tensor.shape + t.tensor.ndim));
    REQUIRE(h.bytes.size() == t.tensor.bytes());
    CHECK(std::memcmp(h.bytes.data(), t.tensor.data, h.bytes.size()) == 0);
    CHECK(h.view().shape_str() == t.tensor.shape_str());
  }
  CHECK(f.entry("w.bf16").dtype == "BF16");
  CHECK(contains(error_of([&] { f.load("missing"); }), path + ": no tensor 'missing'"));

  // Writing again replaces the file atomically.
  std::vector<NamedTensor> one = {s.named()[2]};
  write_safetensors(path, one);
  CHECK(SafetensorsFile(path).entries().size() == 1);
}

TEST_CASE("F16 loads as exact f32, I64 as range-checked i32, floats convert on request") {
  const std::string dir = temp_dir();
  // 1, -2, 65504 (max half), 2^-24 (smallest subnormal), 0x3555, -0, +inf, NaN
  const std::vector<uint16_t> half = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555, 0x8000, 0x7C00, 0x7E00};
  const std::vector<int64_t> ids = {0, 151643, -5, 2147483647};
  std::vector<uint8_t> data = bytes_of(half);
  const std::vector<uint8_t> id_bytes = bytes_of(ids);
  data.insert(data.end(), id_bytes.begin(), id_bytes.end());
  const std::string header = json{{"h", {{"dtype", "F16"}, {"shape", {2, 4}}, {"data_offsets", {0, 16}}}},
                                  {"ids", {{"dtype", "I64"}, {"shape", {4}}, {"data_offsets", {16, 48}}}},
                                  {"__metadata__", {{"format", "pt"}}}}.dump();
  const std::string path = raw_file(dir + "/half.safetensors", header, data);
  SafetensorsFile f(path);

  HostTensor h = f.load("h");
  REQUIRE(h.dtype == DType::F32);
  const float* v = reinterpret_cast<const float*>(h.bytes.data());
  CHECK(v[0] == 1.0f);
  CHECK(v[1] == -2.0f);
  CHECK(v[2] == 65504.0f);
  CHECK(v[3] == std::ldexp(1.0f, -24));
  CHECK(v[4] == 0.333251953125f);
  CHECK((v[5] == 0.0f && std::signbit(v[5])));
  CHECK((std::isinf(v[6]) && v[6] > 0));
  CHECK(std::isnan(v[7]));

  HostTensor hb = f.load("h", DType::BF16);
  CHECK(reinterpret_cast<const bf16*>(hb.bytes.data())[4].bits == bf16_from_f32(0.333251953125f).bits);

  HostTensor i = f.load("ids");
  REQUIRE(i.dtype == DType::I32);
  CHECK(std::vector<int32_t>(reinterpret_cast<const int32_t*>(i.bytes.data()),
                             reinterpret_cast<const int32_t*>(i.bytes.data()) + 4) ==
        std::vector<int32_t>{0, 151643, -5, 2147483647});
  CHECK(contains(error_of([&] { f.load("ids", DType::F32); }), "tensor 'ids': cannot load I64 as f32"));
  CHECK(contains(error_of([&] { f.load("h", DType::I32); }), "tensor 'h': cannot load F16 as i32"));

  const std::vector<int64_t> big = {1, int64_t(1) << 40};
  const std::string big_path = raw_file(dir + "/big.safetensors",
                                        json{{"ids", {{"dtype", "I64"}, {"shape", {2}}, {"data_offsets", {0, 16}}}}}.dump(),
                                        bytes_of(big));
  const std::string msg = error_of([&] { SafetensorsFile(big_path).load("ids"); });
  CHECK(contains(msg, big_path));
  CHECK(contains(msg, "tensor 'ids': I64 value 1099511627776 at index 1 does not fit i32"));
}

TEST_CASE("corrupt files are errors naming the file and the tensor") {
  const std::string dir = temp_dir();
  Sample s;
  const std::string good = dir + "/good.safetensors";
  write_safetensors(good, s.named());
  const std::vector<uint8_t> bytes = read_all(good);

  auto write_bytes = [&](const std::string& name, const std::vector<uint8_t>& b) {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    return path;
  };
  auto check_error = [](const std::string& path, const std::vector<std::string>& parts) {
    const std::string msg = error_of([&] { SafetensorsFile f(path); });
    INFO("message: ", msg);
    CHECK(contains(msg, path));
    for (const std::string& p : parts) CHECK(contains(msg, p));
  };

  SUBCASE("shorter than the header length field") {
    check_error(write_bytes("tiny.safetensors", {1, 2, 3}), {"truncated file: 3 bytes"});
  }
  SUBCASE("header length past the end of the file") {
    std::vector<uint8_t> b = bytes;
    const uint64_t huge = uint64_t(1) << 40;
    std::memcpy(b.data(), &huge, 8);
    check_error(write_bytes("long_header.safetensors", b), {"header length 1099511627776 runs past the end"});
  }
  SUBCASE("truncated data buffer") {
    const std::vector<uint8_t> b(bytes.begin(), bytes.end() - 4);  // the last tensor loses 4 bytes
    check_error(write_bytes("truncated.safetensors", b), {"tensor 'x.f64'", "past the end of the data buffer"});
  }
  SUBCASE("bad JSON") {
    check_error(raw_file(dir + "/bad_json.safetensors", "{\"w\": {\"dtype\": ", {}), {"header: not valid JSON"});
  }
  const std::vector<uint8_t> data(24, 7);
  SUBCASE("offsets past the end") {
    const std::string h = json{{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                               {"b", {{"dtype", "F32"}, {"shape", {5}}, {"data_offsets", {8, 28}}}}}.dump();
    check_error(raw_file(dir + "/past.safetensors", h, data), {"tensor 'b'", "[8, 28)", "past the end"});
  }
  SUBCASE("overlapping tensors") {
    const std::string h = json{{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
                               {"b", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {8, 24}}}}}.dump();
    check_error(raw_file(dir + "/overlap.safetensors", h, data), {"tensor 'b'", "overlap"});
  }
  SUBCASE("a gap between tensors") {
    const std::string h = json{{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                               {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {16, 24}}}}}.dump();
    check_error(raw_file(dir + "/gap.safetensors", h, data), {"tensor 'b'", "gap"});
  }
  SUBCASE("bytes after the last tensor") {
    const std::string h = json{{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}}}.dump();
    check_error(raw_file(dir + "/excess.safetensors", h, data), {"cover 16 bytes of the 24-byte data buffer"});
  }
  SUBCASE("shape and dtype disagree with the byte count") {
    const std::string h = json{{"a", {{"dtype", "BF16"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}}}.dump();
    check_error(raw_file(dir + "/count.safetensors", h, data), {"tensor 'a'", "BF16 shape [2,3] needs 6 x 2 bytes", "hold 24"});
  }
  SUBCASE("unknown dtype") {
    const std::string h = json{{"a", {{"dtype", "F8_E4M3"}, {"shape", {24}}, {"data_offsets", {0, 24}}}}}.dump();
    check_error(raw_file(dir + "/dtype.safetensors", h, data), {"tensor 'a'", "unknown dtype 'F8_E4M3'"});
  }
  SUBCASE("negative dim") {
    const std::string h = json{{"a", {{"dtype", "F32"}, {"shape", {-2, 3}}, {"data_offsets", {0, 24}}}}}.dump();
    check_error(raw_file(dir + "/negative.safetensors", h, data), {"tensor 'a'", "shape [-2,3] holds a dim that is not a non-negative integer"});
  }
  SUBCASE("missing data_offsets") {
    const std::string h = json{{"a", {{"dtype", "F32"}, {"shape", {6}}}}}.dump();
    check_error(raw_file(dir + "/offsets.safetensors", h, data), {"tensor 'a'", "data_offsets"});
  }
}

TEST_CASE("writer errors name the path and tensor") {
  const std::string dir = temp_dir();
  Sample s;
  std::vector<NamedTensor> twice = {s.named()[0], s.named()[0]};
  CHECK(contains(error_of([&] { write_safetensors(dir + "/x.safetensors", twice); }), "tensor 'w.f32': written twice"));
  const std::string nowhere = dir + "/no/such/dir/x.safetensors";
  CHECK(contains(error_of([&] { write_safetensors(nowhere, s.named()); }), nowhere + ".tmp: cannot create"));
  std::vector<NamedTensor> on_gpu = {s.named()[0]};
  on_gpu[0].tensor.device = DeviceKind::CUDA;
  CHECK(contains(error_of([&] { write_safetensors(dir + "/x.safetensors", on_gpu); }), "must be on the cpu"));
}

TEST_CASE("a sharded checkpoint presents one combined view") {
  const std::string dir = temp_dir();
  Sample s;
  std::vector<NamedTensor> all = s.named();
  write_safetensors(dir + "/model-00001-of-00002.safetensors", {all[0], all[1]});
  write_safetensors(dir + "/model-00002-of-00002.safetensors", {all[2], all[3]});
  auto write_index = [&](const json& weight_map) {
    std::ofstream(dir + "/model.safetensors.index.json")
        << json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
  };
  json weight_map = {{"w.f32", "model-00001-of-00002.safetensors"}, {"w.bf16", "model-00001-of-00002.safetensors"},
                     {"ids", "model-00002-of-00002.safetensors"}, {"x.f64", "model-00002-of-00002.safetensors"}};
  write_index(weight_map);

  SafetensorsCheckpoint ckpt(dir);
  CHECK(ckpt.shard_count() == 2);
  CHECK(ckpt.names() == std::vector<std::string>{"ids", "w.bf16", "w.f32", "x.f64"});
  for (NamedTensor& t : all) {
    HostTensor h = ckpt.load(t.name);
    REQUIRE(h.bytes.size() == t.tensor.bytes());
    CHECK(std::memcmp(h.bytes.data(), t.tensor.data, h.bytes.size()) == 0);
  }
  CHECK(contains(ckpt.file_of("ids").path(), "model-00002-of-00002"));
  CHECK(contains(error_of([&] { ckpt.load("nope"); }), "model.safetensors.index.json: no tensor 'nope'"));

  // The index points a tensor at the wrong shard.
  weight_map["ids"] = "model-00001-of-00002.safetensors";
  write_index(weight_map);
  CHECK(contains(error_of([&] { SafetensorsCheckpoint c(dir); }),
                 "tensor 'ids' is mapped to model-00001-of-00002.safetensors, which does not hold it"));
  // A shard holds a tensor the index does not list.
  weight_map["ids"] = "model-00002-of-00002.safetensors";
  weight_map.erase("x.f64");
  write_index(weight_map);
  CHECK(contains(error_of([&] { SafetensorsCheckpoint c(dir); }), "tensor 'x.f64'"));
  // A missing shard file.
  weight_map["x.f64"] = "model-00003-of-00002.safetensors";
  write_index(weight_map);
  CHECK(contains(error_of([&] { SafetensorsCheckpoint c(dir); }), "model-00003-of-00002.safetensors: cannot open"));

  // A single file opens the same way, by file or by directory.
  const std::string single = temp_dir();
  write_safetensors(single + "/model.safetensors", all);
  CHECK(SafetensorsCheckpoint(single).names().size() == 4);
  CHECK(SafetensorsCheckpoint(single + "/model.safetensors").shard_count() == 1);
  CHECK(contains(error_of([&] { SafetensorsCheckpoint c(dir + "/empty_dir_missing"); }), "cannot open"));
}
