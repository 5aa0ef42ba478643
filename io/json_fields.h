// Reading JSON input safely: parsing (strict JSON, bounded nesting and size), readers of one field
// of an object for config parsers, and short excerpts of values for messages. An absent or null
// field takes the fallback (or is an error when required); every error names `where` (file,
// section) and the field, and is a ppo::Error: no nlohmann exception escapes these functions.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <nlohmann/json.hpp>

namespace ppo::io {

// Deeper nesting is an error: copying, comparing or printing a JSON value recurses once per level.
constexpr int kMaxJsonDepth = 64;
// Larger JSON files are errors (a tokenizer.json of a 256k vocabulary is about 20 MB).
constexpr size_t kMaxJsonFileBytes = size_t(1) << 30;

// Run configs may hold // and /* */ comments; every other JSON input is strict JSON.
enum class JsonComments : uint8_t { Refused, Allowed };

// `text` as JSON: syntax errors and nesting deeper than kMaxJsonDepth name `where`.
nlohmann::json parse_json(std::string_view text, const std::string& where,
                          JsonComments comments = JsonComments::Refused);
// A value given on the command line (--set key=value): JSON when the text parses as JSON, else the
// text as a JSON string. Invalid UTF-8 and nesting deeper than kMaxJsonDepth are errors naming `where`.
nlohmann::json parse_json_or_string(std::string_view text, const std::string& where);
// `path` opened for reading: a regular file, else (missing, a directory, a device, a pipe) an error
// naming it; no reader waits on a pipe or reads a device without end.
std::ifstream open_input_file(const std::string& path);
// The file at `path` parsed as parse_json does; errors name the file.
nlohmann::json read_json_file(const std::string& path, JsonComments comments = JsonComments::Refused);
// A value for an error message: its JSON text cut to about 80 characters, invalid UTF-8 replaced.
std::string excerpt(const nlohmann::json& v);
// Offset of the first byte of `s` that is not valid UTF-8, or npos.
size_t first_invalid_utf8(std::string_view s);

enum class Presence : uint8_t { Optional, Required };

// The closed range a numeric field must lie in.
struct IntRange {
  int64_t min, max;
};
struct NumberRange {
  double min, max;
};

bool has_field(const nlohmann::json& j, const char* field);  // present and not null
bool is_int_in(const nlohmann::json& v, IntRange range);     // an integer in range (an unsigned one never wraps)
int64_t read_int(const nlohmann::json& j, const std::string& where, const char* field, IntRange range,
                 int64_t fallback, Presence presence);
double read_number(const nlohmann::json& j, const std::string& where, const char* field, NumberRange range,
                   double fallback, Presence presence);  // finite, in range
// A number in [FLT_MIN, FLT_MAX] (positive, a normal float).
float read_positive_float(const nlohmann::json& j, const std::string& where, const char* field, float fallback);
bool read_bool(const nlohmann::json& j, const std::string& where, const char* field, bool fallback);
std::string read_string(const nlohmann::json& j, const std::string& where, const char* field,
                        const std::string& fallback);
// A field that must be an object (Required) or may be absent/null (Optional: an empty object then).
const nlohmann::json& read_object(const nlohmann::json& j, const std::string& where, const char* field,
                                  Presence presence);

}  // namespace ppo::io
