// `qtool convert INPUT -o OUT`: GGUF -> Hugging Face folder; legacy fp8 <-> compressed-tensors;
// --dequantize back to a dense checkpoint. The work is in formats/gguf_to_hf.h and
// formats/convert_quantized.h; this file picks the mode and prints.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "formats/convert_quantized.h"
#include "formats/gguf_to_hf.h"
#include "formats/model_folder.h"
#include "libquant/error.h"
#include "libquant/parallel.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace qt {
namespace {
namespace fs = std::filesystem;

struct Opts {
  std::string input, out, dtype = "bf16", format, scale_dtype, max_shard = "5GB";
  bool dequantize = false, overwrite = false, json = false, no_hash = false;
  int threads = 0;
  // Whether the user gave these (to refuse options that mean nothing in the chosen mode).
  bool dtype_given = false, scale_dtype_given = false;
};

DType dtype_of(const std::string& s) {
  return s == "f16" ? DType::F16 : s == "f32" ? DType::F32 : DType::BF16;
}

bool is_gguf_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f.gcount() == 4 && std::string(magic, 4) == "GGUF";
}

int run_convert(const Opts& o) {
  set_default_threads(o.threads);
  auto usage = [](const std::string& why) { return InputError(InputError::Kind::Usage, "", "", why); };
  ConvertJob job;
  job.output_dir = o.out;
  job.overwrite = o.overwrite;
  job.max_shard_bytes = parse_size(o.max_shard, "--max-shard-size");
  job.hash_inputs = !o.no_hash;
  job.command_line = command_line();

  std::error_code ec;
  if (!fs::exists(o.input, ec))
    throw InputError(InputError::Kind::Missing, o.input, "", "no such file or folder");
  const bool gguf = is_gguf_file(o.input);
  std::string mode;
  if (gguf) {
    if (o.dequantize || !o.format.empty() || o.scale_dtype_given)
      throw usage("a GGUF input converts to a Hugging Face folder: --dequantize, --format and --scale-dtype do not apply");
    mode = "gguf-to-hf";
  } else if (fs::is_regular_file(o.input, ec)) {
    throw InputError(InputError::Kind::Unsupported, o.input, "", "not a GGUF file (no GGUF magic) and not a model folder");
  } else if (o.dequantize) {
    if (!o.format.empty() || o.scale_dtype_given) throw usage("--dequantize writes a dense checkpoint: --format and --scale-dtype do not apply");
    mode = "dequantize";
  } else if (!o.format.empty()) {
    if (o.dtype_given) throw usage("--format converts losslessly and keeps every dtype: --dtype does not apply");
    mode = "layout";
  } else {
    throw usage("for a model folder, say what to do: --format compressed-tensors|legacy-fp8 (lossless layout conversion) or --dequantize");
  }

  std::unique_ptr<ProgressBar> pbar;
  job.on_tensor = [&](const ConvertProgress& p) {
    if (!pbar) pbar = std::make_unique<ProgressBar>("convert", p.total);
    pbar->clear();
    spdlog::info("[{}/{}] {} -> {} {} {} -> {}  {}", p.index, p.total, p.source, p.name, p.shape, p.from, p.to,
                 human_bytes(p.out_bytes));
    pbar->update(p.index);
  };
  const auto t0 = std::chrono::steady_clock::now();
  ConvertSummary s;
  if (mode == "gguf-to-hf") {
    GgufFile g = GgufFile::open(o.input);
    s = convert_gguf_to_hf(g, dtype_of(o.dtype), job);
  } else {
    ModelFolder m = ModelFolder::open(o.input);
    if (mode == "dequantize") {
      s = dequantize_model(m, dtype_of(o.dtype), job);
    } else {
      std::optional<DType> sd;
      if (o.scale_dtype_given) sd = dtype_of(o.scale_dtype);
      s = convert_quant_layout(m, o.format == "legacy-fp8" ? OutputFormat::LegacyFp8 : OutputFormat::CompressedTensors, sd, job);
    }
  }
  if (pbar) pbar->finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& n : s.output_notes) spdlog::info("{}", n);
  for (const auto& n : s.notes) spdlog::info("note: {}", n);
  if (o.json) {
    nlohmann::json j;
    j["output"] = o.out;
    j["mode"] = mode;
    j["tensors_in"] = s.tensors_in;
    j["tensors_out"] = s.tensors_out;
    j["shards"] = s.shards;
    j["output_bytes"] = s.output_bytes;
    j["files"] = s.output_files;
    j["notes"] = s.notes;
    j["seconds"] = secs;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    spdlog::info("done: {} -> {} tensors, {} in {} shard(s), {:.1f} s; wrote {}", s.tensors_in, s.tensors_out,
                 human_bytes(s.output_bytes), s.shards, secs, o.out);
  }
  return 0;
}

}  // namespace

void register_convert(CLI::App& app, RunFn& run) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("convert",
                                 "Convert a GGUF model to a Hugging Face folder, between legacy fp8 and compressed-tensors, or dequantize");
  sub->add_option("INPUT", o->input, "A .gguf file (Llama architecture), or a quantized model folder")->required();
  sub->add_option("-o,--output", o->out, "Output folder (must not exist, or be empty)")->required();
  auto* dt = sub->add_option("--dtype", o->dtype, "Weight dtype of a GGUF conversion or --dequantize (RNE from f32)")
                 ->capture_default_str()->check(CLI::IsMember({"bf16", "f16", "f32"}));
  sub->add_flag("--dequantize", o->dequantize,
                "Write a dense checkpoint (quantized folder input: every scheme qtool writes, FP4 / MX as "
                "compressed-tensors decompresses them, and legacy fp8)");
  sub->add_option("--format", o->format, "Lossless layout conversion of an FP8 folder: compressed-tensors or legacy-fp8")
      ->check(CLI::IsMember({"compressed-tensors", "legacy-fp8"}));
  auto* sd = sub->add_option("--scale-dtype", o->scale_dtype,
                             "Scale dtype for --format (default: f32 for legacy-fp8, the source's for compressed-tensors); "
                             "refused unless every scale is exact in it")
                 ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  sub->add_option("--max-shard-size", o->max_shard, "Largest output shard")->capture_default_str();
  sub->add_option("-j,--threads", o->threads, "Threads (0 = all cores)")->capture_default_str();
  sub->add_flag("--overwrite", o->overwrite, "Replace an existing output folder (only after success)");
  sub->add_flag("--no-hash", o->no_hash, "Skip the sha256 of the inputs in the manifest");
  sub->add_flag("--json", o->json, "Machine-readable summary on stdout");
  sub->callback([&run, o, dt, sd] {
    o->dtype_given = dt->count() > 0;
    o->scale_dtype_given = sd->count() > 0;
    run = [o] { return run_convert(*o); };
  });
}

}  // namespace qt
