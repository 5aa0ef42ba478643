// libFuzzer target: a .safetensors file (header length, JSON header, tensor table, data buffer).
// A file that opens loads every tensor in its own dtype (checked for NaN/Inf) and as f32.
#include "engine/error.h"
#include "fuzz_input.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ppo::fuzz::write_file("model.safetensors", ppo::fuzz::as_text(data, size));
  try {
    const ppo::io::SafetensorsFile f(path);
    for (const auto& [name, entry] : f.entries()) {
      try {
        ppo::io::HostTensor t = f.load(name);
        if (entry.shape.size() <= 4) t.view();
        ppo::io::check_finite(t, path);
        f.load(name, ppo::DType::F32);
      } catch (const ppo::Error&) {
      }
    }
  } catch (const ppo::Error&) {
  }
  return 0;
}
