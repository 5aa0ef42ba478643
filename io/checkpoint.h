// Training-state checkpoints for resume. A run directory holds
//   step_<n>/<owner>.safetensors   per model: "weight.<name>" (the working weights in their dtype),
//                                  "master.<name>" (f32, when the model keeps a master copy),
//                                  "adam_m.<name>", "adam_v.<name>" (trained models); metadata
//                                  "config" (ModelConfig JSON), "heads" ("lm", "scalar", "lm+scalar")
//   step_<n>/state.json            the caller's JSON (step, data position, RNG, KL controller, ...)
//   latest                         the name of the newest complete step directory
// Saving is atomic: everything is written into a temporary directory (.tmp_step_<n>), each file
// fsync'ed, the directory renamed to step_<n> and fsync'ed, then `latest` replaced by rename; a
// kill at any moment leaves `latest` naming a complete checkpoint (a leftover temporary directory
// is ignored by load and removed by the next save). Loading restores every tensor bit-exactly
// (same precision) and returns the state JSON; missing or corrupt files, a config that is not the
// model's, and missing or misshapen tensors are errors naming the file (and tensor).
// Data-parallel runs: every rank calls both. Saving gathers each model's optimizer shards (ZeRO-1)
// onto rank 0, which writes the same files as one rank would (the others wait until `latest`
// moved); loading has every rank read the files (a directory every rank sees) and keep its shard.
// So a checkpoint resumes on any number of ranks.
#pragma once
#include <map>
#include <string>
#include <nlohmann/json.hpp>
#include "models/transformer.h"

namespace ppo::io {

// Writes run_dir/step_<step>/ (one <key>.safetensors per entry of `models`, keyed by owner) and
// points run_dir/latest at it. Creates run_dir.
void save_checkpoint(const std::string& run_dir, int64_t step, const std::map<std::string, Transformer*>& models,
                     const nlohmann::json& state);

// A fresh (not resumed) run that will save into run_dir: fails before any work when run_dir already
// holds a run's checkpoints (its `latest`), which the new run would mix with or collide with.
// `who` names the caller in the message, which suggests resuming or another directory.
void check_no_checkpoints(const std::string& run_dir, const std::string& who);

// Whether step_dir lies directly inside run_dir (both existing; paths compared resolved).
bool is_step_dir_of(const std::string& run_dir, const std::string& step_dir);

// A run resumed from step_dir, an earlier step directory of run_dir: `latest` names it again, so that
// the saves of the steps now redone replace the later step directories (orphans of the abandoned
// continuation) instead of failing on the one `latest` named. Nothing happens when step_dir is not
// directly inside run_dir, or is already its latest.
void rewind_latest(const std::string& run_dir, const std::string& step_dir);

// The step directory a path names: run_dir/<contents of latest>, or `path` itself when it is a
// step directory (holds state.json).
std::string checkpoint_step_dir(const std::string& path);

// Restores every model of `models` from the checkpoint `path` names (checkpoint_step_dir) and
// returns its state JSON.
nlohmann::json load_checkpoint(const std::string& path, const std::map<std::string, Transformer*>& models);

// Writes model `owner` of a checkpoint as a Hugging Face directory (io/hf_checkpoint.h): its f32
// master values (or its weights), as `heads` (LM or Scalar; a model with both heads picks one).
void export_checkpoint_to_hf(const std::string& checkpoint, const std::string& owner, const std::string& out_dir,
                             Heads heads, int64_t pad_token_id = -1);
// The heads of model `owner` in a checkpoint.
Heads checkpoint_heads(const std::string& checkpoint, const std::string& owner);

const char* heads_name(Heads heads);  // "lm", "scalar", "lm+scalar"
Heads heads_from_name(const std::string& name, const std::string& where);

}  // namespace ppo::io
