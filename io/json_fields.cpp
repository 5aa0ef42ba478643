#include "io/json_fields.h"

#include <utf8proc.h>

#include <cfloat>
#include <cmath>
#include <filesystem>
#include <sstream>
#include "engine/error.h"

namespace ppo::io {

using nlohmann::json;

namespace {

// Fails on nesting deeper than kMaxJsonDepth (brackets outside strings and comments) and on a NUL
// byte, which nlohmann's lexer would take for the end of the input (and JSON allows nowhere).
void check_json_bytes(std::string_view text, const std::string& where, JsonComments comments) {
  const size_t nul = text.find('\0');
  PPO_ASSERT(nul == std::string_view::npos, where, ": not valid JSON: a NUL byte at offset ", nul);
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (comments == JsonComments::Allowed && c == '/' && i + 1 < text.size() &&
               (text[i + 1] == '/' || text[i + 1] == '*')) {
      const size_t end = text.find(text[i + 1] == '/' ? "\n" : "*/", i + 2);
      if (end == std::string_view::npos) break;  // the parser reports an unterminated comment
      i = end;
    } else if (c == '[' || c == '{') {
      PPO_ASSERT(++depth <= kMaxJsonDepth, where, ": JSON nested deeper than ", kMaxJsonDepth, " levels (at byte ", i, ")");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

}  // namespace

json parse_json(std::string_view text, const std::string& where, JsonComments comments) {
  check_json_bytes(text, where, comments);
  try {
    return json::parse(text.data(), text.data() + text.size(), nullptr, /*allow_exceptions=*/true,
                       /*ignore_comments=*/comments == JsonComments::Allowed);
  } catch (const json::exception& e) {
    PPO_FAIL(where, ": not valid JSON: ", e.what());
  }
}

json parse_json_or_string(std::string_view text, const std::string& where) {
  const size_t bad = first_invalid_utf8(text);
  PPO_ASSERT(bad == std::string_view::npos, where, ": invalid UTF-8 at byte offset ", bad);
  check_json_bytes(text, where, JsonComments::Refused);
  const json parsed = json::parse(text.data(), text.data() + text.size(), nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? json(std::string(text)) : parsed;
}

std::ifstream open_input_file(const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  PPO_ASSERT(std::filesystem::exists(st), path, ": cannot open: no such file");
  PPO_ASSERT(std::filesystem::is_regular_file(st), path, ": cannot open: not a regular file");
  std::ifstream in(path, std::ios::binary);
  PPO_ASSERT(in.good(), path, ": cannot open");
  return in;
}

json read_json_file(const std::string& path, JsonComments comments) {
  std::ifstream in = open_input_file(path);
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  PPO_ASSERT(ec || size <= kMaxJsonFileBytes, path, ": ", size, " bytes; a JSON file may hold at most ",
             kMaxJsonFileBytes);
  std::ostringstream text;
  text << in.rdbuf();
  return parse_json(text.str(), path, comments);
}

std::string excerpt(const json& v) {
  constexpr size_t kMaxChars = 80;
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() <= kMaxChars) return s;
  size_t cut = kMaxChars;
  while (cut > 0 && (uint8_t(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
  return s.substr(0, cut) + "...";
}

size_t first_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                                utf8proc_ssize_t(s.size() - i), &cp);
    if (n <= 0) return i;
    i += size_t(n);
  }
  return std::string_view::npos;
}

bool has_field(const json& j, const char* field) { return j.is_object() && j.contains(field) && !j.at(field).is_null(); }

bool is_int_in(const json& v, IntRange range) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))) return false;
  return v.get<int64_t>() >= range.min && v.get<int64_t>() <= range.max;
}

namespace {

// The field's value; nullptr when it is absent or null (an error when it is Required).
const json* find_field(const json& j, const std::string& where, const char* field, Presence presence) {
  if (has_field(j, field)) return &j.at(field);
  PPO_ASSERT(presence == Presence::Optional, where, ": missing field '", field, "'");
  return nullptr;
}

}  // namespace

int64_t read_int(const json& j, const std::string& where, const char* field, IntRange range, int64_t fallback,
                 Presence presence) {
  const json* v = find_field(j, where, field, presence);
  if (!v) return fallback;
  PPO_ASSERT(v->is_number_integer(), where, ": field '", field, "' must be an integer, got ", excerpt(*v));
  PPO_ASSERT(is_int_in(*v, range), where, ": field '", field, "' = ", excerpt(*v), " must lie in [", range.min, ", ",
             range.max, "]");
  return v->get<int64_t>();
}

double read_number(const json& j, const std::string& where, const char* field, NumberRange range, double fallback,
                   Presence presence) {
  const json* v = find_field(j, where, field, presence);
  if (!v) return fallback;
  PPO_ASSERT(v->is_number(), where, ": field '", field, "' must be a number, got ", excerpt(*v));
  const double x = v->get<double>();
  PPO_ASSERT(std::isfinite(x) && x >= range.min && x <= range.max, where, ": field '", field, "' = ", excerpt(*v),
             " must be a finite number in [", range.min, ", ", range.max, "]");
  return x;
}

float read_positive_float(const json& j, const std::string& where, const char* field, float fallback) {
  return float(read_number(j, where, field, {FLT_MIN, FLT_MAX}, fallback, Presence::Optional));
}

bool read_bool(const json& j, const std::string& where, const char* field, bool fallback) {
  const json* v = find_field(j, where, field, Presence::Optional);
  if (!v) return fallback;
  PPO_ASSERT(v->is_boolean(), where, ": field '", field, "' must be true or false, got ", excerpt(*v));
  return v->get<bool>();
}

std::string read_string(const json& j, const std::string& where, const char* field, const std::string& fallback) {
  const json* v = find_field(j, where, field, Presence::Optional);
  if (!v) return fallback;
  PPO_ASSERT(v->is_string(), where, ": field '", field, "' must be a string, got ", excerpt(*v));
  return v->get<std::string>();
}

const json& read_object(const json& j, const std::string& where, const char* field, Presence presence) {
  static const json empty = json::object();
  const json* v = find_field(j, where, field, presence);
  if (!v) return empty;
  PPO_ASSERT(v->is_object(), where, ": field '", field, "' must be an object, got ", excerpt(*v));
  return *v;
}

}  // namespace ppo::io
