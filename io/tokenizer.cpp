#include "io/tokenizer.h"

#include <filesystem>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include "engine/error.h"
#include "io/json_fields.h"
#include "models/config.h"

namespace ppo::io {
namespace {

using nlohmann::json;

// GPT-2's pre-tokenizer pattern (Hugging Face ByteLevel with use_regex=true uses the same).
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Only the pieces the BPE cache may hold; further words are encoded but not remembered.
constexpr size_t kCacheCapacity = 100000;

// The byte-level alphabet: every byte maps to one printable code point. Printable Latin-1 bytes
// ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to themselves; the others, in byte order, to
// U+0100, U+0101, ...
std::array<int32_t, 256> byte_level_code_points() {
  std::array<int32_t, 256> cp{};
  int32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    cp[b] = printable ? b : next++;
  }
  return cp;
}

std::string utf8_of(int32_t code_point) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(code_point, buf);
  return std::string(reinterpret_cast<const char*>(buf), size_t(n));
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// A JSON field that must be absent, null, false or equal to `expected`; else the feature is unsupported.
void require_value(const json& obj, const char* key, const json& expected, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null() || *it == expected || (it->is_boolean() && !it->get<bool>())) return;
  PPO_FAIL(where, ": field '", key, "' = ", excerpt(*it), " is not supported (only ", excerpt(expected), ")");
}

// A token id from the file: an integer in [0, kMaxVocabSize).
int32_t read_token_id(const json& obj, const std::string& where, const std::string& field) {
  return int32_t(read_int(obj, where, field.c_str(), {0, kMaxVocabSize - 1}, 0, Presence::Required));
}

// The `type` of a tokenizer.json component, "" when it has none (or is not an object).
std::string type_of(const json& component, const std::string& where) { return read_string(component, where, "type", ""); }

}  // namespace

