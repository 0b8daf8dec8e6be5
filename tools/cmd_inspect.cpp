#include <CLI/CLI.hpp>

#include "tools/commands.h"

namespace qt {
void register_inspect(CLI::App& app, RunFn& run) {
  auto* sub = app.add_subcommand("inspect", "(work in progress)");
  sub->callback([&run] { run = [] { return 0; }; });
}
}  // namespace qt
