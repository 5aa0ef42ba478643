// libFuzzer target: a Hugging Face config.json. A config that parses must read back as the same
// model from the config.json the engine writes for it (hf_config_json).
#include <cstdlib>
#include "engine/error.h"
#include "fuzz_input.h"
#include "io/hf_config.h"
#include "io/json_fields.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const ppo::io::HfModelConfig h =
        ppo::io::parse_hf_config(ppo::io::parse_json(ppo::fuzz::as_text(data, size), "config.json"), "config.json");
    const ppo::io::HfModelConfig back = ppo::io::parse_hf_config(ppo::io::hf_config_json(h.config, h.heads), "written");
    if (back.config.to_json() != h.config.to_json() || back.heads != h.heads) std::abort();
  } catch (const ppo::Error&) {
  }
  return 0;
}
