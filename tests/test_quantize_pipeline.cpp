// Tests for the engine's quantize flow as a library: calib/quantize_pipeline (run_quantize,
// preflight_output, static_input_scale) and calib/quantize (quantize_model). The CLI tests
// (test_cli.cpp) cover the same paths through the binary; these call the functions directly on the
// seeded tiny model (formats/tiny_model.h). The weight numerics themselves are checked against
// compressed-tensors' own bytes in test_ct_goldens.cpp; here the question is whether the pipeline
// writes what the plan says, where it says, and nothing else.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/quant_plan.h"
#include "calib/quantize.h"
#include "calib/quantize_pipeline.h"
#include "calib/stats_file.h"
#include "libquant/cpu_isa.h"
#include "libquant/kernels/gemm_onednn.h"
#include "formats/model_folder.h"
#include "formats/safetensors.h"
#include "formats/direct_writer.h"
#include "formats/safetensors_writer.h"
#include "formats/sha256.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "libquant/microscale.h"
#include "libquant/parallel.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt::calib {
namespace {

namespace fs = std::filesystem;
using Kind = InputError::Kind;

struct PlannedRun {
  QuantPlan plan;
  QuantizeSummary summary;
};

PlannedRun quantize_tiny(const std::string& model_dir, const std::string& out, const char* scheme,
                  uint64_t max_shard = 5'000'000'000, const ActivationStats* stats = nullptr) {
  const ModelFolder m = ModelFolder::open(model_dir);
  PlanOptions po;
  po.scheme = find_scheme(scheme);
  PlannedRun r;
  r.plan = build_quant_plan(m.checkpoint().tensors(), po, m.dir());
  QuantizeJob job;
  job.output_dir = out;
  job.max_shard_bytes = max_shard;
  job.hash_inputs = false;
  job.command_line = "test";
  job.stats = stats;
  preflight_output(m, r.plan, job);
  r.summary = run_quantize(m, r.plan, job);
  return r;
}

std::string tiny(const test::TempDir& d, DType dt = DType::BF16) {
  TinyModelOptions o;
  o.dtype = dt;
  write_tiny_model(d.str("m"), o);
  return d.str("m");
}

// A request to quantize the model in model_dir with the scheme into output; the rest as defaulted.
QuantizeRequest request(const std::string& model_dir, const std::string& output, const char* scheme) {
  QuantizeRequest r;
  r.model = model_dir;
  r.output = output;
  r.scheme = find_scheme(scheme);
  return r;
}

TEST(QuantizePipeline, WritesExactlyThePlannedTensorsAndCopiesKeptOnesByteForByte) {
  test::TempDir d;
  const std::string in = tiny(d);
  const PlannedRun r = quantize_tiny(in, d.str("out"), "fp8-dynamic");
  const Checkpoint out = Checkpoint::open(d.str("out"));
  const Checkpoint src = Checkpoint::open(in);
  ASSERT_EQ(out.tensors().size(), r.plan.outputs.size());
  for (const OutputTensor& o : r.plan.outputs) {
    const TensorView* t = out.find(o.name);
    ASSERT_NE(t, nullptr) << o.name;
    EXPECT_EQ(t->dtype, o.dtype) << o.name;
    EXPECT_EQ(t->shape, o.shape) << o.name;
    if (o.kind == OutputTensor::Kind::Copy) {
      const TensorView* s = src.find(o.source);
      ASSERT_NE(s, nullptr);
      EXPECT_TRUE(std::equal(s->bytes.begin(), s->bytes.end(), t->bytes.begin(), t->bytes.end())) << o.name;
    }
  }
  EXPECT_EQ(r.summary.tensors_quantized, r.plan.quantized_modules.size());
  EXPECT_EQ(r.summary.output_bytes, r.plan.output_bytes);
  EXPECT_FALSE(fs::exists(d.str("out") + "/model.safetensors.index.json"));  // one shard: no index
}

TEST(QuantizePipeline, QuantizedCodesAndScalesAreLibquantsForThatTensor) {
  test::TempDir d;
  const std::string in = tiny(d);
  quantize_tiny(in, d.str("out"), "int8-dynamic");
  const Checkpoint out = Checkpoint::open(d.str("out"));
  const Checkpoint src = Checkpoint::open(in);
  const std::string name = "model.layers.1.mlp.down_proj";
  const TensorView* w = src.find(name + ".weight");
  ASSERT_NE(w, nullptr);
  const QuantizedWeight q = quantize_weight(*w, find_scheme("int8-dynamic")->weights);
  const TensorView* codes = out.find(name + ".weight");
  const TensorView* scale = out.find(name + ".weight_scale");
  ASSERT_TRUE(codes && scale);
  EXPECT_TRUE(std::equal(q.codes.begin(), q.codes.end(), codes->bytes.begin(), codes->bytes.end()));
  EXPECT_TRUE(std::equal(q.scale_bytes.begin(), q.scale_bytes.end(), scale->bytes.begin(), scale->bytes.end()));
}

TEST(QuantizePipeline, Nvfp4FusedSetsShareTheGlobalScaleOfTheirLargestMember) {
  test::TempDir d;
  const std::string in = tiny(d);
  const PlannedRun r = quantize_tiny(in, d.str("out"), "nvfp4a16");
  const Checkpoint out = Checkpoint::open(d.str("out"));
  const Checkpoint src = Checkpoint::open(in);
  ASSERT_EQ(out.tensors().size(), r.plan.outputs.size());
  auto gs_of = [&](const std::string& m) {
    const TensorView* t = out.find(m + ".weight_global_scale");
    EXPECT_NE(t, nullptr) << m;
    float v = 0;
    if (t) std::memcpy(&v, t->bytes.data(), 4);
    return v;
  };
  for (const std::vector<std::string>& set :
       std::vector<std::vector<std::string>>{{"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"}}) {
    const std::string parent = set[0] == "q_proj" ? "model.layers.0.self_attn." : "model.layers.0.mlp.";
    float amax = 0;
    for (const auto& m : set) amax = std::max(amax, tensor_absmax(*src.find(parent + m + ".weight")));
    for (const auto& m : set) {
      EXPECT_EQ(gs_of(parent + m), nvfp4_global_scale(amax, DType::BF16)) << m;
      // Codes and group scales are libquant's for that shared global scale.
      QuantizeOptions qo;
      qo.group_amax_override = amax;
      const QuantizedWeight q = quantize_weight(*src.find(parent + m + ".weight"), find_scheme("nvfp4a16")->weights, qo);
      const TensorView* packed = out.find(parent + m + ".weight_packed");
      const TensorView* scale = out.find(parent + m + ".weight_scale");
      ASSERT_TRUE(packed && scale) << m;
      EXPECT_EQ(packed->dtype, DType::U8);
      EXPECT_EQ(scale->dtype, DType::F8_E4M3);
      const auto want = pack_e2m1(q.codes.data(), q.shape[0], q.shape[1]);
      EXPECT_TRUE(std::equal(want.begin(), want.end(), packed->bytes.begin(), packed->bytes.end())) << m;
      EXPECT_TRUE(std::equal(q.scale_bytes.begin(), q.scale_bytes.end(), scale->bytes.begin(), scale->bytes.end())) << m;
    }
  }
  // down_proj is in no fused set: its own global scale.
  const std::string down = "model.layers.0.mlp.down_proj";
  EXPECT_EQ(gs_of(down), nvfp4_global_scale(tensor_absmax(*src.find(down + ".weight")), DType::BF16));
  const nlohmann::json cfg = nlohmann::json::parse(test::read_text(d.path() / "out" / "config.json"));
  EXPECT_EQ(cfg["quantization_config"]["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"], "tensor_group");
}

TEST(QuantizePipeline, MxSchemesWriteE8M0ScalesAndNoGlobalScale) {
  for (const char* scheme : {"mxfp4a16", "mxfp4", "mxfp8"}) {
    test::TempDir d;
    const std::string in = tiny(d, DType::F16);
    const PlannedRun r = quantize_tiny(in, d.str("out"), scheme);
    const Checkpoint out = Checkpoint::open(d.str("out"));
    ASSERT_EQ(out.tensors().size(), r.plan.outputs.size()) << scheme;
    const std::string m = "model.layers.1.self_attn.o_proj";
    const TensorView* scale = out.find(m + ".weight_scale");
    ASSERT_NE(scale, nullptr) << scheme;
    EXPECT_EQ(scale->dtype, DType::U8) << scheme;
    EXPECT_EQ(scale->shape, (std::vector<int64_t>{128, 4})) << scheme;
    EXPECT_EQ(out.find(m + ".weight_global_scale"), nullptr) << scheme;
    EXPECT_NE(out.find(std::string(m) + (std::string(scheme) == "mxfp8" ? ".weight" : ".weight_packed")), nullptr);
  }
}

TEST(QuantizePipeline, SmallShardCapSplitsTheOutputAndTheIndexNamesEveryTensorOnce) {
  test::TempDir d;
  const std::string in = tiny(d, DType::F32);
  const PlannedRun r = quantize_tiny(in, d.str("out"), "w4a16", 100'000);
  EXPECT_GT(r.summary.shards, 1u);
  const nlohmann::json idx = nlohmann::json::parse(test::read_text(d.path() / "out" / "model.safetensors.index.json"));
  const auto& map = idx.at("weight_map");
  EXPECT_EQ(map.size(), r.plan.outputs.size());
  std::set<std::string> files;
  for (const OutputTensor& o : r.plan.outputs) {
    ASSERT_TRUE(map.contains(o.name)) << o.name;
    files.insert(map[o.name].get<std::string>());
  }
  EXPECT_EQ(files.size(), r.summary.shards);
  for (const auto& f : files) {
    const SafetensorsFile sf = SafetensorsFile::open(d.str("out") + "/" + f);
    for (const auto& t : sf.tensors()) EXPECT_EQ(map[t.name], f) << t.name;
  }
}

TEST(QuantizePipeline, OutputIsByteIdenticalAtOneAndTwoThreads) {
  test::TempDir d;
  const std::string in = tiny(d);
  set_default_threads(1);
  quantize_tiny(in, d.str("one"), "fp8-block");
  set_default_threads(2);
  quantize_tiny(in, d.str("two"), "fp8-block");
  for (const char* f : {"model.safetensors", "config.json", "qtool_manifest.json"})
    EXPECT_EQ(test::read_file(d.path() / "one" / f), test::read_file(d.path() / "two" / f)) << f;
}

TEST(QuantizePipeline, KeptTensorsCopiedByTheKernelOrWrittenAndDirectIoGiveTheSameFilesAndInputHashes) {
  // Unchanged tensors go through copy_file_range from the input shard; the fallback (the kernel
  // copying nothing, or stopping after its first chunk) must give the same bytes, and the
  // manifest's sha256 of each input shard is the file's (two input shards, two output shards).
  test::TempDir d;
  TinyModelOptions o;
  o.num_shards = 2;
  write_tiny_model(d.str("m"), o);
  auto run = [&](const std::string& out, SafetensorsWriter::KernelCopy mode) {
    SafetensorsWriter::kernel_copy_for_tests(mode);
    const ModelFolder m = ModelFolder::open(d.str("m"));
    PlanOptions po;
    po.scheme = find_scheme("fp8-dynamic");
    const QuantPlan plan = build_quant_plan(m.checkpoint().tensors(), po, m.dir());
    QuantizeJob job;
    job.output_dir = out;
    job.max_shard_bytes = 300'000;
    job.hash_inputs = true;
    job.command_line = "test";
    preflight_output(m, plan, job);
    run_quantize(m, plan, job);
    SafetensorsWriter::kernel_copy_for_tests(SafetensorsWriter::KernelCopy::Auto);
  };
  run(d.str("auto"), SafetensorsWriter::KernelCopy::Auto);
  run(d.str("off"), SafetensorsWriter::KernelCopy::Off);
  run(d.str("part"), SafetensorsWriter::KernelCopy::FailAfterFirstChunk);
  // The same through direct I/O (formats/direct_writer.h; forced for these small shards): kept
  // tensors then come from the input shard by pread, or from the mapping after a "failed" read.
  DirectWriter::mode_for_tests(DirectWriter::Mode::Always);
  run(d.str("direct"), SafetensorsWriter::KernelCopy::Auto);
  run(d.str("direct-part"), SafetensorsWriter::KernelCopy::FailAfterFirstChunk);
  DirectWriter::mode_for_tests(DirectWriter::Mode::Auto);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(d.path() / "off")) files.push_back(e.path().filename().string());
  EXPECT_GE(std::count_if(files.begin(), files.end(), [](const std::string& f) { return f.ends_with(".safetensors"); }), 2);
  for (const auto& f : files) {
    const auto want = test::read_file(d.path() / "off" / f);
    for (const char* way : {"auto", "part", "direct", "direct-part"})
      EXPECT_EQ(test::read_file(d.path() / way / f), want) << way << "/" << f;
  }
  const nlohmann::json man = nlohmann::json::parse(test::read_text(d.path() / "auto" / "qtool_manifest.json"));
  ASSERT_EQ(man.at("inputs").size(), 2u);
  for (const auto& in : man.at("inputs"))
    EXPECT_EQ(in.at("sha256"), sha256_file(d.str("m") + "/" + in.at("file").get<std::string>())) << in.dump();
  // Every kept tensor holds its input bytes (the copy read the right file range).
  const Checkpoint out = Checkpoint::open(d.str("auto")), src = Checkpoint::open(d.str("m"));
  int kept = 0;
  for (const TensorView& t : src.tensors()) {
    const TensorView* w = out.find(t.name);
    if (w == nullptr) continue;  // quantized: written as .weight with another dtype, or renamed
    if (w->dtype != t.dtype) continue;
    ++kept;
    EXPECT_TRUE(std::equal(t.bytes.begin(), t.bytes.end(), w->bytes.begin(), w->bytes.end())) << t.name;
  }
  EXPECT_GT(kept, 3);
}

TEST(QuantizePipeline, ConfigAndManifestDescribeTheRun) {
  test::TempDir d;
  const std::string in = tiny(d);
  const PlannedRun r = quantize_tiny(in, d.str("out"), "w8a16");
  const nlohmann::json cfg = nlohmann::json::parse(test::read_text(d.path() / "out" / "config.json"));
  const auto& qc = cfg.at("quantization_config");
  EXPECT_EQ(qc.at("quant_method"), "compressed-tensors");
  EXPECT_EQ(qc.at("format"), "pack-quantized");
  EXPECT_EQ(qc.at("ignore"), r.plan.ignore_written);
  const nlohmann::json man = nlohmann::json::parse(test::read_text(d.path() / "out" / "qtool_manifest.json"));
  EXPECT_EQ(man.at("tool"), "qtool");
  EXPECT_EQ(man.at("command"), "test");
  EXPECT_EQ(man.at("scheme"), "w8a16");
  EXPECT_EQ(man.at("quantized_modules"), r.plan.quantized_modules.size());
  ASSERT_EQ(man.at("inputs").size(), 1u);
  EXPECT_EQ(man["inputs"][0].at("file"), "model.safetensors");
  EXPECT_TRUE(man["inputs"][0].at("sha256").is_null());  // hash_inputs = false
  // The tokenizer files are carried along, the manifest is listed once.
  EXPECT_TRUE(fs::exists(d.path() / "out" / "tokenizer.json"));
  EXPECT_EQ(std::count(r.summary.output_files.begin(), r.summary.output_files.end(), "qtool_manifest.json"), 1);
}

TEST(QuantizePipeline, AStaticSchemeWithoutAStatisticNamesTheInputScaleAndLeavesNothing) {
  test::TempDir d;
  const std::string in = tiny(d);
  ActivationStats empty;
  try {
    quantize_tiny(in, d.str("out"), "fp8-static", 5'000'000'000, &empty);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), Kind::BadValue);
    // The first quantized module in file order (safetensors sorts names: mlp before self_attn).
    EXPECT_EQ(e.tensor(), "model.layers.0.mlp.down_proj.input_scale");
    EXPECT_EQ(e.problem(), "no calibration statistic (the module saw no tokens, or stats do not match the model)");
  }
  EXPECT_FALSE(fs::exists(d.path() / "out"));
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().filename().string().find("qtool-partial"), std::string::npos) << e.path();
}

TEST(QuantizePipeline, StaticInputScaleIsTheFusedGroupsAbsmaxOverTheFp8Maximum) {
  ActivationStats s;
  s.input_absmax["m.layers.0.self_attn.q_proj"] = 2.0f;
  s.input_absmax["m.layers.0.self_attn.k_proj"] = 4.48f;  // q/k/v share one scale: the max
  s.input_absmax["m.layers.0.self_attn.v_proj"] = 1.0f;
  // 4.48 / 448 = 0.01, rounded to f32 (F32 scale dtype).
  EXPECT_EQ(static_input_scale(s, "m.layers.0.self_attn.v_proj", QuantType::Float8E4M3, DType::F32, "m"),
            4.48f / 448.0f);
  EXPECT_EQ(static_input_scale(s, "m.layers.0.self_attn.q_proj", QuantType::Float8E4M3, DType::F32, "m"),
            4.48f / 448.0f);
}

TEST(QuantizeModel, DryRunPlansWithoutWritingAnything) {
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("out"), "fp8-static");  // would calibrate, but not in a dry run
  r.dry_run = true;
  const QuantizeOutcome o = quantize_model(r);
  EXPECT_TRUE(o.dry_run);
  EXPECT_EQ(o.plan.quantized_modules.size(), 14u);  // 2 layers x 7 Linears
  EXPECT_EQ(o.calibration.tokens, 0);
  EXPECT_FALSE(fs::exists(d.path() / "out"));
  EXPECT_FALSE(fs::exists(resume_stats_path(d.str("out"))));
}

