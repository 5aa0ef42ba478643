// libFuzzer target: a Hugging Face tokenizer.json. A tokenizer that loads encodes and decodes a
// fixed text (ASCII, accents, CJK, an emoji, a special token).
#include "engine/error.h"
#include "fuzz_input.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ppo::fuzz::write_file("tokenizer.json", ppo::fuzz::as_text(data, size));
  try {
    const ppo::io::Tokenizer t = ppo::io::Tokenizer::from_hf_json(path);
    t.token_id("<|endoftext|>");
    t.decode(t.encode("Hello, w\xc3\xb6rld! 12 e\xcc\x81 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80<|endoftext|>\n\n"));
  } catch (const ppo::Error&) {
  }
  return 0;
}
