#include "io/jsonl.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include "engine/error.h"
#include "io/json_fields.h"

namespace ppo::io {
namespace {

using nlohmann::json;

// Calls fn(object, "file:line") for every non-blank line; fails on lines that are not JSON objects.
template <class Fn>
void for_each_line(const std::string& path, Fn&& fn) {
  std::ifstream in = open_input_file(path);
  std::string line;
  size_t examples = 0;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    const json value = parse_json(line, where);
    if (!value.is_object()) PPO_FAIL(where, ": expected a JSON object, got ", value.type_name());
    fn(value, where);
    ++examples;
  }
  if (examples == 0) PPO_FAIL(path, ": no examples");
}

std::string string_field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) PPO_FAIL(where, ": missing field '", key, "'");
  if (!it->is_string()) PPO_FAIL(where, ": field '", key, "' must be a string, got ", it->type_name());
  return it->get<std::string>();
}

// The prompt text: `prompt` as written, or `messages` rendered with ChatML.
std::string prompt_of(const json& obj, const std::string& where) {
  const bool has_prompt = obj.contains("prompt"), has_messages = obj.contains("messages");
  if (has_prompt && has_messages) PPO_FAIL(where, ": has both 'prompt' and 'messages'; give one");
  if (has_prompt) return string_field(obj, "prompt", where);
  if (!has_messages) PPO_FAIL(where, ": missing field 'prompt' (or 'messages')");
  const json& list = obj["messages"];
  if (!list.is_array() || list.empty()) PPO_FAIL(where, ": 'messages' must be a non-empty list of {role, content}");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = where + ": messages[" + std::to_string(i) + "]";
    if (!list[i].is_object()) PPO_FAIL(at, ": expected an object {role, content}, got ", list[i].type_name());
    ChatMessage m{string_field(list[i], "role", at), string_field(list[i], "content", at)};
    if (m.role.empty() || m.role.find('\n') != std::string::npos) PPO_FAIL(at, ": role must be a non-empty single line");
    messages.push_back(std::move(m));
  }
  return render_chatml(messages);
}

}  // namespace

std::string render_chatml(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const ChatMessage& m : messages) text += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return text + "<|im_start|>assistant\n";
}

std::vector<std::string> load_prompts(const std::string& path) {
  std::vector<std::string> prompts;
  for_each_line(path, [&](const json& obj, const std::string& where) { prompts.push_back(prompt_of(obj, where)); });
  return prompts;
}

std::vector<PreferencePair> load_preference_pairs(const std::string& path) {
  std::vector<PreferencePair> pairs;
  for_each_line(path, [&](const json& obj, const std::string& where) {
    pairs.push_back({prompt_of(obj, where), string_field(obj, "chosen", where), string_field(obj, "rejected", where)});
  });
  return pairs;
}

std::vector<SftPair> load_sft_pairs(const std::string& path) {
  std::vector<SftPair> pairs;
  for_each_line(path, [&](const json& obj, const std::string& where) {
    pairs.push_back({prompt_of(obj, where), string_field(obj, "completion", where)});
  });
  return pairs;
}

}  // namespace ppo::io
