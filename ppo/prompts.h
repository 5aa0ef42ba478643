// The prompt stream of a PPO run (step 1 of the step): the built-in demo task, token-id prompts,
// or a JSONL prompt set encoded with a tokenizer.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ppo {

// Item `index` of a stream over n items walked in a Philox permutation per pass (pass = index / n,
// stream `stream` + pass): a pure function of (n, seed, stream, index).
uint64_t shuffled_index(uint64_t index, uint64_t n, uint64_t seed, uint64_t stream);

// Where prompts come from. Prompt i of the run is prompt(i); a finite set of N prompts is walked
// in a Philox permutation per pass (epoch = i / N), so the order is a pure function of (seed, i).
class PromptSource {
 public:
  // The built-in "answer with the opposites" task (ppo/demo_task.h); enables objective/gold_scores.
  static PromptSource demo_task(uint64_t seed);
  // Token-id prompts (each non-empty); `decode` renders ids for reward callbacks (optional).
  static PromptSource token_ids(std::vector<std::vector<int32_t>> prompts,
                                std::function<std::string(const std::vector<int32_t>&)> decode = {});
  // JSONL prompts (io/jsonl.h load_prompts) encoded with a tokenizer (io/tokenizer.h Tokenizer::load).
  static PromptSource jsonl(const std::string& prompts_path, const std::string& tokenizer_path);

  // The index-th prompt of the stream (shuffled per pass for a finite set).
  std::vector<int32_t> prompt(uint64_t index) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // Number of distinct prompts; 0 for an unbounded stream (the demo task).
  int64_t size() const { return int64_t(prompts_.size()); }
  bool is_demo_task() const { return demo_; }
  // Checks every prompt of a finite set against the run: non-empty, at most prompt_length tokens,
  // ids in [0, vocab_size). Errors name the prompt's index.
  void validate(int64_t prompt_length, int64_t vocab_size) const;

 private:
  bool demo_ = false;
  uint64_t seed_ = 0;
  std::vector<std::vector<int32_t>> prompts_;
  std::function<std::string(const std::vector<int32_t>&)> decode_;
};

}  // namespace ppo
