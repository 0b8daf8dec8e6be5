// qtool entry point: builds the CLI from the command table, runs the chosen subcommand, and maps
// errors to exit codes. This is the only place that catches qt::InputError.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <exception>

#include "build_info.h"
#include "formats/run_cleanup.h"
#include "libquant/gemm.h"
#include "libquant/parallel.h"
#include "libquant/cpu_isa.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/exit_codes.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

std::string version_text() {
  std::string s = std::string("qtool ") + QTOOL_VERSION_STRING + "\n";
  s += std::string("features: openmp=") + QTOOL_BUILD_OPENMP + " cuda=" + QTOOL_BUILD_CUDA + " onednn=" + QTOOL_BUILD_ONEDNN + " isa=" + qt::isa_name(qt::active_isa()) + " (run-time; bf16 GEMM: " + qt::gemm_path_name(true) + ")\n";
  s += "amx: " + qt::amx_status().detail + "\n";
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  s += std::string("threads: ") + std::to_string(qt::resolve_threads(0)) + " by default (-j to change), OMP_WAIT_POLICY=" +
       (wait ? wait : "(unset)") + "\n";
  s += std::string("build: ") + QTOOL_BUILD_TYPE + ", " + QTOOL_COMPILER;
  return s;
}


// OpenMP threads wait passively between parallel regions unless the user says otherwise.
// libgomp's default is to spin for a while after each region; on a machine where other work
// runs, the spinning threads take the cores that the working thread needs: measured here, a
// calibrated quantize of the tiny model took 10-12 s with spinning against ~1 s passive or -j1
// (bench/RESULTS.md, "Threads on a busy host"). libgomp reads OMP_WAIT_POLICY once, in its own
// library constructor, before main() runs (and glibc re-installs the original environment
// after any earlier hook), so the only way to change the default is to set the variable and
// execute ourselves again, once. An OMP_WAIT_POLICY already in the environment is respected;
// if the re-exec fails the run simply continues with libgomp's default.
void default_omp_wait_policy(char** argv) {
#ifdef _OPENMP
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 0) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure
#else
  (void)argv;
#endif
}

// An InputError's message with control bytes (a NUL or newline inside a tensor name read from a
// file, an escape sequence) shown as \xNN: one line on the terminal, nothing cut off at a NUL
// (what() is a C string, so the message is rebuilt from its parts).
void print_error(const qt::InputError& e) {
  static const char* kHex = "0123456789abcdef";
  const std::string full = qt::InputError::compose(e.file(), e.tensor(), e.problem(), e.expected(), e.got());
  std::string out;
  for (const char ch : full) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  std::fprintf(stderr, "qtool: error: %s\n", out.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  default_omp_wait_policy(argv);  // may re-execute qtool: before anything else
  // Before any thread starts: SIGINT/SIGTERM/SIGHUP remove what this run created, a truncated
  // input is a clean I/O error (formats/run_cleanup.h).
  qt::cleanup::install_interrupt_handling();
  CLI::App app{"qtool: quantize Hugging Face checkpoints to FP8/INT8/INT4/FP4 for vLLM, inspect and verify them"};
  app.set_version_flag("-V,--version", version_text());
  app.require_subcommand(1);
  app.fallthrough();
  app.get_formatter()->column_width(34);
  int verbosity = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbosity, "More log output (repeat for debug)");
  app.add_flag("-q,--quiet", quiet, "Only errors on stderr");

  qt::set_command_line(argc, argv);
  qt::RunFn run;
  for (const auto& entry : qt::kCommands) entry.register_fn(app, run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);  // prints help/version/usage error
    return (rc == 0) ? qt::kExitOk : qt::kExitUsage;
  } catch (const qt::InputError& e) {
    print_error(e);
    return qt::exit_code_for(e.kind());
  }

  // Logs (one line per tensor, warnings, the summary) go to stderr; stdout is for results/--json.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("qtool"));
  spdlog::set_pattern("%v");
  spdlog::set_level(quiet ? spdlog::level::err
                          : verbosity >= 1 ? spdlog::level::debug : spdlog::level::info);
  try {
    return run ? run() : qt::kExitUsage;
  } catch (const qt::InputError& e) {
    print_error(e);
    return qt::exit_code_for(e.kind());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "qtool: error: out of memory\n");
    return qt::kExitIo;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qtool: internal error: %s\n", e.what());
    return qt::kExitInternal;
  }
}
