#include <CLI/CLI.hpp>

#include "tools/commands.h"

namespace qt {
void register_quantize(CLI::App& app, RunFn& run) {
  auto* sub = app.add_subcommand("quantize", "(work in progress)");
  sub->callback([&run] { run = [] { return 0; }; });
}
}  // namespace qt
