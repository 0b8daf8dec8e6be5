#include "tools/cli_util.h"

#include <algorithm>
#include <cstdint>

#include <unistd.h>

#include <cctype>
#include <cstdio>

#include "libquant/error.h"

namespace qt {

uint64_t parse_size(const std::string& s, const std::string& option) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) throw InputError(InputError::Kind::Usage, "", "", option + ": not a size: '" + s + "'", "e.g. 5GB, 500MB, 2GiB");
  double v = std::stod(s.substr(0, i));
  std::string unit = s.substr(i);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB") mult = 1e3; else if (unit == "MB") mult = 1e6; else if (unit == "GB") mult = 1e9;
  else if (unit == "TB") mult = 1e12;
  else if (unit == "KIB") mult = 1024.0; else if (unit == "MIB") mult = 1048576.0;
  else if (unit == "GIB") mult = 1073741824.0;
  else throw InputError(InputError::Kind::Usage, "", "", option + ": unknown unit '" + s.substr(i) + "'", "B, KB, MB, GB, KiB, MiB, GiB");
  if (v * mult < 1) throw InputError(InputError::Kind::Usage, "", "", option + ": size must be positive");
  return static_cast<uint64_t>(v * mult);
}

namespace { std::string g_cmdline; }
std::string joined_command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`*?;&|<>()") == std::string::npos;
    if (i) s += ' ';
    if (plain) s += a;
    else {
      s += '\'';
      for (char c : a) { if (c == '\'') s += "'\\''"; else s += c; }
      s += '\'';
    }
  }
  return s;
}
void set_command_line(int argc, char** argv) { g_cmdline = joined_command_line(argc, argv); }
const std::string& command_line() { return g_cmdline; }

ProgressBar::ProgressBar(std::string label, uint64_t total)
    : label_(std::move(label)), total_(total), active_(::isatty(2) != 0), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(uint64_t done) {
  done_ = done;
  if (!active_ || total_ == 0) return;
  const double frac = static_cast<double>(done_) / static_cast<double>(total_);
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = frac > 0 ? el * (1 - frac) / frac : 0;
  const int width = 30, filled = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r%s [%s] %3.0f%%  %.0fs elapsed, ETA %.0fs   ", label_.c_str(), bar.c_str(),
               frac * 100, el, eta);
  std::fflush(stderr);
}
void ProgressBar::clear() {
  if (active_) std::fprintf(stderr, "\r\033[K");
}
void ProgressBar::finish() {
  if (active_) { clear(); std::fflush(stderr); }
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  // Optimal string alignment distance (Damerau-Levenshtein without repeated edits of a substring).
  auto distance = [](const std::string& a, const std::string& b) {
    const size_t n = a.size(), m = b.size();
    std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
    for (size_t i = 0; i <= n; ++i) d[i][0] = i;
    for (size_t j = 0; j <= m; ++j) d[0][j] = j;
    for (size_t i = 1; i <= n; ++i)
      for (size_t j = 1; j <= m; ++j) {
        const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    return d[n][m];
  };
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t dd = distance(word, c);
    if (dd < best_d) best_d = dd, best = c;
  }
  return best_d * 3 <= std::max<size_t>(word.size(), 1) ? best : "";
}

CLI::Validator one_of(std::vector<std::string> names, std::string what) {
  return CLI::Validator(
      [names = std::move(names), what = std::move(what)](std::string& v) -> std::string {
        for (const auto& n : names)
          if (n == v) return "";
        std::string list;
        for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
        const std::string near = closest_match(v, names);
        return "unknown " + what + " '" + v + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?") +
               " (one of: " + list + ")";
      },
      "", what);
}

}  // namespace qt