TEST(QuantizeModel, AnAlreadyQuantizedModelIsRefused) {
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("q"), "fp8-dynamic");
  quantize_model(r);
  r.model = d.str("q");
  r.output = d.str("qq");
  const std::optional<InputError> e = test::input_error([&] { quantize_model(r); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Unsupported);
  EXPECT_EQ(e->file(), d.str("q") + "/config.json");
  EXPECT_EQ(e->problem(), "the model is already quantized (config.json has a quantization_config); quantize an "
                          "unquantized BF16/F16/F32 checkpoint");
}

TEST(QuantizeModel, SmoothQuantWithAWeightOnlySchemeIsAUsageError) {
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("out"), "w4a16");
  r.smoothquant = true;
  const std::optional<InputError> e = test::input_error([&] { quantize_model(r); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Usage);
  EXPECT_EQ(e->problem(), "--smoothquant needs a scheme that quantizes activations; w4a16 is weight-only (smoothing "
                          "would only make its weights harder to quantize)");
}

TEST(QuantizeModel, ACalibratedRunReportsItsCostAndRemovesTheResumeFile) {
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("out"), "int8-static");
  r.num_samples = 2;
  r.seq_len = 16;
  std::vector<std::string> lines;
  QuantizeEvents ev;
  ev.info = [&](const std::string& l) { lines.push_back(l); };
  const QuantizeOutcome o = quantize_model(r, ev);
  EXPECT_EQ(o.calibration.samples, 2);
  EXPECT_GT(o.calibration.tokens, 2);
  EXPECT_LE(o.calibration.tokens, 32);
  EXPECT_TRUE(fs::exists(d.path() / "out" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(resume_stats_path(d.str("out"))));
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0].rfind("calibration: 2 samples, ", 0), 0u) << lines[0];
}

