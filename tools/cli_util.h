// Small helpers shared by the subcommands: size parsing, TTY progress (human_bytes is in
// libquant/tensor_view.h, beside shape_string).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "libquant/tensor_view.h"

namespace qt {

// The candidate nearest to `word` by edit distance (insertions, deletions, substitutions and
// swaps of neighbours each count 1), or "" when even the nearest needs more than a third of the
// word changed (then a suggestion would only confuse).
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);
// A CLI11 validator accepting exactly `names`; a miss says "unknown <what> 'x'; did you mean 'y'?
// (one of: a, b, c)".
CLI::Validator one_of(std::vector<std::string> names, std::string what);
// "5GB", "500MB", "2GiB", "123" -> bytes; throws InputError(Usage) on garbage.
uint64_t parse_size(const std::string& s, const std::string& option);
// The command line as typed, shell-quoted where needed (for the manifest).
std::string joined_command_line(int argc, char** argv);
void set_command_line(int argc, char** argv);
const std::string& command_line();

// A one-line progress bar with ETA on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total);
  void update(uint64_t done);
  void finish();
  bool active() const { return active_; }
  // Erases the bar so that a log line can be printed, then redraws on the next update.
  void clear();
 private:
  std::string label_;
  uint64_t total_, done_ = 0;
  bool active_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace qt
