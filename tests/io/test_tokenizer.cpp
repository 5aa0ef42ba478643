// Byte-level BPE tokenizer: exact ids against Hugging Face `tokenizers` (fixture made by
// tools/oracle/make_tokenizer_fixtures.py) for GPT-2 and Qwen3, round trips, special tokens,
// invalid UTF-8, merge-order semantics on a tiny hand-made tokenizer.json.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utf8proc.h>
#include <vector>
#include "engine/error.h"
#include "io/tokenizer.h"
#include "temp_files.h"

using ppo::io::Tokenizer;
using nlohmann::json;
using ppo::test::error_of;

namespace {

const std::string kData = std::string(PPO_SOURCE_DIR) + "/tests/data";

const Tokenizer& gpt2() {
  static const Tokenizer t = Tokenizer::load(kData + "/tokenizers/gpt2");
  return t;
}

const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::load(kData + "/tokenizers/qwen3/tokenizer.json");
  return t;
}

const json& fixtures() {
  static const json f = json::parse(std::ifstream(kData + "/tokenizer_fixtures.json"));
  return f;
}

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()), &out,
                              utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  REQUIRE(n >= 0);
  std::string r(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return r;
}

// Every text of the fixture encodes to exactly the oracle's ids and decodes back.
void check_fixture(const Tokenizer& tok, const char* name, bool normalizes) {
  const json& corpus = fixtures()["corpus"];
  const json& expected = fixtures()[name];
  REQUIRE(corpus.size() == expected.size());
  REQUIRE(corpus.size() >= 30);
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string text = corpus[i].get<std::string>();
    const std::vector<int32_t> want = expected[i].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok.encode(text);
    INFO(name, " text #", i, ": ", json(text).dump());
    CHECK(json(got).dump() == json(want).dump());
    CHECK(tok.decode(got) == (normalizes ? nfc(text) : text));
  }
}

// Random strings over a mix of ASCII, whitespace, Latin, CJK, combining marks and emoji.
std::string random_text(std::mt19937_64& rng) {
  static const std::vector<std::string> atoms = {
      "a", "Z", "7", " ", "  ", "\n", "\t", "\r\n", "'s", "'LL", ".", "!?", "é", "e\xcc\x81", "ß", "中", "文",
      "\xf0\x9f\x98\x80", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "\xe2\x80\x8d", "\xc2\xa0", "-", "_", "0123",
      "\xd0\x96", "\xd8\xb9", "<|", "|>", "<|endoftext|>", "<|im_start|>", "\xe2\x80\xa8"};
  std::uniform_int_distribution<size_t> pick(0, atoms.size() - 1), len(0, 40);
  std::string s;
  for (size_t i = len(rng); i > 0; --i) s += atoms[pick(rng)];
  return s;
}

std::string write_temp(const std::string& name, const std::string& text) {
  static const std::string dir = ppo::test::temp_dir();
  return ppo::test::write_text(dir + "/" + name, text);
}

}  // namespace

TEST_CASE("GPT-2 ids match Hugging Face tokenizers exactly") { check_fixture(gpt2(), "gpt2", false); }

TEST_CASE("Qwen3 ids match Hugging Face tokenizers exactly") { check_fixture(qwen3(), "qwen3", true); }

TEST_CASE("random texts round-trip through encode and decode") {
  std::mt19937_64 rng(1234);
  for (int i = 0; i < 300; ++i) {
    const std::string text = random_text(rng);
    INFO("text: ", json(text).dump());
    CHECK(gpt2().decode(gpt2().encode(text)) == text);
    CHECK(qwen3().decode(qwen3().encode(text)) == nfc(text));
  }
}

TEST_CASE("special tokens are single ids, matched before pre-tokenization") {
  const int32_t im_start = 151644, im_end = 151645, eot = 151643;
  CHECK(qwen3().token_id("<|im_start|>") == im_start);
  CHECK(qwen3().token_id("<|endoftext|>") == eot);
  CHECK(qwen3().is_special(im_start));
  CHECK_FALSE(qwen3().is_special(qwen3().token_id("<think>").value()));  // added, not special
  CHECK_FALSE(qwen3().token_id("<|no such token|>").has_value());
  CHECK(qwen3().vocab_size() == 151669);
  const std::vector<int32_t> ids = qwen3().encode("x<|im_start|><|im_end|>y");
  REQUIRE(ids.size() == 4);
  CHECK(ids[1] == im_start);
  CHECK(ids[2] == im_end);
  CHECK(qwen3().decode({im_start}) == "<|im_start|>");

  CHECK(gpt2().encode("<|endoftext|>") == std::vector<int32_t>{50256});
  CHECK(gpt2().is_special(50256));
  CHECK(gpt2().vocab_size() == 50257);
  // Not a special token in GPT-2: split like ordinary text.
  CHECK(gpt2().encode("<|im_start|>").size() > 1);
}

