#include "ppo/demo_task.h"

#include <algorithm>
#include <sstream>
#include "engine/error.h"
#include "engine/philox.h"

namespace ppo {

namespace {

// Independent Philox streams per use, each indexed by the prompt index.
enum class Stream : uint64_t { Prompt = 1, Demonstration = 2, Preference = 3, PreferenceResponse = 4 };
uint64_t stream_id(Stream s, uint64_t index) { return (uint64_t(s) << 56) ^ index; }

// Successive uniform draws from one Philox stream.
class Draws {
 public:
  Draws(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}
  double uniform() { return uniform_from_bits(philox_draw(seed_, stream_, offset_++).v[0]); }
  int32_t below(int32_t n) { return std::min(n - 1, int32_t(uniform() * n)); }  // in [0, n)

 private:
  uint64_t seed_, stream_, offset_ = 0;
};

constexpr int32_t kFirstWord = 4;
constexpr int32_t kFirstFiller = kFirstWord + 2 * DemoTask::kPairs;

}  // namespace

const std::vector<std::string>& DemoTask::vocabulary() {
  static const std::vector<std::string> v = {
      "<pad>", "<bos>", "<eos>", "=>",
      "hot", "cold", "up", "down", "big", "small", "fast", "slow", "day", "night", "yes", "no",
      "in", "out", "left", "right", "open", "shut", "old", "new", "high", "low", "wet", "dry",
      "win", "lose", "push", "pull", "full", "empty", "light", "dark",
      "the", "a", "and", "so", "um", "very", "not", "maybe"};
  return v;
}

int32_t DemoTask::antonym(int32_t word) {
  PPO_ASSERT(word >= kFirstWord && word < kFirstFiller, "demo task: token ", word, " is not a word with an antonym");
  return kFirstWord + ((word - kFirstWord) ^ 1);
}

std::vector<int32_t> DemoTask::prompt(uint64_t index) const {
  Draws d(seed_, stream_id(Stream::Prompt, index));
  const int32_t k = kMinWords + d.below(kMaxWords - kMinWords + 1);
  std::vector<int32_t> p{kBos};
  for (int32_t i = 0; i < k; ++i) p.push_back(kFirstWord + d.below(2 * kPairs));
  p.push_back(kSep);
  return p;
}

std::vector<int32_t> DemoTask::prompt_words(const std::vector<int32_t>& prompt) {
  PPO_ASSERT(prompt.size() >= 3 && prompt.front() == kBos && prompt.back() == kSep,
             "demo task: prompt '", decode(prompt), "' is not <bos> words =>");
  std::vector<int32_t> words(prompt.begin() + 1, prompt.end() - 1);
  for (int32_t w : words)
    PPO_ASSERT(w >= kFirstWord && w < kFirstFiller, "demo task: prompt '", decode(prompt), "' holds a non-word");
  return words;
}

std::vector<int32_t> DemoTask::ideal_response(const std::vector<int32_t>& prompt) {
  std::vector<int32_t> r;
  for (int32_t w : prompt_words(prompt)) r.push_back(antonym(w));
  r.push_back(kEos);
  return r;
}

std::vector<int32_t> DemoTask::noisy_response(const std::vector<int32_t>& prompt, double error_rate, uint64_t stream,
                                              uint64_t index) const {
  Draws d(seed_, stream_id(Stream(stream), index));
  std::vector<int32_t> r;
  for (int32_t w : prompt_words(prompt)) {
    if (d.uniform() >= error_rate) r.push_back(antonym(w));
    else if (d.uniform() < 0.5) r.push_back(w);  // the echo mistake
    else r.push_back(kFirstWord + d.below(2 * kPairs));
  }
  if (d.uniform() < error_rate / 2) r.push_back(kFirstFiller + d.below(kFillers));  // chatty tail
  if (d.uniform() >= error_rate / 3) r.push_back(kEos);                             // else: never stops
  return r;
}

std::vector<int32_t> DemoTask::demonstration(uint64_t index) const {
  return noisy_response(prompt(index), kDemoErrorRate, uint64_t(Stream::Demonstration), index);
}

PreferencePair DemoTask::preference_pair(uint64_t index, double label_noise) const {
  PPO_ASSERT(label_noise >= 0 && label_noise <= 0.5, "demo task: label_noise ", label_noise, " must lie in [0, 0.5]");
  PreferencePair pair;
  pair.prompt = prompt(index);
  Draws d(seed_, stream_id(Stream::Preference, index));
  // Two responses of independent noise levels in [0, 0.8]; redraw until their gold rewards differ
  // (the ideal response breaks a long tie).
  constexpr int kAttempts = 32;
  std::vector<int32_t> a, b;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const uint64_t sub = index * 2 * kAttempts + 2 * uint64_t(attempt);
    a = noisy_response(pair.prompt, 0.8 * d.uniform(), uint64_t(Stream::PreferenceResponse), sub);
    b = noisy_response(pair.prompt, 0.8 * d.uniform(), uint64_t(Stream::PreferenceResponse), sub + 1);
    if (gold_reward(pair.prompt, a) != gold_reward(pair.prompt, b)) break;
  }
  if (gold_reward(pair.prompt, a) == gold_reward(pair.prompt, b)) {  // a long tie: ideal vs ideal without EOS
    a = ideal_response(pair.prompt);
    b = std::vector<int32_t>(a.begin(), a.end() - 1);
  }
  if (gold_reward(pair.prompt, a) < gold_reward(pair.prompt, b)) std::swap(a, b);
  pair.flipped = d.uniform() < label_noise;
  if (pair.flipped) std::swap(a, b);
  pair.chosen = std::move(a);
  pair.rejected = std::move(b);
  pair.gold_chosen = gold_reward(pair.prompt, pair.chosen);
  pair.gold_rejected = gold_reward(pair.prompt, pair.rejected);
  return pair;
}

double DemoTask::gold_reward(const std::vector<int32_t>& prompt, const std::vector<int32_t>& response) {
  const std::vector<int32_t> words = prompt_words(prompt);
  const auto eos = std::find(response.begin(), response.end(), kEos);
  const std::vector<int32_t> body(response.begin(), eos);
  const size_t k = words.size();
  int correct = 0;
  for (size_t i = 0; i < std::min(k, body.size()); ++i) correct += body[i] == antonym(words[i]);
  const double extra = double(body.size() > k ? body.size() - k : 0);
  const double gold = double(correct) / double(k) - 0.1 * extra - (eos == response.end() ? 0.5 : 0.0);
  return std::clamp(gold, -1.0, 1.0);
}

std::string DemoTask::decode(const std::vector<int32_t>& ids) {
  const auto& v = vocabulary();
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += ids[i] >= 0 && ids[i] < int32_t(v.size()) ? v[size_t(ids[i])] : "<unk:" + std::to_string(ids[i]) + ">";
  }
  return out;
}

std::vector<int32_t> DemoTask::encode(const std::string& text) {
  const auto& v = vocabulary();
  std::istringstream in(text);
  std::vector<int32_t> ids;
  for (std::string w; in >> w;) {
    const auto it = std::find(v.begin(), v.end(), w);
    PPO_ASSERT(it != v.end(), "demo task: '", w, "' is not in the vocabulary");
    ids.push_back(int32_t(it - v.begin()));
  }
  return ids;
}

}  // namespace ppo
