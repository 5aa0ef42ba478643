// JSONL datasets: prompts (plain and ChatML-rendered chats), preference pairs, SFT pairs; every
// malformed line is an error naming file:line and what is wrong.
#include <doctest/doctest.h>

#include <string>
#include <vector>
#include "io/jsonl.h"
#include "temp_files.h"

using namespace ppo::io;
using ppo::test::contains;
using ppo::test::error_of;

namespace {

std::string write_jsonl(const std::string& name, const std::string& text) {
  static const std::string dir = ppo::test::temp_dir();
  return ppo::test::write_text(dir + "/" + name, text);
}

// Loading `text` with `load` fails with a message naming path:line and `what`.
template <class Load>
void check_error(Load load, const std::string& text, int line, const std::string& what) {
  const std::string path = write_jsonl("bad.jsonl", text);
  const std::string msg = error_of([&] { load(path); });
  INFO("message: ", msg);
  CHECK(contains(msg, path + ":" + std::to_string(line) + ": "));
  CHECK(contains(msg, what));
}

}  // namespace

TEST_CASE("ChatML rendering") {
  CHECK(render_chatml({{"system", "Be brief."}, {"user", "Hi\nthere"}}) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi\nthere<|im_end|>\n<|im_start|>assistant\n");
  CHECK(render_chatml({{"user", ""}}) == "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("prompts: plain strings and chats; blank lines and CRLF are fine") {
  const std::string path = write_jsonl(
      "prompts.jsonl",
      "{\"prompt\": \"Tell me a joke.\"}\n"
      "\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi \\u4e2d\"}], \"id\": 7}\r\n"
      "   \n"
      "{\"prompt\": \"\"}");  // no newline at the end
  const std::vector<std::string> prompts = load_prompts(path);
  REQUIRE(prompts.size() == 3);
  CHECK(prompts[0] == "Tell me a joke.");
  CHECK(prompts[1] == "<|im_start|>user\nHi \xe4\xb8\xad<|im_end|>\n<|im_start|>assistant\n");
  CHECK(prompts[2].empty());
}

TEST_CASE("preference and SFT pairs") {
  const auto prefs = load_preference_pairs(write_jsonl(
      "prefs.jsonl",
      "{\"prompt\": \"2+2?\", \"chosen\": \" 4\", \"rejected\": \" 5\"}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"chosen\": \"Hello!\", \"rejected\": \"\"}\n"));
  REQUIRE(prefs.size() == 2);
  CHECK(prefs[0].prompt == "2+2?");
  CHECK(prefs[0].chosen == " 4");
  CHECK(prefs[0].rejected == " 5");
  CHECK(prefs[1].prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(prefs[1].chosen == "Hello!");

  const auto sft = load_sft_pairs(write_jsonl("sft.jsonl", "{\"prompt\": \"Q\", \"completion\": \"A<|im_end|>\"}\n"));
  REQUIRE(sft.size() == 1);
  CHECK(sft[0].prompt == "Q");
  CHECK(sft[0].completion == "A<|im_end|>");
}

TEST_CASE("malformed lines name file:line and what is wrong") {
  const std::string ok = "{\"prompt\": \"fine\"}\n";
  check_error(load_prompts, ok + "\n{\"prompt\": \"unterminated}\n", 3, "not valid JSON");
  check_error(load_prompts, ok + "[1, 2]\n", 2, "expected a JSON object, got array");
  check_error(load_prompts, ok + "{\"text\": \"x\"}\n", 2, "missing field 'prompt' (or 'messages')");
  check_error(load_prompts, ok + "{\"prompt\": 5}\n", 2, "field 'prompt' must be a string, got number");
  check_error(load_prompts, "{\"prompt\": \"a\", \"messages\": []}\n", 1, "both 'prompt' and 'messages'");
  check_error(load_prompts, "{\"messages\": []}\n", 1, "'messages' must be a non-empty list");
  check_error(load_prompts, "{\"messages\": [\"hi\"]}\n", 1, "messages[0]: expected an object {role, content}, got string");
  check_error(load_prompts, "{\"messages\": [{\"role\": \"user\"}]}\n", 1, "messages[0]: missing field 'content'");
  check_error(load_prompts, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"\", \"content\": \"y\"}]}\n", 1,
              "messages[1]: role must be a non-empty single line");
  check_error(load_preference_pairs, "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"p\", \"chosen\": \"a\"}\n",
              2, "missing field 'rejected'");
  check_error(load_preference_pairs, "{\"prompt\": \"p\", \"chosen\": null, \"rejected\": \"b\"}\n", 1,
              "field 'chosen' must be a string, got null");
  const std::string sft_ok = "{\"prompt\": \"p\", \"completion\": \"c\"}\n";
  check_error(load_sft_pairs, sft_ok + sft_ok + sft_ok + "{\"prompt\": \"p\"}\n", 4, "missing field 'completion'");

  const std::string empty = write_jsonl("empty.jsonl", "\n\n");
  CHECK(contains(error_of([&] { load_prompts(empty); }), empty + ": no examples"));
  CHECK(contains(error_of([] { load_sft_pairs("/nonexistent/x.jsonl"); }), "/nonexistent/x.jsonl: cannot open"));
}
