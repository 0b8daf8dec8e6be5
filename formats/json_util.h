// JSON helpers shared by the format readers and writers: strict parsing with file/line/column
// errors and duplicate-key detection, UTF-8 validation, and dumping the way Python's
// `json.dumps(obj, indent=2, sort_keys=True) + "\n"` does (transformers / compressed-tensors).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace qt {

// Byte offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no overlong
// forms, no surrogates U+D800..U+DFFF, nothing above U+10FFFF); nullopt if `s` is valid.
std::optional<size_t> find_invalid_utf8(std::string_view s);

// Describes a duplicate key for an error message. `parents` are the keys of the enclosing
// objects from the outermost inwards (an array level appears as "[]"); `key` is the repeated key.
using DuplicateKeyDescriber =
    std::function<std::string(const std::vector<std::string>& parents, const std::string& key)>;

struct JsonParseOptions {
  // nlohmann (like Python's json) silently keeps the last of two equal keys; when true, a
  // duplicate key anywhere is an error instead.
  bool reject_duplicate_keys = true;
  // Formats the duplicate-key error (default: "duplicate key 'k' in object 'a.b'").
  DuplicateKeyDescriber describe_duplicate;
  // Deeper nesting is refused (objects + arrays), which also bounds the work per byte.
  size_t max_depth = 256;
  // Word used in messages ("header", "config"): "<what> is not valid JSON: ...".
  std::string what = "file";
};

// Parses `text`. Throws InputError(BadFile, file) naming the line and column of a syntax error
// (as the parser reports them), a duplicate key, or excessive nesting.
nlohmann::json parse_json_strict(std::string_view text, const std::string& file,
                                 const JsonParseOptions& options = {});

// Python `json.dumps(j, indent=2, sort_keys=True) + "\n"` (ensure_ascii: non-ASCII characters
// are written as lower-case \uXXXX escapes, like Python's default). nlohmann::json objects keep
// their keys sorted by bytes, which for UTF-8 equals Python's code-point order.
std::string dump_json_python_style(const nlohmann::json& j);

// Name of a JSON value's type for messages ("string", "number", "object", ...).
std::string json_type_name(const nlohmann::json& j);

// `s` with bytes outside printable ASCII shown as \xNN (for quoting untrusted text in messages).
std::string printable(std::string_view s, size_t max_len = 200);

}  // namespace qt
