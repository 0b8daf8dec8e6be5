#include "formats/json_util.h"

#include <set>

#include "libquant/error.h"

namespace qt {

std::optional<size_t> find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }        // C0/C1 would be overlong
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }   // F5.. would exceed U+10FFFF
    else return i;
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return i;  // overlong
    if (cp >= 0xD800 && cp <= 0xDFFF) return i;                           // surrogate
    if (cp > 0x10FFFF) return i;
    i += len;
  }
  return std::nullopt;
}

std::string printable(std::string_view s, size_t max_len) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > max_len) out += "...";
  return out;
}

std::string json_type_name(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::boolean: return "boolean";
    case nlohmann::json::value_t::string: return "string";
    case nlohmann::json::value_t::object: return "object";
    case nlohmann::json::value_t::array: return "array";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "integer";
    case nlohmann::json::value_t::number_float: return "number";
    default: return "value";
  }
}

namespace {

// Thrown from inside the parser callback; converted to InputError by parse_json_strict.
struct StrictnessViolation {
  std::string message;
};

std::string default_duplicate(const std::vector<std::string>& parents, const std::string& key) {
  std::string where;
  for (const auto& p : parents) where += (where.empty() ? "" : ".") + p;
  return "duplicate key '" + printable(key) + "'" +
         (where.empty() ? std::string(" in the top-level object") : " in object '" + where + "'");
}

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, const std::string& file,
                                 const JsonParseOptions& options) {
  using json = nlohmann::json;
  // One frame per open object/array: the keys seen so far (objects only) and the last key, so a
  // duplicate can be reported with its path. The parser callback is the only hook nlohmann gives
  // before it merges equal keys into one.
  struct Frame {
    bool is_object;
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<Frame> frames;
  auto cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (frames.size() >= options.max_depth)
          throw StrictnessViolation{"nesting deeper than " + std::to_string(options.max_depth) +
                                    " levels"};
        frames.push_back({event == json::parse_event_t::object_start, {}, {}});
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case json::parse_event_t::key: {
        Frame& f = frames.back();
        std::string key = parsed.get<std::string>();
        if (options.reject_duplicate_keys && !f.keys.insert(key).second) {
          std::vector<std::string> parents;
          for (size_t i = 0; i + 1 < frames.size(); ++i)
            parents.push_back(frames[i].is_object ? frames[i].last_key : "[]");
          throw StrictnessViolation{options.describe_duplicate
                                        ? options.describe_duplicate(parents, key)
                                        : default_duplicate(parents, key)};
        }
        f.last_key = std::move(key);
        break;
      }
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.data(), text.data() + text.size(), cb, /*allow_exceptions=*/true);
  } catch (const StrictnessViolation& v) {
    throw InputError(InputError::Kind::BadFile, file, "", options.what + " " + v.message);
  } catch (const json::out_of_range& e) {
    // Thrown for a number beyond double range (e.g. 1e400); found by the header fuzzer.
    std::string msg = e.what();
    const size_t tag_end = msg.find("] ");
    if (tag_end != std::string::npos) msg = msg.substr(tag_end + 2);
    throw InputError(InputError::Kind::BadFile, file, "",
                     options.what + " is not valid JSON: " + printable(msg, 400));
  } catch (const json::parse_error& e) {
    // e.what() = "[json.exception.parse_error.101] parse error at line L, column C: ..."; keep
    // the part after the tag. The "last read" excerpt may hold arbitrary bytes: make it printable.
    std::string msg = e.what();
    const size_t colon = msg.find(": ");
    if (msg.find("parse error") != std::string::npos && colon != std::string::npos) msg = msg.substr(colon + 2);
    // nlohmann reports the position after the last character it read, which is often the next
    // line; point at the last non-blank character read instead (where a human looks).
    size_t pos = e.byte > 0 ? static_cast<size_t>(e.byte) - 1 : 0;
    if (pos >= text.size()) pos = text.empty() ? 0 : text.size() - 1;
    while (pos > 0 && (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\r' || text[pos] == '\t')) --pos;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos && i < text.size(); ++i) {
      if (text[i] == '\n') { ++line; col = 1; } else { ++col; }
    }
    throw InputError(InputError::Kind::BadFile, file, "",
                     options.what + " is not valid JSON: parse error at line " + std::to_string(line) +
                         ", column " + std::to_string(col) + ": " + printable(msg, 400));
  }
}

std::string dump_json_python_style(const nlohmann::json& j) {
  // indent 2 with ", "/": " separators as Python's json.dumps(indent=2) writes them (items end a
  // line so no trailing space is emitted); ensure_ascii=true like Python's default.
  return j.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
}

}  // namespace qt
