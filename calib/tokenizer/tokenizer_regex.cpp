// PCRE2 wrapper for tokenizer.json patterns.
//
// `tokenizers` compiles its patterns with Oniguruma (Ruby-style syntax, UTF-8). PCRE2 compiled
// with UTF|UCP agrees with it on the constructs the target tokenizers use (\p{..} classes,
// Unicode \s, (?i:..) groups, lookahead, counted repeats, possessive ?+ *+ ++). Constructs whose
// meaning differs between the two engines are refused here rather than matched differently:
//   X{n,m}+       Oniguruma: (X{n,m})+ ; PCRE2: possessive
//   \w \W \b \B   Oniguruma: letters, marks, Nd, Pc ; PCRE2 10.42: letters, all numbers, '_'
//   \h \H         Oniguruma: hex digit ; PCRE2: horizontal space
//   (?m) (?s)     Oniguruma: m = dot matches newline, no s ; PCRE2: m = multiline, s = dotall
// and \s / \S are translated (see onig_to_pcre2).
// `^` and `$` are line anchors in Oniguruma's default syntax, so patterns compile MULTILINE with
// LF newlines to match.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <cstdio>
#include <cctype>
#include <string>

#include "calib/tokenizer/tokenizer_detail.h"
#include "libquant/error.h"

namespace qt::calib::tok {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof buf);
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buf), n);
}

// The part of onig_newer_ranges() this PCRE2 does not know: all of it for a Unicode 14.0 PCRE2;
// for a newer PCRE2, the code points whose ICU age is later than PCRE2's Unicode version (or
// that ICU does not know either).
const std::vector<CategoryRange>& newer_than_pcre2() {
  static const std::vector<CategoryRange> list = [] {
    auto parse = [](const char* v) {
      int major = 0, minor = 0;
      std::sscanf(v, "%d.%d", &major, &minor);
      return major * 100 + minor;
    };
    char buf[64] = {};
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, buf);
    const int pcre2_version = parse(buf);
    std::vector<CategoryRange> out;
    for (const auto& r : onig_newer_ranges()) {
      if (pcre2_version <= parse(onig_table_base_unicode())) {
        out.push_back(r);
        continue;
      }
      for (char32_t c = r.first; c <= r.last; ++c) {
        UVersionInfo age;
        u_charAge(static_cast<UChar32>(c), age);
        const int v = age[0] * 100 + age[1];
        if (v != 0 && v <= pcre2_version) continue;
        if (!out.empty() && out.back().last + 1 == c && out.back().category == r.category) out.back().last = c;
        else out.push_back({c, c, r.category});
      }
    }
    return out;
  }();
  return list;
}

// General-category names usable in \p{..} and their ICU masks (0: not a general category).
uint32_t category_mask(const std::string& name) {
  static const std::pair<const char*, uint32_t> kNames[] = {
      {"L", U_GC_L_MASK},   {"LC", U_GC_LC_MASK}, {"Lu", U_GC_LU_MASK}, {"Ll", U_GC_LL_MASK}, {"Lt", U_GC_LT_MASK},
      {"Lm", U_GC_LM_MASK}, {"Lo", U_GC_LO_MASK}, {"M", U_GC_M_MASK},   {"Mn", U_GC_MN_MASK}, {"Mc", U_GC_MC_MASK},
      {"Me", U_GC_ME_MASK}, {"N", U_GC_N_MASK},   {"Nd", U_GC_ND_MASK}, {"Nl", U_GC_NL_MASK}, {"No", U_GC_NO_MASK},
      {"P", U_GC_P_MASK},   {"Pc", U_GC_PC_MASK}, {"Pd", U_GC_PD_MASK}, {"Ps", U_GC_PS_MASK}, {"Pe", U_GC_PE_MASK},
      {"Pi", U_GC_PI_MASK}, {"Pf", U_GC_PF_MASK}, {"Po", U_GC_PO_MASK}, {"S", U_GC_S_MASK},   {"Sm", U_GC_SM_MASK},
      {"Sc", U_GC_SC_MASK}, {"Sk", U_GC_SK_MASK}, {"So", U_GC_SO_MASK}, {"Z", U_GC_Z_MASK},   {"Zs", U_GC_ZS_MASK},
      {"Zl", U_GC_ZL_MASK}, {"Zp", U_GC_ZP_MASK}, {"C", U_GC_C_MASK},   {"Cc", U_GC_CC_MASK}, {"Cf", U_GC_CF_MASK},
      {"Cs", U_GC_CS_MASK}, {"Co", U_GC_CO_MASK}, {"Cn", U_GC_CN_MASK},
  };
  for (const auto& [n, m] : kNames)
    if (name == n) return m;
  return 0;
}

