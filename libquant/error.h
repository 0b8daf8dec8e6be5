// qtool's two error classes.
//
//  * Bad input (a malformed file, a missing shard, an unsupported option, a NaN weight) is the
//    user's problem to fix: it is reported with qt::InputError, which carries the file, the
//    tensor (where one is involved), what was expected and what was found. `main` catches it
//    once and maps its Kind to a documented exit code (tools/exit_codes.h). Library code never
//    prints and never exits.
//  * A broken invariant (a bug in qtool) is checked with QT_ASSERT and aborts with file:line.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace qt {

class InputError : public std::runtime_error {
 public:
  // What category of problem; each maps to one exit code (see tools/exit_codes.h, man qtool(1)).
  enum class Kind {
    BadFile,      // a file exists but its contents are malformed (header, JSON, offsets, sizes)
    Missing,      // a file or tensor that must exist does not (missing shard, LFS pointer, ...)
    Unsupported,  // well-formed input that qtool does not handle (architecture, dtype, scheme)
    BadValue,     // tensor values qtool refuses (NaN/Inf weights, zero statistics, ...)
    Usage,        // a command-line combination that cannot work (output inside input, ...)
    Io,           // the operating system refused (disk full, permission denied, ...)
    CheckFailed,  // a verification gate failed (verify); not an error in qtool or the input
  };

  InputError(Kind kind, std::string file, std::string tensor, std::string what_wrong,
             std::string expected = {}, std::string got = {})
      : std::runtime_error(compose(file, tensor, what_wrong, expected, got)),
        kind_(kind), file_(std::move(file)), tensor_(std::move(tensor)),
        problem_(std::move(what_wrong)), expected_(std::move(expected)), got_(std::move(got)) {}

  Kind kind() const { return kind_; }
  const std::string& file() const { return file_; }
  const std::string& tensor() const { return tensor_; }
  const std::string& problem() const { return problem_; }
  const std::string& expected() const { return expected_; }
  const std::string& got() const { return got_; }

  // "FILE: tensor 'NAME': PROBLEM (expected E, got G)" -- parts left empty are omitted.
  static std::string compose(const std::string& file, const std::string& tensor,
                             const std::string& problem, const std::string& expected,
                             const std::string& got) {
    std::string s;
    if (!file.empty()) s += file + ": ";
    if (!tensor.empty()) s += "tensor '" + tensor + "': ";
    s += problem;
    if (!expected.empty() || !got.empty()) {
      s += " (";
      if (!expected.empty()) s += "expected " + expected;
      if (!expected.empty() && !got.empty()) s += ", ";
      if (!got.empty()) s += "got " + got;
      s += ")";
    }
    return s;
  }

 private:
  Kind kind_;
  std::string file_, tensor_, problem_, expected_, got_;
};

[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "qtool: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace qt

// Always on (also in release builds): these guard invariants, not input.
#define QT_ASSERT(expr) ((expr) ? (void)0 : ::qt::assert_fail(#expr, __FILE__, __LINE__))
