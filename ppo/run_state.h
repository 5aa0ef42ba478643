// The state.json of a training checkpoint (io/checkpoint.h saves it beside the models): how far the
// run got, where its data stream stands, and the shapes a resumed run must match. An algorithm adds
// its own keys beside these (PPO: "kl_controller", "score_moments").
//
//   {"steps_done": n, "optimizer_steps_done": m,
//    "data": {"<data_key>": i, "pass": i / N, "index_in_pass": i % N},   (pass: finite sets of N)
//    "shapes": {...}}
#pragma once
#include <cstdint>
#include <string>
#include <nlohmann/json.hpp>

namespace ppo {

struct RunProgress {
  int64_t steps_done = 0, optimizer_steps_done = 0;
  uint64_t next_example = 0;  // index of the next example (prompt, pair) of the data stream
};

// `data_size`: distinct examples of a finite set (0: an unbounded stream); `data_key` names the
// position ("next_prompt", "next_pair").
nlohmann::json run_state_json(const RunProgress& progress, const char* data_key, int64_t data_size,
                              const nlohmann::json& shapes);

// Reads the progress of `state` (read from `where`) after checking its shapes against this run's
// `shapes`, field by field: a mismatch is an error naming the dotted field. `added_later`: shape
// fields newer than some checkpoints, with the value an older checkpoint's run had.
RunProgress read_run_state(const nlohmann::json& state, const char* data_key, const nlohmann::json& shapes,
                           const std::string& where, const nlohmann::json& added_later = nlohmann::json::object());

}  // namespace ppo
