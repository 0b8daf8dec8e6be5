// `re:` patterns over module and tensor names (--targets, --ignore, a checkpoint's `ignore` list
// and config-group `targets`), matched the way compressed-tensors and vLLM match them: Python's
// re.match, i.e. anchored at the start of the name and not at its end.
//
// One engine with guarantees for all of them: PCRE2 (UTF-8, Unicode character classes like
// Python's str patterns), with a match limit, a depth limit and a heap limit, so that no pattern
// and no name can overflow the stack or backtrack for ever. Names longer than kMaxNameBytes are
// refused. Every problem is an InputError that says where the pattern came from.
#pragma once

#include <string>

#include "libquant/error.h"

namespace qt {

// Longest module/tensor name a pattern is matched against (Hugging Face names are < 200 bytes).
inline constexpr size_t kMaxNameBytes = 4096;

// Where a pattern came from, for error messages: the error kind (Usage for the command line,
// BadFile for a checkpoint's config), the file (empty for the command line) and the setting
// ("--ignore", "quantization_config.ignore", ...).
struct PatternSource {
  InputError::Kind kind = InputError::Kind::Usage;
  std::string file;
  std::string setting;
};

// Empty if `regex` (the text after "re:") compiles; otherwise PCRE2's message with the offset,
// e.g. "missing closing parenthesis at offset 1".
std::string regex_problem(const std::string& regex);

// Python re.match(regex, name) is not None. Throws InputError (src.kind) when the pattern is
// invalid, when the name is longer than kMaxNameBytes, or when the match hits a limit.
bool regex_match_start(const std::string& regex, const std::string& name, const PatternSource& src);

}  // namespace qt
