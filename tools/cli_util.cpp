#include "tools/cli_util.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>

#include "libquant/error.h"

namespace qt {

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024.0 && u < 4) { v /= 1024.0; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

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

}  // namespace qt