// The code points of `mask` that PCRE2 does not know yet, as class items "\\x{..}-\\x{..}".
std::string newer_class_items(uint32_t mask) {
  std::string out;
  for (const auto& r : newer_than_pcre2()) {
    if (!(U_MASK(r.category) & mask)) continue;
    char buf[40];
    if (r.first == r.last) std::snprintf(buf, sizeof buf, "\\x{%X}", static_cast<unsigned>(r.first));
    else std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", static_cast<unsigned>(r.first), static_cast<unsigned>(r.last));
    out += buf;
  }
  return out;
}

// Translates an Oniguruma pattern for PCRE2:
//  * `\s` / `\S` become `\p{White_Space}` / `\P{White_Space}` (inside classes too): Oniguruma's
//    Unicode \s is exactly White_Space, while PCRE2's \s also takes U+180E.
//  * `\p{X}` for a general category X (and `\d`) gets the code points Oniguruma puts in X but
//    PCRE2's older Unicode tables do not know (e.g. `\p{S}` -> `[\p{S}\x{1FABF}...]`).
// Constructs whose meaning differs and cannot be translated simply (see the file comment)
// leave `problem` non-empty.
std::string onig_to_pcre2(const std::string& p, std::string& problem) {
  const size_t n = p.size();
  std::string out;
  out.reserve(n + 32);
  bool in_class = false;
  auto escape = [&](size_t& i) {  // p[i] == '\\'; copies/translates one escape, advances i
    if (i + 1 >= n) {
      out += p[i++];
      return;
    }
    const char e = p[i + 1];
    if (e == 's' || e == 'S') {
      out += (e == 's') ? "\\p{White_Space}" : "\\P{White_Space}";
      i += 2;
      return;
    }
    // General categories (and \d = \p{Nd}): add the code points PCRE2's older Unicode tables
    // leave unassigned (e.g. Unicode 15 emoji for \p{S}).
    std::string cat;
    bool negated = false;
    size_t after = i + 2;
    if (e == 'd' || e == 'D') {
      cat = "Nd";
      negated = e == 'D';
    } else if ((e == 'p' || e == 'P') && i + 2 < n && p[i + 2] == '{') {
      const size_t close = p.find('}', i + 3);
      if (close != std::string::npos) {
        cat = p.substr(i + 3, close - i - 3);
        negated = e == 'P';
        if (!cat.empty() && cat[0] == '^') {
          cat.erase(0, 1);
          negated = !negated;
        }
        after = close + 1;
      }
    }
    if (const uint32_t mask = cat.empty() ? 0 : category_mask(cat)) {
      const std::string base = std::string(negated ? "\\P{" : "\\p{") + cat + "}";
      const std::string extra = newer_class_items(mask);
      if (extra.empty()) {
        out += base;
      } else if (mask & U_GC_CN_MASK) {
        // PCRE2 counts the new code points as unassigned; removing them is not expressible.
        if (problem.empty()) problem = "\\p{" + cat + "} (PCRE2's Unicode tables are older than Oniguruma's)";
        out += base;
      } else if (!in_class) {
        out += std::string(negated ? "[^" : "[") + "\\p{" + cat + "}" + extra + "]";
      } else if (!negated) {
        out += base + extra;
      } else {
        if (problem.empty()) problem = "\\P{" + cat + "} inside a character class (PCRE2's Unicode tables are older)";
        out += base;
      }
      i = after;
      return;
    }
    if (e == 'w' || e == 'W' || e == 'b' || e == 'B' || e == 'h' || e == 'H') {
      if (problem.empty()) problem = std::string("\\") + e;
    }
    out.append(p, i, 2);
    i += 2;
    // \p{..}, \x{..}, \o{..}, \N{..}: copy the braces so '}' is not taken for a repeat.
    if (i < n && p[i] == '{' && (e == 'p' || e == 'P' || e == 'x' || e == 'o' || e == 'N')) {
      const size_t close = p.find('}', i);
      const size_t stop = (close == std::string::npos) ? n : close + 1;
      out.append(p, i, stop - i);
      i = stop;
    }
  };
  size_t i = 0;
  while (i < n) {
    const char c = p[i];
    if (c == '\\') {
      escape(i);
      continue;
    }
    if (c == '[') {
      // Character class up to its closing ']' (a ']' right after '[' or '[^' is literal).
      out += p[i++];
      if (i < n && p[i] == '^') out += p[i++];
      if (i < n && p[i] == ']') out += p[i++];
      in_class = true;
      int depth = 1;
      while (i < n && depth > 0) {
        if (p[i] == '\\') {
          escape(i);
          continue;
        }
        if (p[i] == '[') ++depth;
        if (p[i] == ']') --depth;
        out += p[i++];
      }
      in_class = false;
      continue;
    }
    if (c == '(' && i + 1 < n && p[i + 1] == '?') {
      // Inline options (?flags) or (?flags:...): m and s mean different things in the engines.
      size_t j = i + 2;
      while (j < n && (std::isalpha(static_cast<unsigned char>(p[j])) || p[j] == '-')) ++j;
      if (j > i + 2 && j < n && (p[j] == ')' || p[j] == ':')) {
        for (size_t k = i + 2; k < j; ++k)
          if ((p[k] == 'm' || p[k] == 's') && problem.empty())
            problem = "inline option (?" + p.substr(i + 2, j - i - 2) + ")";
      }
      out += p[i++];
      continue;
    }
    if (c == '{') {
      // A counted repeat {n}, {n,}, {,m} or {n,m} followed by '+'.
      size_t j = i + 1;
      bool digits = false, comma = false;
      while (j < n && (std::isdigit(static_cast<unsigned char>(p[j])) || (p[j] == ',' && !comma))) {
        if (p[j] == ',') comma = true; else digits = true;
        ++j;
      }
      if (digits && j < n && p[j] == '}' && j + 1 < n && p[j + 1] == '+' && problem.empty())
        problem = "counted repeat followed by '+' (" + p.substr(i, j + 2 - i) + ")";
    }
    out += p[i++];
  }
  return out;
}

