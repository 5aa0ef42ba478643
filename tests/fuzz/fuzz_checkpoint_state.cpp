// libFuzzer target: the state.json of a training checkpoint (steps, data position, KL controller,
// score moments, shapes), resumed by a trainer of the demo's models (the `ppo train` smoke run's
// shapes, corpus/checkpoint_state/) whose model files were saved once at start.
#include "engine/error.h"
#include "fuzz_input.h"
#include "ppo/demo_pipeline.h"
#include "ppo/trainer.h"

namespace {

struct Resumable {
  ppo::PpoTrainer trainer;
  std::string step_dir;
  static ppo::PpoConfig config() {
    ppo::PpoConfig c = ppo::demo_ppo_config();
    c.device = ppo::DeviceChoice::CPU;
    c.rollout_batch_size = 16;
    c.micro_batch_size = 8;
    c.output_dir = ppo::fuzz::scratch_dir() + "/out";
    c.derive();
    return c;
  }
  static ppo::TrainerOptions options() {
    ppo::TrainerOptions o;
    o.print_plan = false;
    return o;
  }
  Resumable() : trainer(config(), options()) {
    trainer.save_checkpoint(ppo::fuzz::scratch_dir() + "/run");
    step_dir = ppo::fuzz::scratch_dir() + "/run/step_0";
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Resumable r;
  ppo::fuzz::write_file("run/step_0/state.json", ppo::fuzz::as_text(data, size));
  try {
    r.trainer.load_checkpoint(r.step_dir);
  } catch (const ppo::Error&) {
  }
  return 0;
}