TEST_CASE("invalid UTF-8 is an error naming the byte offset") {
  CHECK(error_of([] { gpt2().encode("ab\xff"); }).find("invalid UTF-8 at byte offset 2") != std::string::npos);
  CHECK(error_of([] { qwen3().encode("\xc0\x80"); }).find("byte offset 0") != std::string::npos);        // overlong NUL
  CHECK(error_of([] { qwen3().encode("ok \xe4\xb8"); }).find("byte offset 3") != std::string::npos);     // cut short
  CHECK(error_of([] { gpt2().encode("x\xed\xa0\x80"); }).find("byte offset 1") != std::string::npos);    // surrogate
  CHECK(error_of([] { gpt2().encode("abc"); }) == "(no error)");
}

TEST_CASE("decode yields raw bytes for ids that cut a character; unknown ids are errors") {
  const std::string crab = "\xf0\x9f\xa6\x80";  // U+1F980: GPT-2 splits its 4 bytes
  const std::vector<int32_t> ids = gpt2().encode(crab);
  REQUIRE(ids.size() >= 2);
  std::string joined;
  for (int32_t id : ids) joined += gpt2().decode({id});
  CHECK(joined == crab);
  CHECK(gpt2().decode({ids[0]}).size() < 4);
  CHECK(error_of([] { gpt2().decode({15496, 50257}); }).find("unknown token id 50257 at position 1") != std::string::npos);
  CHECK(error_of([] { gpt2().decode({-1}); }).find("unknown token id -1") != std::string::npos);
  CHECK(gpt2().encode("").empty());
  CHECK(gpt2().decode({}).empty());
}

TEST_CASE("BPE merges by rank, leftmost first; merges as \"a b\" strings or [a, b] pairs agree") {
  // Vocabulary over the letters a, b, c and the byte-level space Ġ (U+0120).
  const json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}, {"\xc4\xa0", 6}, {"aa", 7}};
  auto tokenizer_json = [&](const json& merges) {
    return json{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
                {"normalizer", nullptr},
                {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                {"decoder", {{"type", "ByteLevel"}}},
                {"added_tokens", json::array()}}.dump();
  };
  const Tokenizer strings = Tokenizer::load(write_temp("strings.json", tokenizer_json({"b c", "a b", "a bc", "a a"})));
  const Tokenizer pairs = Tokenizer::load(
      write_temp("pairs.json", tokenizer_json(json::array({json::array({"b", "c"}), json::array({"a", "b"}), json::array({"a", "bc"}),
                                                 json::array({"a", "a"})}))));
  for (const Tokenizer* t : {&strings, &pairs}) {
    CHECK(t->encode("abc") == std::vector<int32_t>{5});        // b c (rank 0) first, then a bc
    CHECK(t->encode("abab") == std::vector<int32_t>{3, 3});
    CHECK(t->encode("aaa") == std::vector<int32_t>{7, 0});     // leftmost pair merges first
    CHECK(t->encode("cab c") == std::vector<int32_t>{2, 3, 6, 2});
    CHECK(t->decode({2, 3, 6, 2}) == "cab c");
  }
  // A byte the vocabulary lacks is an error naming it.
  CHECK(error_of([&] { strings.encode("d"); }).find("no token for byte 0x64") != std::string::npos);
}

TEST_CASE("unsupported or broken tokenizer files are errors naming the file") {
  const std::string bad_json = write_temp("bad.json", "{\"model\": ");
  CHECK(error_of([&] { Tokenizer::load(bad_json); }).find(bad_json) != std::string::npos);
  const std::string wordpiece = write_temp("wordpiece.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  const std::string msg = error_of([&] { Tokenizer::load(wordpiece); });
  CHECK(msg.find(wordpiece) != std::string::npos);
  CHECK(msg.find("model: field 'type'") != std::string::npos);
  const std::string bad_merge = write_temp(
      "bad_merge.json",
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a q"]}, "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}})");
  CHECK(error_of([&] { Tokenizer::load(bad_merge); }).find("merge 0 ('a' 'q')") != std::string::npos);
  CHECK(error_of([] { Tokenizer::load("/nonexistent/dir/tokenizer.json"); }).find("/nonexistent/dir/tokenizer.json") !=
        std::string::npos);
}
