// Byte-level BPE tokenizer (GPT-2, Qwen2/3, Llama 3 style), loaded from a Hugging Face
// tokenizer.json or from GPT-2's encoder.json + vocab.bpe.
//
// encode(text):
//   1. added tokens (special or not) are split out first, leftmost-longest match;
//   2. the pieces between them are NFC-normalized when the file asks for it (utf8proc);
//   3. each piece is split into pre-tokens by the pre-tokenizer regex (PCRE2, UTF + UCP): the
//      file's Split pattern, or GPT-2's pattern for ByteLevel(use_regex=true);
//   4. each pre-token's bytes start as one symbol per byte (the byte-level alphabet) and are
//      merged by BPE: repeatedly the adjacent pair with the lowest merge rank, leftmost first.
//      Results are cached per pre-token.
// encode never adds BOS/EOS (no post-processor templates).
// decode(ids) concatenates the bytes each id stands for. Those bytes are exactly the input text
// (NFC-normalized when the tokenizer normalizes) for ids from encode; ids that cut a multi-byte
// character yield the raw, incomplete bytes (no U+FFFD replacement), so callers can stream.
// Invalid UTF-8 input to encode is an error naming the byte offset of the first bad byte.
// encode and decode are thread-safe (the cache is guarded by a mutex).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ppo::io {

class Tokenizer {
 public:
  // `path`: a tokenizer.json, or a directory holding tokenizer.json or encoder.json + vocab.bpe.
  static Tokenizer load(const std::string& path);
  static Tokenizer from_hf_json(const std::string& tokenizer_json);
  // GPT-2's files; <|endoftext|> becomes a special token, as in Hugging Face's GPT2TokenizerFast.
  static Tokenizer from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  // One more than the largest id (vocabulary and added tokens).
  int32_t vocab_size() const;
  // The id of a token given as it is written in the vocabulary or as an added token's content.
  std::optional<int32_t> token_id(std::string_view token) const;
  bool is_special(int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ppo::io
