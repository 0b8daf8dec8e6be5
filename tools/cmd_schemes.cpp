// `qtool schemes`: the schemes table (the same table drives --scheme parsing and help).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "libquant/schemes.h"
#include "tools/commands.h"

namespace qt {

void register_schemes(CLI::App& app, RunFn& run) {
  auto* sub = app.add_subcommand("schemes", "List the quantization schemes qtool writes");
  auto json_out = std::make_shared<bool>(false);
  auto md_out = std::make_shared<bool>(false);
  sub->add_flag("--json", *json_out, "Machine-readable output");
  sub->add_flag("--markdown", *md_out, "A Markdown table (used to generate the man pages)");
  sub->callback([&run, json_out, md_out] {
    run = [json_out, md_out] {
      if (*md_out) {
        std::printf("| scheme | weights | input activations | format | calibration |\n|---|---|---|---|---|\n");
        for (const auto& s : all_schemes())
          std::printf("| %s | %s | %s | %s | %s |\n", s.name, describe_args(s.weights).c_str(),
                      s.input ? describe_args(*s.input).c_str() : "none (weight-only)",
                      std::string(ct_format_name(s.format)).c_str(), s.needs_calibration ? "yes" : "no");
        return 0;
      }
      if (*json_out) {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& s : all_schemes())
          a.push_back({{"name", s.name}, {"summary", s.summary},
                       {"weights", describe_args(s.weights)},
                       {"input_activations", s.input ? describe_args(*s.input) : "none"},
                       {"format", std::string(ct_format_name(s.format))},
                       {"needs_calibration", s.needs_calibration},
                       {"legacy_fp8", s.legacy_fp8}, {"vllm", s.vllm_scheme}});
        std::printf("%s\n", a.dump(2).c_str());
        return 0;
      }
      // Column widths from the longest entry of each column.
      int wn = 6, ww = 7, wi = 17, wf = 6;
      for (const auto& s : all_schemes()) {
        wn = std::max(wn, static_cast<int>(std::strlen(s.name)));
        ww = std::max(ww, static_cast<int>(describe_args(s.weights).size()));
        wi = std::max(wi, static_cast<int>((s.input ? describe_args(*s.input) : std::string("none (weight-only)")).size()));
        wf = std::max(wf, static_cast<int>(ct_format_name(s.format).size()));
      }
      std::printf("%-*s %-*s %-*s %-*s %s\n", wn, "SCHEME", ww, "WEIGHTS", wi, "INPUT ACTIVATIONS", wf, "FORMAT",
                  "CALIBRATION");
      for (const auto& s : all_schemes())
        std::printf("%-*s %-*s %-*s %-*s %s\n", wn, s.name, ww, describe_args(s.weights).c_str(), wi,
                    s.input ? describe_args(*s.input).c_str() : "none (weight-only)", wf,
                    std::string(ct_format_name(s.format)).c_str(), s.needs_calibration ? "yes" : "no");
      return 0;
    };
  });
}

}  // namespace qt
