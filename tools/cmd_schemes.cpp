#include <CLI/CLI.hpp>

#include "tools/commands.h"

namespace qt {
void register_schemes(CLI::App& app, RunFn& run) {
  auto* sub = app.add_subcommand("schemes", "(work in progress)");
  sub->callback([&run] { run = [] { return 0; }; });
}
}  // namespace qt
