#include "ppo/prompts.h"

#include <memory>
#include "engine/error.h"
#include "engine/philox.h"
#include "io/jsonl.h"
#include "io/tokenizer.h"
#include "ppo/demo_task.h"

namespace ppo {

namespace {
constexpr uint64_t kPromptStream = uint64_t(1) << 41;  // Philox streams of the per-pass prompt order
}  // namespace

PromptSource PromptSource::demo_task(uint64_t seed) {
  PromptSource s;
  s.demo_ = true;
  s.seed_ = seed;
  s.decode_ = [](const std::vector<int32_t>& ids) { return DemoTask::decode(ids); };
  return s;
}

PromptSource PromptSource::token_ids(std::vector<std::vector<int32_t>> prompts,
                                     std::function<std::string(const std::vector<int32_t>&)> decode) {
  PPO_ASSERT(!prompts.empty(), "prompt source: the prompt set is empty");
  PromptSource s;
  s.prompts_ = std::move(prompts);
  s.decode_ = std::move(decode);
  return s;
}

PromptSource PromptSource::jsonl(const std::string& prompts_path, const std::string& tokenizer_path) {
  auto tokenizer = std::make_shared<io::Tokenizer>(io::Tokenizer::load(tokenizer_path));
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& text : io::load_prompts(prompts_path)) ids.push_back(tokenizer->encode(text));
  for (size_t i = 0; i < ids.size(); ++i)
    PPO_ASSERT(!ids[i].empty(), prompts_path, ": prompt ", i, " encodes to no tokens");
  return token_ids(std::move(ids), [tokenizer](const std::vector<int32_t>& v) { return tokenizer->decode(v); });
}

uint64_t shuffled_index(uint64_t index, uint64_t n, uint64_t seed, uint64_t stream) {
  // recomputed per call (data sets are small next to a step's work)
  const std::vector<int32_t> order = philox_permutation(int64_t(n), seed, stream + index / n);
  return uint64_t(order[size_t(index % n)]);
}

std::vector<int32_t> PromptSource::prompt(uint64_t index) const {
  if (demo_) return DemoTask(seed_).prompt(index);
  return prompts_[size_t(shuffled_index(index, prompts_.size(), seed_, kPromptStream))];
}

std::string PromptSource::decode(const std::vector<int32_t>& ids) const { return decode_ ? decode_(ids) : std::string(); }

void PromptSource::validate(int64_t prompt_length, int64_t vocab_size) const {
  if (demo_) {
    PPO_ASSERT(prompt_length >= DemoTask::max_prompt_length(), "demo task: prompt_length = ", prompt_length,
               " is shorter than its longest prompt (", DemoTask::max_prompt_length(), " tokens)");
    PPO_ASSERT(vocab_size >= DemoTask::vocab_size(), "demo task: the policy's vocab_size ", vocab_size,
               " is smaller than the task's ", DemoTask::vocab_size());
    return;
  }
  for (size_t i = 0; i < prompts_.size(); ++i) {
    const std::vector<int32_t>& p = prompts_[i];
    PPO_ASSERT(!p.empty(), "prompt ", i, " is empty");
    PPO_ASSERT(int64_t(p.size()) <= prompt_length, "prompt ", i, " has ", p.size(), " tokens, more than prompt_length = ",
               prompt_length);
    for (size_t k = 0; k < p.size(); ++k)
      PPO_ASSERT(p[k] >= 0 && p[k] < vocab_size, "prompt ", i, ": token id ", p[k], " at index ", k,
                 " is outside the vocabulary [0,", vocab_size, ")");
  }
}

}  // namespace ppo
