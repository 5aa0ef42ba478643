// `ppo tokenize --tokenizer PATH TEXT...`: the token ids of each TEXT, one JSON array per line.
#include <cstdio>
#include <nlohmann/json.hpp>
#include "io/tokenizer.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

void add_tokenize_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of each TEXT as a JSON array, one per line");
  auto path = std::make_shared<std::string>();
  auto texts = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--tokenizer", *path, "tokenizer.json, or a directory with tokenizer.json or encoder.json + vocab.bpe")
      ->required();
  cmd->add_option("text", *texts, "texts to encode")->required();
  cmd->callback([path, texts] {
    const io::Tokenizer tokenizer = io::Tokenizer::load(*path);
    for (const std::string& text : *texts) std::printf("%s\n", nlohmann::json(tokenizer.encode(text)).dump().c_str());
  });
}

}  // namespace ppo::tools
