// The smallest program that embeds the PPO trainer: a tiny GPT-2-shaped policy on the built-in
// demo task, a reward callback instead of a reward model, two PPO steps on the CPU.
#include <cstdio>
#include "engine/error.h"
#include "ppo/trainer.h"

int main() {
  try {
    ppo::PpoConfig cfg;
    cfg.device = ppo::DeviceChoice::CPU;
    cfg.policy = {{"arch", "gpt2"}, {"n_layer", 2}, {"n_head", 2}, {"d_model", 32}, {"d_ff", 64},
                  {"vocab_size", 44}, {"max_seq_len", 16}};
    cfg.rollout_batch_size = 8;
    cfg.prompt_length = 7;
    cfg.response_length = 6;
    cfg.micro_batch_size = 4;
    cfg.ppo_epochs = 2;
    cfg.derive();

    ppo::TrainerOptions options;
    // Score: how many response tokens differ from the last prompt token (any C++ works here).
    options.reward = [](const std::vector<int32_t>& prompt, const std::vector<int32_t>& response, const std::string&) {
      double score = 0;
      for (int32_t id : response) score += id != prompt.back() ? 0.1 : -0.1;
      return score;
    };
    ppo::PpoTrainer trainer(cfg, options);
    for (int i = 0; i < 2; ++i) {
      const ppo::MetricsRow row = trainer.step();
      std::printf("step %d: score %.4f  kl %.5f  policy loss %.5f  %.3f s\n", i + 1, row.get(ppo::metric::kScores),
                  row.get(ppo::metric::kKl), row.get(ppo::metric::kPolicyLoss), row.get(ppo::metric::kStepSeconds));
      if (row.get(ppo::metric::kSkipped) != 0) return 1;
    }
    return 0;
  } catch (const ppo::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
