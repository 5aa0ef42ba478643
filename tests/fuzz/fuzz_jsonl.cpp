// libFuzzer target: a JSONL dataset, read as prompts, as preference pairs and as SFT pairs.
#include "engine/error.h"
#include "fuzz_input.h"
#include "io/jsonl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ppo::fuzz::write_file("data.jsonl", ppo::fuzz::as_text(data, size));
  try {
    ppo::io::load_prompts(path);
  } catch (const ppo::Error&) {
  }
  try {
    ppo::io::load_preference_pairs(path);
  } catch (const ppo::Error&) {
  }
  try {
    ppo::io::load_sft_pairs(path);
  } catch (const ppo::Error&) {
  }
  return 0;
}
