#include "io/json_fields.h"

#include <cmath>
#include "engine/error.h"

namespace ppo::io {

using nlohmann::json;

bool has_field(const json& j, const char* field) { return j.contains(field) && !j.at(field).is_null(); }

int64_t read_positive_int(const json& j, const std::string& where, const char* field, int64_t fallback,
                          Presence presence) {
  if (!has_field(j, field)) {
    PPO_ASSERT(presence == Presence::Optional, where, ": missing field '", field, "'");
    return fallback;
  }
  const json& v = j.at(field);
  PPO_ASSERT(v.is_number_integer(), where, ": field '", field, "' must be an integer, got ", v.dump());
  const int64_t n = v.get<int64_t>();
  PPO_ASSERT(n > 0, where, ": field '", field, "' = ", n, " must be positive");
  return n;
}

float read_positive_float(const json& j, const std::string& where, const char* field, float fallback) {
  if (!has_field(j, field)) return fallback;
  const json& v = j.at(field);
  PPO_ASSERT(v.is_number(), where, ": field '", field, "' must be a number, got ", v.dump());
  const double x = v.get<double>();
  PPO_ASSERT(std::isfinite(x) && x > 0, where, ": field '", field, "' = ", x, " must be positive");
  return float(x);
}

bool read_bool(const json& j, const std::string& where, const char* field, bool fallback) {
  if (!has_field(j, field)) return fallback;
  const json& v = j.at(field);
  PPO_ASSERT(v.is_boolean(), where, ": field '", field, "' must be true or false, got ", v.dump());
  return v.get<bool>();
}

std::string read_string(const json& j, const std::string& where, const char* field, const std::string& fallback) {
  if (!has_field(j, field)) return fallback;
  const json& v = j.at(field);
  PPO_ASSERT(v.is_string(), where, ": field '", field, "' must be a string, got ", v.dump());
  return v.get<std::string>();
}

}  // namespace ppo::io
