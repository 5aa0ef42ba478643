// Readers of one field of a JSON object for config parsers. An absent or null field takes the
// fallback (or is an error when required); every error names `where` (file, section) and the field.
#pragma once
#include <cstdint>
#include <string>
#include <nlohmann/json.hpp>

namespace ppo::io {

enum class Presence : uint8_t { Optional, Required };

bool has_field(const nlohmann::json& j, const char* field);  // present and not null
int64_t read_positive_int(const nlohmann::json& j, const std::string& where, const char* field, int64_t fallback,
                          Presence presence);
float read_positive_float(const nlohmann::json& j, const std::string& where, const char* field, float fallback);
bool read_bool(const nlohmann::json& j, const std::string& where, const char* field, bool fallback);
std::string read_string(const nlohmann::json& j, const std::string& where, const char* field,
                        const std::string& fallback);

}  // namespace ppo::io
