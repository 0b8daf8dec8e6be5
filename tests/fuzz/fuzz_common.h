// Shared by the libFuzzer targets: the one rule every target checks is that a parser of outside
// input either accepts it or throws qt::InputError. Any other exception, a crash, a hang or a
// sanitizer report is a bug. nlohmann's own exceptions count as bugs too: qtool's parsers must
// turn every malformed input into an InputError naming the file.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "libquant/error.h"

namespace qt::fuzz {

template <typename F>
int expect_input_error_or_success(F&& f) {
  try {
    f();
  } catch (const InputError&) {
  }
  return 0;
}

// A file in the per-process temporary folder holding `data` (parsers that take a path).
inline std::string write_temp(const std::string& name, const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/qtool-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) std::abort();
    return std::string(tmpl);
  }();
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

}  // namespace qt::fuzz