struct Tokenizer::Impl {
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
    bool normalized;  // matched on the normalized text rather than the raw input
  };
  struct Merge {
    int32_t rank;
    int32_t id;  // the merged token
  };

  std::string source;  // the file(s) loaded, for error messages
  std::unordered_map<std::string, int32_t> vocab;  // byte-level token string -> id
  std::vector<std::string> id_bytes;               // id -> the bytes it decodes to
  std::vector<uint8_t> id_known;                   // id -> 1 when the id exists
  std::vector<uint8_t> id_special;
  std::array<int32_t, 256> byte_ids{};             // byte -> single-byte token id, -1 if absent
  std::array<std::string, 256> byte_symbols;       // byte -> its byte-level character (UTF-8)
  std::unordered_map<uint64_t, Merge> merges;      // (left id << 32 | right id) -> merge
  std::vector<AddedToken> added;
  std::array<bool, 256> starts_added{};  // byte -> some added token starts with it
  bool nfc = false;
  bool ignore_merges = false;  // a pre-token that is itself in the vocabulary skips BPE
  pcre2_code* regex = nullptr;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;  // pre-token bytes -> ids

  ~Impl() { pcre2_code_free(regex); }

  static uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

  void compile_regex(const std::string& pattern) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    regex = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                          &code, &offset, nullptr);
    if (!regex) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(code, message, sizeof(message));
      PPO_FAIL(source, ": pre-tokenizer regex does not compile at offset ", offset, ": ",
               reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(regex, PCRE2_JIT_COMPLETE);  // a speed-up only; the interpreter runs without it
  }

  // Registers the vocabulary; fills the byte-level tables and decode bytes.
  void set_vocab(const std::unordered_map<std::string, int32_t>& tokens) {
    vocab = tokens;
    const std::array<int32_t, 256> cp = byte_level_code_points();
    std::unordered_map<int32_t, uint8_t> byte_of;  // byte-level code point -> byte
    for (int b = 0; b < 256; ++b) {
      byte_symbols[b] = utf8_of(cp[b]);
      byte_of[cp[b]] = uint8_t(b);
    }
    for (const auto& [token, id] : vocab) {
      // Decoded bytes: each byte-level character back to its byte; a token holding any other
      // character decodes to its own UTF-8 (as Hugging Face's ByteLevel decoder does).
      std::string bytes;
      size_t i = 0;
      while (i < token.size()) {
        utf8proc_int32_t c;
        const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(token.data() + i),
                                                    utf8proc_ssize_t(token.size() - i), &c);
        auto it = n > 0 ? byte_of.find(c) : byte_of.end();
        if (it == byte_of.end()) {
          bytes = token;
          break;
        }
        bytes.push_back(char(it->second));
        i += size_t(n);
      }
      set_id(id, bytes, false);
    }
    for (int b = 0; b < 256; ++b) {
      auto it = vocab.find(byte_symbols[b]);
      byte_ids[b] = it == vocab.end() ? -1 : it->second;
    }
  }

  void set_id(int32_t id, const std::string& bytes, bool special) {
    if (size_t(id) >= id_bytes.size()) {
      id_bytes.resize(size_t(id) + 1);
      id_known.resize(size_t(id) + 1, 0);
      id_special.resize(size_t(id) + 1, 0);
    }
    id_bytes[size_t(id)] = bytes;
    id_known[size_t(id)] = 1;
    id_special[size_t(id)] = special;
  }

  void add_merge(const std::string& left, const std::string& right, int32_t rank) {
    auto l = vocab.find(left), r = vocab.find(right), m = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || m == vocab.end())
      PPO_FAIL(source, ": merge ", rank, " ('", left, "' '", right, "') uses a token missing from the vocabulary");
    merges[pair_key(l->second, r->second)] = Merge{rank, m->second};
  }

  void add_token(const std::string& content, int32_t id, bool special, bool normalized) {
    if (content.empty()) PPO_FAIL(source, ": added token ", id, " is empty");
    added.push_back(AddedToken{content, id, special, normalized});
    starts_added[uint8_t(content[0])] = true;
    set_id(id, content, special);
  }

  // ---- encode -----------------------------------------------------------------------------------

  // The added token (of those with normalized == `normalized`) starting at `pos`, longest first.
  const AddedToken* added_at(std::string_view text, size_t pos, bool normalized) const {
    const AddedToken* best = nullptr;
    for (const AddedToken& t : added)
      if (t.normalized == normalized && text.compare(pos, t.content.size(), t.content) == 0 &&
          (!best || t.content.size() > best->content.size()))
        best = &t;
    return best;
  }

  // Splits `text` on added tokens (leftmost-longest); text between them goes to `piece`.
  template <class PieceFn>
  void split_added(std::string_view text, bool normalized, std::vector<int32_t>& ids, PieceFn&& piece) const {
    size_t start = 0;
    for (size_t pos = 0; pos < text.size();) {
      const AddedToken* t = starts_added[uint8_t(text[pos])] ? added_at(text, pos, normalized) : nullptr;
      if (!t) {
        ++pos;
        continue;
      }
      if (pos > start) piece(text.substr(start, pos - start));
      ids.push_back(t->id);
      pos += t->content.size();
      start = pos;
    }
    if (start < text.size()) piece(text.substr(start));
  }

  std::string normalize(std::string_view text) const {
    if (!nfc || is_ascii(text)) return std::string(text);
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            utf8proc_ssize_t(text.size()), &out, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0) PPO_FAIL(source, ": NFC normalization failed: ", utf8proc_errmsg(n));
    std::string s(reinterpret_cast<const char*>(out), size_t(n));
    std::free(out);
    return s;
  }

  // Splits normalized text into pre-tokens: regex matches and the gaps between them (Isolated).
  void pre_tokenize(std::string_view text, std::vector<int32_t>& ids) const {
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex, nullptr);
    const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t start = 0, done = 0;
    try {
      while (start <= text.size()) {
        const int rc = pcre2_match(regex, subject, text.size(), start, PCRE2_NO_UTF_CHECK, match, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) PPO_FAIL(source, ": pre-tokenizer regex failed with PCRE2 error ", rc);
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
        const size_t begin = ov[0], end = ov[1];
        if (begin > done) bpe(text.substr(done, begin - done), ids);
        if (end > begin) bpe(text.substr(begin, end - begin), ids);
        done = end;
        if (end > begin) {
          start = end;
        } else {  // empty match: step over one character
          if (begin >= text.size()) break;
          start = begin + 1;
          while (start < text.size() && (uint8_t(text[start]) & 0xC0) == 0x80) ++start;
        }
      }
      if (done < text.size()) bpe(text.substr(done), ids);
    } catch (...) {
      pcre2_match_data_free(match);
      throw;
    }
    pcre2_match_data_free(match);
  }

  // BPE of one pre-token, appended to ids.
  void bpe(std::string_view word, std::vector<int32_t>& ids) const {
    const std::string key(word);
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = cache.find(key);
      if (it != cache.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> out = merge_word(word);
    ids.insert(ids.end(), out.begin(), out.end());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() < kCacheCapacity) cache.emplace(key, std::move(out));
  }

  std::vector<int32_t> merge_word(std::string_view word) const {
    if (ignore_merges) {
      std::string symbols;
      for (unsigned char c : word) symbols += byte_symbols[c];
      auto it = vocab.find(symbols);
      if (it != vocab.end()) return {it->second};
    }
    // Symbols as a linked list; a min-heap of candidate merges ordered by (rank, position).
    const int n = int(word.size());
    std::vector<int32_t> id(word.size()), prev(word.size()), next(word.size());
    for (int i = 0; i < n; ++i) {
      id[i] = byte_ids[uint8_t(word[size_t(i)])];
      if (id[i] < 0)
        PPO_FAIL(source, ": the vocabulary has no token for byte 0x", std::hex, int(uint8_t(word[size_t(i)])));
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    struct Candidate {
      int32_t rank, pos, left, right;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push = [&](int pos) {
      if (pos < 0 || next[pos] < 0) return;
      auto m = merges.find(pair_key(id[pos], id[next[pos]]));
      if (m != merges.end()) heap.push(Candidate{m->second.rank, pos, id[pos], id[next[pos]]});
    };
    for (int i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      const int right = next[c.pos];
      if (id[c.pos] != c.left || right < 0 || id[right] != c.right) continue;  // stale
      id[c.pos] = merges.at(pair_key(c.left, c.right)).id;
      id[right] = -1;  // removed
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      push(prev[c.pos]);
      push(c.pos);
    }
    std::vector<int32_t> out;
    for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(id[i]);
    return out;
  }

  std::vector<int32_t> encode(std::string_view text) const {
    const size_t bad = first_invalid_utf8(text);
    if (bad != std::string_view::npos)
      PPO_FAIL(source, ": encode: invalid UTF-8 at byte offset ", bad, " (byte 0x", std::hex,
               int(uint8_t(text[bad])), ")");
    std::vector<int32_t> ids;
    split_added(text, false, ids, [&](std::string_view raw) {
      const std::string normalized = normalize(raw);
      split_added(normalized, true, ids, [&](std::string_view piece) { pre_tokenize(piece, ids); });
    });
    return ids;
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  if (!std::filesystem::is_directory(path)) return from_hf_json(path);
  if (std::filesystem::is_regular_file(path + "/tokenizer.json")) return from_hf_json(path + "/tokenizer.json");
  if (std::filesystem::is_regular_file(path + "/encoder.json") && std::filesystem::is_regular_file(path + "/vocab.bpe"))
    return from_gpt2_files(path + "/encoder.json", path + "/vocab.bpe");
  PPO_FAIL(path, ": holds neither tokenizer.json nor encoder.json + vocab.bpe");
}

Tokenizer Tokenizer::from_hf_json(const std::string& tokenizer_json) {
  auto impl = std::make_unique<Impl>();
  impl->source = tokenizer_json;
  const std::string& where = impl->source;
  const json doc = read_json_file(tokenizer_json);
  PPO_ASSERT(doc.is_object(), where, ": expected a JSON object, got ", excerpt(doc));

  // model: BPE over the byte-level alphabet, none of the options that change its meaning.
  const std::string in_model = where + ": model";
  const json& model = read_object(doc, where, "model", Presence::Required);
  const std::string model_type = type_of(model, in_model);
  if (model_type != "BPE") PPO_FAIL(in_model, ": field 'type' must be \"BPE\", got \"", model_type, "\"");
  require_value(model, "dropout", json(nullptr), in_model);
  require_value(model, "byte_fallback", json(false), in_model);
  require_value(model, "unk_token", json(nullptr), in_model);
  require_value(model, "continuing_subword_prefix", json(""), in_model);
  require_value(model, "end_of_word_suffix", json(""), in_model);
  impl->ignore_merges = read_bool(model, in_model, "ignore_merges", false);
  const json& vocab_json = read_object(model, in_model, "vocab", Presence::Required);
  std::unordered_map<std::string, int32_t> vocab;
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it)
    vocab[it.key()] = read_token_id(vocab_json, in_model + ": field 'vocab'", it.key());
  impl->set_vocab(vocab);
  if (!has_field(model, "merges") || !model.at("merges").is_array()) PPO_FAIL(in_model, ": field 'merges' must be an array");
  int32_t rank = 0;
  for (const json& m : model.at("merges")) {
    if (m.is_string()) {  // "left right"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        PPO_FAIL(in_model, ": merge ", rank, " '", s, "' is not two tokens separated by one space");
      impl->add_merge(s.substr(0, space), s.substr(space + 1), rank);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // [left, right]
      impl->add_merge(m[0].get<std::string>(), m[1].get<std::string>(), rank);
    } else {
      PPO_FAIL(in_model, ": merge ", rank, " is neither \"a b\" nor [a, b]: ", excerpt(m));
    }
    ++rank;
  }

  // normalizer: none or NFC.
  if (has_field(doc, "normalizer")) {
    const json& normalizer = read_object(doc, where, "normalizer", Presence::Required);
    if (type_of(normalizer, where + ": normalizer") != "NFC")
      PPO_FAIL(where, ": normalizer ", excerpt(normalizer), " is not supported (only NFC)");
    impl->nfc = true;
  }

  // pre_tokenizer: ByteLevel(use_regex=true), or Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)].
  const std::string in_pre = where + ": pre_tokenizer";
  const json& pre = read_object(doc, where, "pre_tokenizer", Presence::Required);
  auto check_byte_level = [&](const json& p, bool use_regex) {
    if (type_of(p, in_pre) != "ByteLevel" || read_bool(p, in_pre, "use_regex", true) != use_regex)
      PPO_FAIL(in_pre, " ", excerpt(p), " is not supported (expected ByteLevel with use_regex=",
               use_regex ? "true" : "false", ")");
    require_value(p, "add_prefix_space", json(false), in_pre + " ByteLevel");
  };
  const std::string pre_type = type_of(pre, in_pre);
  const json no_steps = json::array();
  const json& steps = pre_type == "Sequence" && has_field(pre, "pretokenizers") ? pre.at("pretokenizers") : no_steps;
  if (pre_type == "ByteLevel") {
    check_byte_level(pre, true);
    impl->compile_regex(kGpt2Pattern);
  } else if (steps.is_array() && steps.size() == 2 && steps[0].is_object()) {
    const json& split = steps[0];
    const std::string in_split = in_pre + " Split";
    const json& pattern = read_object(split, in_split, "pattern", Presence::Optional);
    if (type_of(split, in_split) != "Split" || !has_field(pattern, "Regex") ||
        read_string(split, in_split, "behavior", "") != "Isolated" || read_bool(split, in_split, "invert", false))
      PPO_FAIL(in_split, " ", excerpt(split), " is not supported (expected a Regex pattern, Isolated, invert false)");
    check_byte_level(steps[1], false);
    impl->compile_regex(read_string(pattern, in_split + ": pattern", "Regex", ""));
  } else {
    PPO_FAIL(in_pre, " ", excerpt(pre), " is not supported");
  }

  const json& decoder = read_object(doc, where, "decoder", Presence::Optional);
  if (type_of(decoder, where + ": decoder") != "ByteLevel")
    PPO_FAIL(where, ": decoder ", excerpt(decoder), " is not supported (only ByteLevel)");

  if (has_field(doc, "added_tokens")) {
    const json& added = doc.at("added_tokens");
    if (!added.is_array()) PPO_FAIL(where, ": field 'added_tokens' must be an array, got ", excerpt(added));
    for (size_t i = 0; i < added.size(); ++i) {
      const json& t = added[i];
      const std::string at = where + ": added_tokens[" + std::to_string(i) + "]";
      if (!t.is_object()) PPO_FAIL(at, ": expected an object {id, content, ...}, got ", excerpt(t));
      const std::string content = read_string(t, at, "content", "");
      for (const char* flag : {"single_word", "lstrip", "rstrip"})
        if (read_bool(t, at, flag, false)) PPO_FAIL(at, ": added token '", content, "' sets ", flag, ", which is not supported");
      const bool special = read_bool(t, at, "special", false);
      impl->add_token(content, read_token_id(t, at, "id"), special, read_bool(t, at, "normalized", !special));
    }
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe) {
  auto impl = std::make_unique<Impl>();
  impl->source = encoder_json + " + " + vocab_bpe;
  const json encoder = read_json_file(encoder_json);
  if (!encoder.is_object()) PPO_FAIL(encoder_json, ": not an object {token: id}");
  std::unordered_map<std::string, int32_t> vocab;
  for (auto it = encoder.begin(); it != encoder.end(); ++it) vocab[it.key()] = read_token_id(encoder, encoder_json, it.key());
  impl->set_vocab(vocab);

  std::ifstream in = open_input_file(vocab_bpe);
  std::string line;
  int32_t rank = 0;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      PPO_FAIL(vocab_bpe, ":", line_no, ": '", line, "' is not two tokens separated by one space");
    impl->add_merge(line.substr(0, space), line.substr(space + 1), rank++);
  }
  impl->compile_regex(kGpt2Pattern);
  auto eot = vocab.find("<|endoftext|>");
  if (eot == vocab.end()) PPO_FAIL(encoder_json, ": no <|endoftext|> token");
  impl->add_token(eot->first, eot->second, true, false);
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const { return impl_->encode(text); }

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || size_t(id) >= impl_->id_known.size() || !impl_->id_known[size_t(id)])
      PPO_FAIL(impl_->source, ": decode: unknown token id ", id, " at position ", i);
    out += impl_->id_bytes[size_t(id)];
  }
  return out;
}

int32_t Tokenizer::vocab_size() const { return int32_t(impl_->id_known.size()); }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  for (const Impl::AddedToken& t : impl_->added)
    if (t.content == token) return t.id;
  auto it = impl_->vocab.find(std::string(token));
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->id_special.size() && impl_->id_special[size_t(id)];
}

}  // namespace ppo::io