// Per-thread match state: match data, and a JIT stack that can grow to 16 MiB (the default
// 32 KiB is too small for long runs of whitespace under `\s+(?!\S)`).
struct MatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  MatchState() {
    md = pcre2_match_data_create(32, nullptr);
    mc = pcre2_match_context_create(nullptr);
    js = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    QT_ASSERT(md && mc && js);
    pcre2_jit_stack_assign(mc, nullptr, js);
  }
  ~MatchState() {
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
  }
};

MatchState& match_state() {
  thread_local MatchState st;
  return st;
}

}  // namespace

Regex::Regex(const std::string& pattern, bool literal, const std::string& file, const std::string& where)
    : file_(file), where_(where) {
  if (pattern.empty())
    throw InputError(InputError::Kind::Unsupported, file, "", where + ": empty pattern");
  std::string translated = pattern;
  if (!literal) {
    std::string problem;
    translated = onig_to_pcre2(pattern, problem);
    if (!problem.empty())
      throw InputError(InputError::Kind::Unsupported, file, "",
                       where + ": unsupported regex construct " + problem +
                           " (Oniguruma, which `tokenizers` uses, and PCRE2 read it differently)");
  }
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  // PCRE2_LITERAL allows UTF but not UCP (no classes in a literal anyway).
  const uint32_t opts = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), opts,
                                   &err, &off, cc);
  pcre2_compile_context_free(cc);
  if (code == nullptr)
    throw InputError(InputError::Kind::Unsupported, file, "",
                     where + ": regex does not compile (PCRE2, at byte " + std::to_string(off) +
                         "): " + pcre2_message(err));
  // JIT is an optimization only: if it is unavailable pcre2_match interprets the same pattern.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_iter(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchState& st = match_state();
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
  const size_t n = s.size();
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= n) {
    // The caller validated the UTF-8 once; re-checking on every call would make this O(n^2).
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), n, last_end,
                               PCRE2_NO_UTF_CHECK, st.md, st.mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0)
      throw InputError(InputError::Kind::BadValue, file_, "",
                       where_ + ": regex matching failed: " + pcre2_message(rc));
    const size_t ms = ov[0], me = ov[1];
    if (ms == me && have_last && last_match_end == me) {
      // An empty match right after the previous match: step one character and search again.
      last_end += (last_end < n) ? utf8_seq_len(static_cast<unsigned char>(s[last_end])) : 1;
      continue;
    }
    last_end = me;
    have_last = true;
    last_match_end = me;
    out.emplace_back(ms, me);
  }
}

