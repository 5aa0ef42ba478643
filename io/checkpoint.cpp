#include "io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include "engine/device_memory.h"
#include "engine/error.h"
#include "io/hf_checkpoint.h"
#include "io/json_fields.h"
#include "io/safetensors.h"

namespace ppo::io {
namespace fs = std::filesystem;
namespace {

// fsync of a directory, so that renames inside it survive a crash.
void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  PPO_ASSERT(fd >= 0, dir, ": cannot open the directory to fsync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  PPO_ASSERT(rc == 0, dir, ": fsync failed: ", std::strerror(errno));
}

// Writes `text` to `path` and fsyncs it (no rename: callers write inside a temporary directory,
// or rename themselves).
void write_synced(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  PPO_ASSERT(fd >= 0, path, ": cannot create: ", std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const std::string reason = std::strerror(errno);
      ::close(fd);
      PPO_FAIL(path, ": write failed: ", reason);
    }
    done += size_t(w);
  }
  const bool ok = ::fsync(fd) == 0;
  PPO_ASSERT(::close(fd) == 0 && ok, path, ": fsync/close failed: ", std::strerror(errno));
}

std::string read_text(const std::string& path) {
  std::ifstream in = open_input_file(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// run_dir/latest = "<name>\n", atomically (temporary file, rename).
void point_latest(const std::string& run_dir, const std::string& name) {
  write_synced(run_dir + "/latest.tmp", name + "\n");
  std::error_code ec;
  fs::rename(run_dir + "/latest.tmp", run_dir + "/latest", ec);
  PPO_ASSERT(!ec, run_dir, "/latest: rename failed: ", ec.message());
  sync_directory(run_dir);
}

// A host copy of a tensor's bytes (any device) that a safetensors writer can take.
struct HostCopy {
  std::string name;
  std::vector<uint8_t> bytes;
  Tensor view;
};

HostCopy host_copy(const std::string& name, const Tensor& t) {
  HostCopy h{name, std::vector<uint8_t>(t.bytes()), t};
  copy_bytes(h.bytes.data(), DeviceKind::CPU, t.data, t.device, t.bytes());
  h.view.data = h.bytes.data();
  h.view.device = DeviceKind::CPU;
  return h;
}

// The training-state regions a trained model's file holds, "<region>.<parameter>" each.
constexpr const char* kStateRegions[] = {"master", "adam_m", "adam_v"};

// Host copies of one model's tensors as its file names them, in file order: per parameter its
// weight ("weight.<name>", whole on every rank), then when trained its master weight (where there is
// one) and AdamW moments, cut from each region's shards gathered from every rank onto rank 0 (a
// collective: every rank calls it; only rank 0's copies hold the training state).
std::vector<HostCopy> model_copies(Transformer& m) {
  const bool trained = m.spec().training == Training::Trained;
  std::map<std::string, std::pair<std::vector<uint8_t>, DType>> whole;  // region -> the layout (rank 0)
  for (const char* region : kStateRegions) {
    const Tensor shard = trained ? m.state_shard(region) : Tensor{};
    if (shard.empty()) continue;
    const HostCopy mine = host_copy(region, shard);
    whole[region] = {m.ranks().host_gather_to_root(mine.bytes.data(), mine.bytes.size()), shard.dtype};
  }
  std::vector<HostCopy> out;
  if (!m.ranks().is_root()) return out;
  for (const std::string& n : m.parameter_names()) {
    const Tensor w = m.parameter(n);
    out.push_back(host_copy("weight." + n, w));
    for (const auto& [region, layout] : whole) {
      const size_t size = dtype_size(layout.second), first = size_t(m.parameter_offset(n)) * size;
      HostCopy h{
          region + "." + n,
          std::vector<uint8_t>(layout.first.begin() + first, layout.first.begin() + first + size_t(w.numel()) * size),
          w};
      h.view.data = h.bytes.data();
      h.view.dtype = layout.second;
      h.view.device = DeviceKind::CPU;
      out.push_back(std::move(h));
    }
  }
  return out;
}

// Every rank calls it; rank 0 writes the file.
void save_model(const std::string& path, Transformer& m) {
  const std::vector<HostCopy> copies = model_copies(m);
  if (!m.ranks().is_root()) return;
  std::vector<NamedTensor> tensors;
  for (const HostCopy& c : copies) tensors.push_back({c.name, c.view});
  write_safetensors(path, tensors, {{"config", m.config().to_json().dump()}, {"heads", heads_name(m.spec().heads)}});
}

std::string metadata(const SafetensorsFile& f, const char* key) {
  auto it = f.metadata().find(key);
  PPO_ASSERT(it != f.metadata().end(), f.path(), ": metadata '", key, "' missing");
  return it->second;
}

ModelConfig config_of(const SafetensorsFile& f) {
  const std::string where = f.path() + ": metadata 'config'";
  return ModelConfig::from_json(parse_json(metadata(f, "config"), where), where);
}

// Every tensor of a model file is "<kind>.<parameter>" (kind: weight, master, adam_m, adam_v) of a
// parameter of `spec`, with that parameter's shape; every parameter has its weight.
void check_tensor_table(const SafetensorsFile& f, const ModelSpec& spec) {
  const std::vector<TensorSpec> params = parameter_specs(spec, DType::F32);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorSpec& p : params)
    for (const char* kind : {"weight.", "master.", "adam_m.", "adam_v."}) shapes[kind + p.name] = p.shape;
  for (const auto& [name, e] : f.entries()) {
    auto it = shapes.find(name);
    PPO_ASSERT(it != shapes.end(), f.path(), ": unexpected tensor '", name, "' (no parameter of the model in its metadata 'config')");
    PPO_ASSERT(e.shape == it->second, f.path(), ": tensor '", name, "' has shape ", nlohmann::json(e.shape).dump(),
               ", its metadata 'config' needs ", nlohmann::json(it->second).dump());
  }
  for (const TensorSpec& p : params) PPO_ASSERT(f.contains("weight." + p.name), f.path(), ": missing tensor 'weight.", p.name, "'");
}

std::string model_file(const std::string& step_dir, const std::string& owner) {
  const std::string path = step_dir + "/" + owner + ".safetensors";
  PPO_ASSERT(fs::exists(path), path, ": missing (no checkpoint of model '", owner, "')");
  return path;
}

// Every rank reads the file: the weights whole, the training state's part in its shard.
void load_model(const std::string& path, Transformer& m) {
  const SafetensorsFile f(path);
  auto meta = [&](const char* key) { return metadata(f, key); };
  const ModelConfig config = config_of(f);
  PPO_ASSERT(config.to_json() == m.config().to_json(), path, ": the checkpoint's config ", config.to_json().dump(),
             " is not model '", m.owner(), "''s ", m.config().to_json().dump());
  PPO_ASSERT(heads_from_name(meta("heads"), path + ": metadata 'heads'") == m.spec().heads, path, ": heads '",
             meta("heads"), "' differ from model '", m.owner(), "''s '", heads_name(m.spec().heads), "'");
  const bool trained = m.spec().training == Training::Trained;
  size_t expected = 0;
  // `name` from the file into `t`, checked; elements [first, first + t.numel()) of it
  auto load_into = [&](const std::string& name, const Tensor& whole, const Tensor& t, int64_t first) {
    PPO_ASSERT(f.contains(name), path, ": missing tensor '", name, "'");
    const SafetensorsEntry& e = f.entry(name);
    PPO_ASSERT(e.shape == std::vector<int64_t>(whole.shape, whole.shape + whole.ndim), path, ": tensor '", name,
               "' has the wrong shape for ", whole.shape_str());
    PPO_ASSERT(default_engine_dtype(e.dtype) == t.dtype, path, ": tensor '", name, "' has dtype ", e.dtype,
               ", the model needs ", dtype_name(t.dtype), " (resume with the precision that saved it)");
    ++expected;
    if (t.empty()) return;  // another rank's part
    HostTensor h = f.load(name);
    check_finite(h, path);
    const Tensor part(h.bytes.data() + size_t(first) * dtype_size(t.dtype), t.dtype, DeviceKind::CPU, {t.numel()},
                      t.name);
    copy_tensor(t, part);
  };
  for (const std::string& n : m.parameter_names()) {
    const Tensor w = m.parameter(n);
    load_into("weight." + n, w, w, 0);
    for (const char* region : kStateRegions) {
      const Tensor shard = trained ? m.state_shard(region) : Tensor{};
      if (shard.empty()) continue;
      Transformer::StateSlice s = m.state_slice(region, n);
      if (s.view.empty()) s.view.dtype = shard.dtype;  // none of it here: checked, not loaded
      load_into(std::string(region) + "." + n, w, s.view, s.first);
    }
  }
  PPO_ASSERT(f.entries().size() == expected, path, ": holds ", f.entries().size(), " tensors, model '", m.owner(),
             "' has ", expected);
}

}  // namespace

const char* heads_name(Heads heads) {
  switch (heads) {
    case Heads::LM: return "lm";
    case Heads::Scalar: return "scalar";
    case Heads::LMAndScalar: return "lm+scalar";
  }
  return "?";
}

Heads heads_from_name(const std::string& name, const std::string& where) {
  for (Heads h : {Heads::LM, Heads::Scalar, Heads::LMAndScalar})
    if (name == heads_name(h)) return h;
  PPO_FAIL(where, ": '", name, "' is not lm, scalar or lm+scalar");
}

void save_checkpoint(const std::string& run_dir, int64_t step, const std::map<std::string, Transformer*>& models,
                     const nlohmann::json& state) {
  PPO_ASSERT(step >= 0, run_dir, ": checkpoint step ", step, " must be >= 0");
  PPO_ASSERT(!models.empty(), run_dir, ": a checkpoint of no models");
  // Every rank gathers its shards to rank 0, which writes; the others wait until it is complete.
  Communicator& ranks = models.begin()->second->ranks();
  if (!ranks.is_root()) {
    for (const auto& entry : models) save_model("", *entry.second);
    ranks.barrier();
    return;
  }
  const std::string name = "step_" + std::to_string(step), final_dir = run_dir + "/" + name;
  const std::string tmp = run_dir + "/.tmp_" + name;
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  PPO_ASSERT(!ec, run_dir, ": cannot create: ", ec.message());
  // Leftovers of an interrupted save are never what `latest` names: remove them.
  for (const auto& entry : fs::directory_iterator(run_dir))
    if (entry.path().filename().string().rfind(".tmp_", 0) == 0) fs::remove_all(entry.path());
  if (fs::exists(final_dir)) {
    // A step directory that `latest` does not name is the orphan of a save interrupted before
    // `latest` moved (a resumed run reaches this step again): replace it.
    const bool is_latest = fs::exists(run_dir + "/latest") && read_text(run_dir + "/latest") == name + "\n";
    PPO_ASSERT(!is_latest, final_dir, ": already saved and named by ", run_dir, "/latest");
    fs::remove_all(final_dir);
  }
  fs::create_directory(tmp, ec);
  PPO_ASSERT(!ec, tmp, ": cannot create: ", ec.message());
  for (const auto& [owner, model] : models) {
    PPO_ASSERT(model != nullptr, run_dir, ": model '", owner, "' is null");
    save_model(tmp + "/" + owner + ".safetensors", *model);
  }
  write_synced(tmp + "/state.json", state.dump(1) + "\n");
  sync_directory(tmp);
  fs::rename(tmp, final_dir, ec);
  PPO_ASSERT(!ec, final_dir, ": rename from ", tmp, " failed: ", ec.message());
  sync_directory(run_dir);
  point_latest(run_dir, name);
  ranks.barrier();
}

void check_no_checkpoints(const std::string& run_dir, const std::string& who) {
  PPO_ASSERT(!fs::exists(run_dir + "/latest"), who, ": ", run_dir, " already holds checkpoints of a run (",
             run_dir, "/latest); resume it (resume=", run_dir, "), or choose another output_dir, or remove them");
}

bool is_step_dir_of(const std::string& run_dir, const std::string& step_dir) {
  std::error_code ec;
  const fs::path step = fs::weakly_canonical(step_dir, ec);
  return !ec && fs::equivalent(step.parent_path(), run_dir, ec) && !ec;
}

void rewind_latest(const std::string& run_dir, const std::string& step_dir) {
  if (!is_step_dir_of(run_dir, step_dir)) return;
  const std::string name = fs::weakly_canonical(step_dir).filename().string();
  if (fs::exists(run_dir + "/latest") && read_text(run_dir + "/latest") == name + "\n") return;
  point_latest(run_dir, name);
}

std::string checkpoint_step_dir(const std::string& path) {
  if (fs::exists(path + "/state.json")) return path;
  const std::string latest = path + "/latest";
  PPO_ASSERT(fs::exists(latest), path, ": neither a checkpoint step directory (state.json) nor a run directory (latest)");
  std::string name = read_text(latest);
  PPO_ASSERT(!name.empty() && name.back() == '\n' && name.rfind("step_", 0) == 0 && name.find('/') == std::string::npos,
             latest, ": corrupt (expected 'step_<n>' and a newline, got '", name, "')");
  name.pop_back();
  const std::string dir = path + "/" + name;
  PPO_ASSERT(fs::exists(dir + "/state.json"), latest, ": names ", dir, ", which holds no state.json");
  return dir;
}

nlohmann::json load_checkpoint(const std::string& path, const std::map<std::string, Transformer*>& models) {
  const std::string dir = checkpoint_step_dir(path);
  const nlohmann::json state = read_json_file(dir + "/state.json");
  for (const auto& [owner, model] : models) {
    PPO_ASSERT(model != nullptr, dir, ": model '", owner, "' is null");
    load_model(model_file(dir, owner), *model);
  }
  return state;
}

Heads checkpoint_heads(const std::string& checkpoint, const std::string& owner) {
  const SafetensorsFile f(model_file(checkpoint_step_dir(checkpoint), owner));
  return heads_from_name(metadata(f, "heads"), f.path() + ": metadata 'heads'");
}

void export_checkpoint_to_hf(const std::string& checkpoint, const std::string& owner, const std::string& out_dir,
                             Heads heads, int64_t pad_token_id) {
  const SafetensorsFile f(model_file(checkpoint_step_dir(checkpoint), owner));
  const Heads saved = heads_from_name(metadata(f, "heads"), f.path() + ": metadata 'heads'");
  PPO_ASSERT(heads != Heads::LMAndScalar && (saved == heads || saved == Heads::LMAndScalar), f.path(), ": model '",
             owner, "' has heads '", heads_name(saved), "'; it cannot be exported as '", heads_name(heads), "'");
  const ModelConfig config = config_of(f);
  check_tensor_table(f, ModelSpec{config, saved, Training::Frozen, Generation::None});
  write_hf_checkpoint(out_dir, config, heads, [&](const std::string& name) {
    HostTensor t = f.load(f.contains("master." + name) ? "master." + name : "weight." + name, DType::F32);
    check_finite(t, f.path());
    const float* p = reinterpret_cast<const float*>(t.bytes.data());
    return std::vector<float>(p, p + t.numel());
  }, pad_token_id);
}

}  // namespace ppo::io
