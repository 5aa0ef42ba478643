#include "ppo/run_state.h"

#include "engine/error.h"

namespace ppo {

namespace {

// Field-by-field comparison of a checkpoint's shapes with this run's; `field` is the dotted path.
void check_same_shapes(const nlohmann::json& saved, const nlohmann::json& ours, const std::string& field,
                       const std::string& where) {
  if (saved.is_object() && ours.is_object()) {
    for (const auto& [key, value] : saved.items()) {
      const std::string name = field.empty() ? key : field + "." + key;
      PPO_ASSERT(ours.contains(key), where, ": field '", name, "' of the checkpoint is not in this run's config");
      check_same_shapes(value, ours[key], name, where);
    }
    for (const auto& [key, value] : ours.items())
      PPO_ASSERT(saved.contains(key), where, ": field '", field.empty() ? key : field + "." + key,
                 "' of this run's config is not in the checkpoint");
    return;
  }
  PPO_ASSERT(saved == ours, where, ": cannot resume: field '", field, "' is ", saved.dump(),
             " in the checkpoint but ", ours.dump(), " in this run's config");
}

}  // namespace

nlohmann::json run_state_json(const RunProgress& p, const char* data_key, int64_t data_size,
                              const nlohmann::json& shapes) {
  nlohmann::json data = {{data_key, p.next_example}};
  if (data_size > 0) {
    data["pass"] = p.next_example / uint64_t(data_size);
    data["index_in_pass"] = p.next_example % uint64_t(data_size);
  }
  return {{"steps_done", p.steps_done}, {"optimizer_steps_done", p.optimizer_steps_done}, {"data", data},
          {"shapes", shapes}};
}

RunProgress read_run_state(const nlohmann::json& state, const char* data_key, const nlohmann::json& shapes,
                           const std::string& where, const nlohmann::json& added_later) {
  for (const char* key : {"steps_done", "optimizer_steps_done", "data", "shapes"})
    PPO_ASSERT(state.contains(key), where, ": missing '", key, "'");
  nlohmann::json saved = state["shapes"];
  for (const auto& [key, value] : added_later.items())
    if (saved.is_object() && !saved.contains(key)) saved[key] = value;
  check_same_shapes(saved, shapes, "", where);
  const nlohmann::json& data = state["data"];
  PPO_ASSERT(data.contains(data_key) && data[data_key].is_number_unsigned(), where, ": data.", data_key,
             " missing or not a non-negative integer");
  PPO_ASSERT(state["steps_done"].is_number_integer() && state["optimizer_steps_done"].is_number_integer(), where,
             ": steps_done / optimizer_steps_done must be integers");
  return {state["steps_done"].get<int64_t>(), state["optimizer_steps_done"].get<int64_t>(),
          data[data_key].get<uint64_t>()};
}

}  // namespace ppo
