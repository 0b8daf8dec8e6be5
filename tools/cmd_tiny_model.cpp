#include <CLI/CLI.hpp>

#include "tools/commands.h"

namespace qt {
void register_tiny_model(CLI::App& app, RunFn& run) {
  auto* sub = app.add_subcommand("tiny-model", "(work in progress)");
  sub->callback([&run] { run = [] { return 0; }; });
}
}  // namespace qt