TEST(QuantizeModel, FewerSamplesThanAskedAreAnnouncedAndRecordedInTheManifest) {
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("out"), "fp8-static");
  r.num_samples = 100000;  // far more than the built-in text has chunks
  r.seq_len = 16;
  std::vector<std::string> warnings;
  QuantizeEvents ev;
  ev.warn = [&](const std::string& l) { warnings.push_back(l); };
  const QuantizeOutcome o = quantize_model(r, ev);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0].rfind("warning: --num-samples 100000 asked for, but the calibration text (built-in) gives only " +
                                  std::to_string(o.calibration.samples) + " samples of at most 16 tokens",
                              0),
            0u)
      << warnings[0];
  const nlohmann::json man = nlohmann::json::parse(test::read_text(d.path() / "out" / "qtool_manifest.json"));
  EXPECT_EQ(man.at("calibration").at("samples"), o.calibration.samples);
  EXPECT_EQ(man.at("calibration").at("samples_requested"), 100000);
  EXPECT_EQ(man.at("calibration").at("tokens"), o.calibration.tokens);
}

// SmolLM2-135M's hidden size 576 is not a multiple of 128; a tiny model with hidden size 192
// stands in for it (192 = 3 x 64).
std::string tiny_hidden_192(const test::TempDir& d) {
  TinyModelOptions o;
  o.hidden_size = 192;
  o.intermediate_size = 256;
  write_tiny_model(d.str("m192"), o);
  return d.str("m192");
}

