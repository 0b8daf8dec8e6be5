// `qtool tokenize`: encode text with a model's tokenizer.json and print the ids as JSON. Useful to
// check what the calibration engine will feed the model (and to compare with `tokenizers`).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "calib/tokenizer/tokenizer.h"
#include "formats/input_file.h"
#include "libquant/error.h"
#include "tools/commands.h"
#include "tools/exit_codes.h"

namespace qt {

namespace {

struct TokenizeOptions {
  std::string model;  // model folder or tokenizer.json
  std::string text;
  std::string file;
  bool no_special = false;
  bool json = false;  // accepted for uniformity: the output is always JSON
};

std::string read_text_file(const std::string& path) { return read_input_file(path); }

int run_tokenize(const TokenizeOptions& o) {
  std::error_code ec;
  const calib::Tokenizer tok = std::filesystem::is_directory(o.model, ec) ? calib::Tokenizer::from_dir(o.model)
                                                                   : calib::Tokenizer::from_file(o.model);
  for (const auto& w : tok.warnings()) spdlog::warn("qtool: warning: {}: {}", tok.source(), w);
  const bool from_file = !o.file.empty();
  const std::string text = from_file ? read_text_file(o.file) : o.text;
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, !o.no_special);
  } catch (const InputError& e) {
    // The library names the text "<text>"; name the file the user gave instead.
    if (from_file && e.kind() == InputError::Kind::BadValue)
      throw InputError(e.kind(), o.file, "", e.problem(), e.expected(), e.got());
    throw;
  }
  const nlohmann::json out = {{"ids", ids}, {"count", ids.size()}};
  std::printf("%s\n", out.dump().c_str());
  return kExitOk;
}

}  // namespace

void register_tokenize(CLI::App& app, RunFn& run) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* sub = app.add_subcommand("tokenize", "Encode text with a model's tokenizer.json; print {\"ids\":[...],\"count\":N}");
  sub->add_option("MODEL", o->model, "Model folder (holding tokenizer.json) or a tokenizer.json file")->required();
  auto* input = sub->add_option_group("input", "What to encode (exactly one)");
  input->add_option("--text", o->text, "Text to encode (UTF-8)");
  input->add_option("--file", o->file, "File whose whole content (UTF-8) is encoded");
  input->require_option(1);
  sub->add_flag("--no-special", o->no_special, "Do not add the post-processor's special tokens (BOS/EOS)");
  sub->add_flag("--json", o->json, "JSON output (the only output format of this command; accepted like every command's --json)");
  sub->callback([&run, o] { run = [o] { return run_tokenize(*o); }; });
}

}  // namespace qt
