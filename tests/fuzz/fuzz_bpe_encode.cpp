// libFuzzer target: BPE encoding of arbitrary bytes with GPT-2's tokenizer (tests/data). Valid UTF-8
// must encode to ids of the vocabulary and decode back to exactly the text; anything else must be
// refused with an error.
#include <cstdlib>
#include "engine/error.h"
#include "fuzz_input.h"
#include "io/json_fields.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ppo::io::Tokenizer gpt2 = ppo::io::Tokenizer::load(std::string(PPO_SOURCE_DIR) + "/tests/data/tokenizers/gpt2");
  const std::string_view text = ppo::fuzz::as_text(data, size);
  const bool valid = ppo::io::first_invalid_utf8(text) == std::string_view::npos;
  try {
    const std::vector<int32_t> ids = gpt2.encode(text);
    if (!valid) std::abort();
    for (int32_t id : ids)
      if (id < 0 || id >= gpt2.vocab_size()) std::abort();
    if (gpt2.decode(ids) != text) std::abort();
  } catch (const ppo::Error&) {
    if (valid) std::abort();
  }
  return 0;
}
