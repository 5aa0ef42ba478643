// libFuzzer target: GPT-2's encoder.json and vocab.bpe; the input holds both, split at its first
// NUL byte. A tokenizer that loads encodes and decodes a fixed text.
#include "engine/error.h"
#include "fuzz_input.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [encoder, merges] = ppo::fuzz::split_at_nul(ppo::fuzz::as_text(data, size));
  const std::string encoder_path = ppo::fuzz::write_file("encoder.json", encoder);
  const std::string merges_path = ppo::fuzz::write_file("vocab.bpe", merges);
  try {
    const ppo::io::Tokenizer t = ppo::io::Tokenizer::from_gpt2_files(encoder_path, merges_path);
    t.decode(t.encode("Hello, w\xc3\xb6rld! 12 \xe4\xb8\xad <|endoftext|> x"));
  } catch (const ppo::Error&) {
  }
  return 0;
}