std::vector<Seg> Regex::find_matches(std::string_view s, bool invert) const {
  std::vector<Seg> segs;
  if (s.empty()) {
    segs.push_back({0, 0, invert});
    return segs;
  }
  thread_local std::vector<std::pair<size_t, size_t>> spans;
  spans.clear();
  find_iter(s, spans);
  size_t prev = 0;
  for (const auto& [a, b] : spans) {
    if (prev != a) segs.push_back({prev, a, invert});
    segs.push_back({a, b, !invert});
    prev = b;
  }
  if (prev != s.size()) segs.push_back({prev, s.size(), invert});
  return segs;
}

void split_piece(const Piece& p, const std::vector<Seg>& segs, SplitBehavior behavior,
                 std::vector<Piece>& out) {
  // (start, end, remove) triples per NormalizedString::split.
  struct Range {
    size_t start, end;
    bool remove;
  };
  std::vector<Range> r;
  r.reserve(segs.size());
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (const auto& s : segs) r.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::Removed:
      for (const auto& s : segs) r.push_back({s.start, s.end, s.is_match});
      break;
    case SplitBehavior::Contiguous: {
      // Adjacent pieces of the same kind merge (matches with matches, gaps with gaps).
      bool prev_match = false;
      for (const auto& s : segs) {
        if (s.is_match == prev_match && !r.empty()) r.back().end = s.end;
        else r.push_back({s.start, s.end, false});
        prev_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (const auto& s : segs) {
        if (s.is_match && !prev_match && !r.empty()) r.back().end = s.end;
        else r.push_back({s.start, s.end, false});
        prev_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      // Same rule walking backwards: a match joins the piece that follows it.
      bool prev_match = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !prev_match && !r.empty()) r.back().start = it->start;
        else r.push_back({it->start, it->end, false});
        prev_match = it->is_match;
      }
      std::reverse(r.begin(), r.end());
      break;
    }
  }
  for (const auto& x : r) {
    if (x.remove || x.end == x.start) continue;
    out.push_back(Piece{p.text.substr(x.start, x.end - x.start), p.at_origin && x.start == 0});
  }
}

}  // namespace qt::calib::tok
