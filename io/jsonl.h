// JSONL datasets: one JSON object per line; blank lines are skipped. Every malformed line is a
// ppo::Error "file:line: what is wrong". A file with no examples is an error too.
//
// The prompt of every format is either `prompt` (a string) or `messages` (a chat: a list of
// {role, content} strings) rendered with the ChatML template
//   <|im_start|>{role}\n{content}<|im_end|>\n   (per message)   then   <|im_start|>assistant\n
#pragma once
#include <string>
#include <vector>

namespace ppo::io {

struct ChatMessage {
  std::string role;
  std::string content;
};

// ChatML text of the messages, ending with the assistant's generation prompt.
std::string render_chatml(const std::vector<ChatMessage>& messages);

// Prompts for rollouts: {"prompt": ...} or {"messages": [...]}.
std::vector<std::string> load_prompts(const std::string& path);

// Reward-model training: {"prompt"|"messages", "chosen": string, "rejected": string}.
struct PreferencePair {
  std::string prompt, chosen, rejected;
};
std::vector<PreferencePair> load_preference_pairs(const std::string& path);

// Supervised fine-tuning: {"prompt"|"messages", "completion": string}.
struct SftPair {
  std::string prompt, completion;
};
std::vector<SftPair> load_sft_pairs(const std::string& path);

}  // namespace ppo::io
