#include "ppo/run_state.h"

#include "engine/error.h"
#include "io/json_fields.h"
#include "ppo/config.h"

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
  PPO_ASSERT(saved == ours, where, ": cannot resume: field '", field, "' is ", io::excerpt(saved),
             " in the checkpoint but ", io::excerpt(ours), " in this run's config");
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
  PPO_ASSERT(state.is_object(), where, ": expected a JSON object, got ", io::excerpt(state));
  nlohmann::json saved = io::read_object(state, where, "shapes", io::Presence::Required);
  for (const auto& [key, value] : added_later.items())
    if (!saved.contains(key)) saved[key] = value;
  check_same_shapes(saved, shapes, "", where);
  const int64_t steps_done = io::read_int(state, where, "steps_done", {0, kMaxSteps}, 0, io::Presence::Required);
  const int64_t optimizer_steps_done =
      io::read_int(state, where, "optimizer_steps_done", {0, kMaxOptimizerSteps}, 0, io::Presence::Required);
  const nlohmann::json& data = io::read_object(state, where, "data", io::Presence::Required);
  const int64_t next = io::read_int(data, where + ": data", data_key, {0, INT64_MAX}, 0, io::Presence::Required);
  return {steps_done, optimizer_steps_done, uint64_t(next)};
}

}  // namespace ppo
