// `ppo export --checkpoint DIR --out DIR`: one model of a training checkpoint (a run directory,
// whose `latest` is taken, or a step directory) as a Hugging Face directory (config.json +
// model.safetensors) that transformers loads.
#include <cstdio>
#include "io/checkpoint.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

namespace {
struct ExportOptions {
  std::string checkpoint, out, owner = "policy", head = "auto";
  int64_t pad_token_id = -1;
};

void run_export(const ExportOptions& o) {
  Heads heads = io::checkpoint_heads(o.checkpoint, o.owner);
  if (o.head == "lm") heads = Heads::LM;
  else if (o.head == "scalar") heads = Heads::Scalar;
  else if (heads == Heads::LMAndScalar) heads = Heads::LM;  // auto: the causal LM of a policy with a value head
  io::export_checkpoint_to_hf(o.checkpoint, o.owner, o.out, heads, o.pad_token_id);
  std::printf("exported '%s' (%s head) of %s to %s\n", o.owner.c_str(), io::heads_name(heads),
              io::checkpoint_step_dir(o.checkpoint).c_str(), o.out.c_str());
}
}  // namespace

void add_export_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("export", "Write one model of a training checkpoint as a Hugging Face directory");
  auto o = std::make_shared<ExportOptions>();
  cmd->add_option("--checkpoint", o->checkpoint, "run directory (its latest checkpoint) or step_<n> directory")->required();
  cmd->add_option("--out", o->out, "output directory (config.json, model.safetensors)")->required();
  cmd->add_option("--owner", o->owner, "which model: policy, value, reward, reference (default policy)");
  cmd->add_option("--head", o->head, "auto (the model's head; lm for a policy with a value head), lm or scalar")
      ->check(CLI::IsMember({"auto", "lm", "scalar"}));
  cmd->add_option("--pad-token-id", o->pad_token_id, "pad_token_id for config.json (sequence classifiers pool with it)");
  cmd->callback([o] { run_export(*o); });
}

}  // namespace ppo::tools
