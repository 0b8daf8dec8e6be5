// The subcommand table. Each tools/cmd_<name>.cpp defines one register function that adds its
// subcommand (options, help, defaults) to the CLI11 app and sets `run` to the code to execute.
#pragma once

#include <functional>

namespace CLI { class App; }

namespace qt {

// Filled in by the chosen subcommand's callback; main() calls it after parsing.
// Returns the process exit code; throws InputError for bad input.
using RunFn = std::function<int()>;

struct CommandEntry {
  const char* name;
  void (*register_fn)(CLI::App& app, RunFn& run);
};

void register_convert(CLI::App& app, RunFn& run);
void register_inspect(CLI::App& app, RunFn& run);
void register_quantize(CLI::App& app, RunFn& run);
void register_schemes(CLI::App& app, RunFn& run);
void register_stats(CLI::App& app, RunFn& run);
void register_tiny_model(CLI::App& app, RunFn& run);
void register_tokenize(CLI::App& app, RunFn& run);
void register_verify(CLI::App& app, RunFn& run);

// The table main() walks, in the order `qtool --help` lists them.
inline constexpr CommandEntry kCommands[] = {
    {"quantize", register_quantize},
    {"inspect", register_inspect},
    {"verify", register_verify},
    {"schemes", register_schemes},
    {"stats", register_stats},
    {"convert", register_convert},
    {"tiny-model", register_tiny_model},
    {"tokenize", register_tokenize},
};

}  // namespace qt
