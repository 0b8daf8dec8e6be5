#include "formats/name_pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <map>
#include <memory>
#include <mutex>

#include "formats/json_util.h"

namespace qt {
namespace {

// Limits per match. Real patterns on real names need a few hundred steps; a backtracking bomb
// like re:(a+)+b on a 40-byte name needs billions. The depth limit bounds nested backtracking,
// the heap limit (KiB) bounds the memory PCRE2 uses for it (PCRE2 >= 10.30 never recurses on
// the C stack).
constexpr uint32_t kMatchLimit = 1'000'000;
constexpr uint32_t kDepthLimit = 10'000;
constexpr uint32_t kHeapLimitKiB = 64 * 1024;

std::string pcre2_text(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof buf);
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buf), n);
}

struct Compiled {
  pcre2_code* code = nullptr;
  std::string problem;
  ~Compiled() { if (code) pcre2_code_free(code); }
};

std::shared_ptr<const Compiled> compile(const std::string& regex) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Compiled>> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(regex); it != cache.end()) return it->second;
  auto c = std::make_shared<Compiled>();
  int err = 0;
  PCRE2_SIZE off = 0;
  c->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
  if (!c->code) c->problem = pcre2_text(err) + " at offset " + std::to_string(off);
  if (cache.size() > 4096) cache.clear();  // patterns come from one command line and one config
  cache.emplace(regex, c);
  return c;
}

std::string quoted(const std::string& s) { return "'" + printable(s) + "'"; }

}  // namespace

std::string regex_problem(const std::string& regex) { return compile(regex)->problem; }

bool regex_match_start(const std::string& regex, const std::string& name, const PatternSource& src) {
  const std::string what = src.setting + " " + quoted("re:" + regex);
  auto c = compile(regex);
  if (!c->code)
    throw InputError(src.kind, src.file, "", what + " is not a valid regular expression: " + c->problem);
  if (name.size() > kMaxNameBytes)
    throw InputError(src.kind, src.file, "",
                     "module name " + quoted(name) + " is " + std::to_string(name.size()) +
                         " bytes long; qtool matches names of at most " + std::to_string(kMaxNameBytes) +
                         " bytes against " + what);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(c->code, nullptr);
  pcre2_match_context* mc = pcre2_match_context_create(nullptr);
  if (!md || !mc) {
    if (md) pcre2_match_data_free(md);
    if (mc) pcre2_match_context_free(mc);
    throw std::bad_alloc();
  }
  pcre2_set_match_limit(mc, kMatchLimit);
  pcre2_set_depth_limit(mc, kDepthLimit);
  pcre2_set_heap_limit(mc, kHeapLimitKiB);
  const int rc = pcre2_match(c->code, reinterpret_cast<PCRE2_SPTR>(name.data()), name.size(), 0,
                             PCRE2_ANCHORED, md, mc);
  pcre2_match_data_free(md);
  pcre2_match_context_free(mc);
  if (rc >= 0) return true;
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
    throw InputError(src.kind, src.file, "",
                     what + " needs too much backtracking on module name " + quoted(name) + " (" +
                         pcre2_text(rc) + "); simplify the pattern");
  throw InputError(src.kind, src.file, "", what + " cannot be matched against module name " + quoted(name) +
                                               ": " + pcre2_text(rc));
}

}  // namespace qt