TEST(QuantizeModel, W4a16OnAHiddenSizeGroup128CannotTakeNamesTheGroupSizeThatFits) {
  test::TempDir d;
  QuantizeRequest r = request(tiny_hidden_192(d), d.str("out"), "w4a16");
  const std::optional<InputError> e = test::input_error([&] { quantize_model(r); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Unsupported);
  EXPECT_EQ(e->tensor(), "model.layers.0.mlp.gate_proj.weight");  // the first in the file's (sorted) order
  EXPECT_EQ(e->problem(), "scheme w4a16 cannot quantize it: input dimension 192 is not a multiple of the group size "
                          "128 (--group-size 64 fits it, or add --ignore model.layers.0.mlp.gate_proj to keep it in bf16)");
}

TEST(QuantizeModel, GroupSize64WritesGroupsOf64AndRecordsThemInConfigAndManifest) {
  test::TempDir d;
  QuantizeRequest r = request(tiny_hidden_192(d), d.str("out"), "w4a16");
  r.group_size = 64;
  r.hash_inputs = false;
  const QuantizeOutcome o = quantize_model(r);
  EXPECT_EQ(o.summary.tensors_quantized, 14u);
  const Checkpoint out = Checkpoint::open(d.str("out"));
  const TensorView* sc = out.find("model.layers.0.self_attn.q_proj.weight_scale");
  ASSERT_NE(sc, nullptr);
  EXPECT_EQ(sc->shape, (std::vector<int64_t>{192, 3}));
  const TensorView* sd = out.find("model.layers.1.mlp.down_proj.weight_scale");
  ASSERT_NE(sd, nullptr);
  EXPECT_EQ(sd->shape, (std::vector<int64_t>{192, 4}));
  // The bytes are what quantize_weight gives at group 64 (itself byte-equal to compressed-tensors,
  // test_ct_goldens.cpp).
  const ModelFolder m = ModelFolder::open(r.model);
  QuantArgs g64 = find_scheme("w4a16")->weights;
  g64.group_size = 64;
  const QuantizedWeight q = quantize_weight(*m.checkpoint().find("model.layers.1.mlp.down_proj.weight"), g64);
  EXPECT_TRUE(std::equal(q.scale_bytes.begin(), q.scale_bytes.end(), sd->bytes.begin(), sd->bytes.end()));
  const nlohmann::json cfg = nlohmann::json::parse(test::read_text(d.path() / "out" / "config.json"));
  EXPECT_EQ(cfg.at("quantization_config").at("config_groups").at("group_0").at("weights").at("group_size"), 64);
  const nlohmann::json man = nlohmann::json::parse(test::read_text(d.path() / "out" / "qtool_manifest.json"));
  EXPECT_EQ(man.at("group_size"), 64);
}

TEST(QuantizeModel, GroupSizeWithAPerChannelSchemeIsAUsageError) {
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("out"), "w8a16");
  r.group_size = 64;
  const std::optional<InputError> e = test::input_error([&] { quantize_model(r); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Usage);
  EXPECT_EQ(e->problem(), "--group-size applies to schemes with group-wise weight scales (w4a16); w8a16 has INT8 "
                          "per-channel weights");
}

TEST(QuantizeModel, AGroupSizeVllmDoesNotRunIsAUsageError) {
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("out"), "w4a16");
  r.group_size = 48;
  const std::optional<InputError> e = test::input_error([&] { quantize_model(r); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Usage);
  EXPECT_EQ(e->problem(), "--group-size 48 is not supported");
  EXPECT_EQ(e->expected(), "32, 64 or 128 (the group sizes vLLM's WNA16 kernels run)");
}

TEST(QuantizeModel, CalibrationPrecisionAndIsaPathAreRecordedInTheManifestAndTheStatistics) {
  test::TempDir d;
  const std::string model = tiny(d);
  for (GemmPrecision prec : {GemmPrecision::F32, GemmPrecision::BF16}) {
    const std::string name = precision_name(prec);
    SCOPED_TRACE(name);
    QuantizeRequest r = request(model, d.str("out-" + name), "fp8-static");
    r.num_samples = 2;
    r.seq_len = 16;
    r.calib_precision = prec;
    r.stats_out = d.str("s-" + name + ".zst");
    quantize_model(r, {});
    const nlohmann::json man = nlohmann::json::parse(test::read_text(d.path() / ("out-" + name) / "qtool_manifest.json"));
    EXPECT_EQ(man.at("calibration").at("forward").at("precision"), name);
    EXPECT_EQ(man.at("calibration").at("forward").at("isa"), gemm_path_name(prec == GemmPrecision::BF16));
    StatsProvenance prov;
    load_stats(r.stats_out, model_fingerprint(ModelFolder::open(model)), &prov);
    EXPECT_EQ(prov.calib_precision, name);
  }
}

// On a CPU without AVX512-BF16 (emulated here by capping the ISA) bf16 runs an emulation: ~3x
// slower than f32 with AVX2, two orders of magnitude without (bench/RESULTS.md). The user is told
// once.
TEST(QuantizeModel, ABf16CalibrationWithoutAvx512Bf16WarnsOnceThatItIsEmulated) {
  const std::string avx2 =
      "warning: --calib-precision bf16: this CPU has no AVX512-BF16, so its bf16 products are emulated with AVX2 "
      "(the same bits, but ~3x slower than f32: bench/RESULTS.md); --calib-precision f32 is the fast path here";
  const std::string scalar =
      "warning: --calib-precision bf16: this CPU has neither AVX512-BF16 nor AVX2, so its bf16 products are emulated "
      "in scalar code (the same bits, but two orders of magnitude slower than f32: bench/RESULTS.md); "
      "--calib-precision f32 is the fast path here";
  auto warnings_of = [](GemmPrecision precision) {
    test::TempDir d;
    QuantizeRequest r = request(tiny(d), d.str("out"), "fp8-static");
    r.num_samples = 2;
    r.seq_len = 16;
    r.calib_precision = precision;
    std::vector<std::string> warnings;
    QuantizeEvents ev;
    ev.warn = [&](const std::string& l) { warnings.push_back(l); };
    quantize_model(r, ev);
    return warnings;
  };
  isa_cap_for_tests(Isa::Avx2);
  const auto emulated = warnings_of(GemmPrecision::BF16), f32 = warnings_of(GemmPrecision::F32);
  isa_cap_for_tests(Isa::Scalar);
  const auto emulated_scalar = warnings_of(GemmPrecision::BF16);
  isa_cap_for_tests(Isa::Avx512);
  if (static_cast<int>(cpu_isa()) >= static_cast<int>(Isa::Avx2)) EXPECT_EQ(emulated, std::vector<std::string>{avx2});
  EXPECT_EQ(emulated_scalar, std::vector<std::string>{scalar});
  EXPECT_TRUE(f32.empty()) << f32.front();
  if (bf16_hardware()) {
    EXPECT_TRUE(warnings_of(GemmPrecision::BF16).empty()) << "AVX512-BF16 here: no warning";
  }
}

TEST(QuantizeModel, ABf16CalibrationThroughOnednnRecordsOnednnsKernelInTheManifest) {
  if (!kernels::onednn::available())
      GTEST_SKIP() << "no oneDNN bf16 matmul here (built without oneDNN, or a CPU without AVX-512)";
  test::TempDir d;
  QuantizeRequest r = request(tiny(d), d.str("out"), "fp8-static");
  r.num_samples = 2;
  r.seq_len = 16;
  r.calib_precision = GemmPrecision::BF16;
  {
    const test::Bf16BackendScope dnn(Bf16Backend::Onednn);
    quantize_model(r, {});
  }
  const nlohmann::json man = nlohmann::json::parse(test::read_text(d.path() / "out" / "qtool_manifest.json"));
  EXPECT_EQ(man.at("calibration").at("forward").at("precision"), "bf16");
  // e.g. "onednn-brg:avx512_core_bf16+avx512-bf16" on AVX512-BF16, "onednn-brg:avx512_core_amx_bf16+avx512-bf16"
  // on AMX (after the '+': the own kernel of attention's products).
  EXPECT_EQ(man.at("calibration").at("forward").at("isa"),
            "onednn-" + kernels::onednn::impl_name() + "+" + test::own_bf16_path());
}

}  // namespace
}  // namespace qt::calib
