// qtool entry point: builds the CLI from the command table, runs the chosen subcommand, and maps
// errors to exit codes. This is the only place that catches qt::InputError.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>

#include "build_info.h"
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
  s += std::string("features: openmp=") + QTOOL_BUILD_OPENMP + " cuda=" + QTOOL_BUILD_CUDA + " isa=" + qt::isa_name(qt::active_isa()) + " (run-time; bf16 GEMM: " + qt::gemm_path_name(true) + ")\n";
  s += std::string("build: ") + QTOOL_BUILD_TYPE + ", " + QTOOL_COMPILER;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qtool: quantize Hugging Face checkpoints to FP8/INT8 for vLLM, inspect and verify them"};
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
    std::fprintf(stderr, "qtool: error: %s\n", e.what());
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
    std::fprintf(stderr, "qtool: error: %s\n", e.what());
    return qt::exit_code_for(e.kind());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "qtool: error: out of memory\n");
    return qt::kExitIo;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qtool: internal error: %s\n", e.what());
    return qt::kExitInternal;
  }
}
