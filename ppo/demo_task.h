// The built-in synthetic language task of `ppo train` (no downloads): "answer with the opposites".
//
//   prompt    <bos> hot up old =>                 (2..5 words, each from 16 antonym pairs)
//   ideal     cold down new <eos>                 (the antonym of each word, in order, then EOS)
//
// The hidden GOLD reward of (prompt, response), with k prompt words and `body` the response up to
// its first EOS:
//   gold = correct / k - 0.1 * extra - 0.5 * [no EOS],   clamped to [-1, 1]
// where correct counts positions i < k with body[i] == antonym(word_i) and extra = max(0, |body| - k).
// The ideal response scores 1. A tiny transformer can learn it (a position-wise lookup), yet it is
// not trivial: order, length and stopping all count.
//
// Demonstrations for SFT are mediocre on purpose (each word wrong with probability 0.3 — half the
// time echoed instead of opposed — a filler word sometimes tacked on, EOS sometimes missing), so an
// SFT policy scores about 0.6 and PPO has room to raise it. Preference pairs for reward-model
// training compare two responses of different noise levels, labelled by the gold reward with a
// configurable label-noise rate (Bradley-Terry data).
//
// Everything is a pure function of (seed, index): prompt i of a run is the same after a resume.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ppo {

struct PreferencePair {
  std::vector<int32_t> prompt, chosen, rejected;  // responses end with EOS unless truncated by noise
  double gold_chosen = 0, gold_rejected = 0;      // gold_chosen < gold_rejected when the label was flipped
  bool flipped = false;
};

class DemoTask {
 public:
  static constexpr int32_t kPad = 0, kBos = 1, kEos = 2, kSep = 3;
  static constexpr int kPairs = 16, kFillers = 8;
  static constexpr int kMinWords = 2, kMaxWords = 5;
  static constexpr double kDemoErrorRate = 0.3;

  explicit DemoTask(uint64_t seed) : seed_(seed) {}

  static int32_t vocab_size() { return 4 + 2 * kPairs + kFillers; }  // 44
  static int64_t max_prompt_length() { return kMaxWords + 2; }       // <bos> words =>
  static int64_t ideal_max_response_length() { return kMaxWords + 1; }  // antonyms <eos>
  static int32_t antonym(int32_t word);  // word ids are 4 .. 4+2*kPairs-1; pairs (4,5), (6,7), ...

  // The index-th prompt of the stream: <bos> w_1 .. w_k =>
  std::vector<int32_t> prompt(uint64_t index) const;
  // The words of a prompt (between <bos> and =>); errors name what is malformed.
  static std::vector<int32_t> prompt_words(const std::vector<int32_t>& prompt);
  static std::vector<int32_t> ideal_response(const std::vector<int32_t>& prompt);
  // A response with each word wrong with probability error_rate (see above); `stream` and `index`
  // pick the random draws.
  std::vector<int32_t> noisy_response(const std::vector<int32_t>& prompt, double error_rate, uint64_t stream,
                                      uint64_t index) const;
  // The SFT demonstration for prompt(index): noisy_response at kDemoErrorRate.
  std::vector<int32_t> demonstration(uint64_t index) const;
  // Two responses to prompt(index) with different gold rewards; the higher one is `chosen` except
  // with probability label_noise, when the label is flipped.
  PreferencePair preference_pair(uint64_t index, double label_noise) const;
  // The hidden reward above. Tokens after the first EOS (padding) are ignored.
  static double gold_reward(const std::vector<int32_t>& prompt, const std::vector<int32_t>& response);

  // "<bos> hot up =>", words separated by spaces; ids outside the vocabulary print as <unk:id>.
  static std::string decode(const std::vector<int32_t>& ids);
  static std::vector<int32_t> encode(const std::string& text);  // the inverse of decode; unknown words are errors
  static const std::vector<std::string>& vocabulary();

 private:
  uint64_t seed_;
};

}  // namespace ppo
