// libFuzzer target: a run config as `ppo train` and `ppo plan` read it. The input is the config
// file's text, then (after a NUL byte) one --set key=value per line. A config that loads is
// planned (every region's bytes) for the CPU and the GPU precision.
#include <vector>
#include "engine/error.h"
#include "fuzz_input.h"
#include "ppo/demo_pipeline.h"
#include "ppo/trainer.h"

namespace {

void plan(const ppo::PpoConfig& c) {
  for (ppo::Precision p : {ppo::Precision::F32, ppo::Precision::BF16}) ppo::ArenaPlan::make(ppo::run_regions(c, p)).table();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [file, sets] = ppo::fuzz::split_at_nul(ppo::fuzz::as_text(data, size));
  const std::string path = ppo::fuzz::write_file("run.json", file);
  std::vector<std::string> overrides;
  for (size_t begin = 0; begin < sets.size();) {
    const size_t end = std::min(sets.find('\n', begin), sets.size());
    if (end > begin) overrides.emplace_back(sets.substr(begin, end - begin));
    begin = end + 1;
  }
  try {
    plan(ppo::load_demo_config(path, overrides).ppo);  // ppo train
  } catch (const ppo::Error&) {
  }
  try {
    plan(ppo::load_config(path, overrides));  // ppo plan, ppo train on real models
  } catch (const ppo::Error&) {
  }
  return 0;
}
