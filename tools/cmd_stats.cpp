// `qtool stats merge A.zst B.zst ... -o ALL.zst`: the statistics of calibration shards
// (quantize --calib-shard K/N --save-stats) merged exactly -> calib::merge_stats_to_file
// (calib/stats_merge.h).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "calib/stats_merge.h"
#include "tools/commands.h"

namespace qt {
namespace {

struct MergeOpts {
  std::vector<std::string> inputs;
  std::string out;
  bool json = false;
};

int run_merge(const MergeOpts& o) {
  const calib::MergedStats m = calib::merge_stats_to_file(o.inputs, o.out);
  if (o.json) {
    nlohmann::json j;
    j["output"] = o.out;
    j["shards"] = m.shards;
    j["samples"] = m.prov.num_samples;
    j["tokens"] = m.prov.tokens;
    j["observer"] = m.stats.observer;
    j["data_source"] = m.prov.data_source;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    spdlog::info("merged {} shards ({} samples, {} tokens from {}, observer {}) into {}", m.shards, m.prov.num_samples,
                 m.prov.tokens, m.prov.data_source, m.stats.observer, o.out);
  }
  return 0;
}

}  // namespace

void register_stats(CLI::App& app, RunFn& run) {
  auto* sub = app.add_subcommand("stats", "Calibration statistics files: merge the shards of a calibration run on several machines");
  sub->require_subcommand(1);
  auto o = std::make_shared<MergeOpts>();
  auto* merge = sub->add_subcommand(
      "merge", "Merge the statistics of every shard K/N of one calibration (quantize --calib-shard K/N --save-stats) "
               "exactly into the statistics of a single run, for quantize --stats");
  merge->add_option("FILES", o->inputs, "The N shard statistics files, in any order")->required();
  merge->add_option("-o,--output", o->out, "Merged statistics file (zstd)")->required();
  merge->add_flag("--json", o->json, "Machine-readable summary on stdout");
  merge->callback([&run, o] { run = [o] { return run_merge(*o); }; });
}

}  // namespace qt
