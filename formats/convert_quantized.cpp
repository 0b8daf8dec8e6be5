#include "formats/convert_quantized.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "formats/atomic_file.h"
#include "formats/manifest.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "formats/safetensors_writer.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"
#include "libquant/pack.h"
#include "libquant/quantize.h"

namespace qt {
namespace fs = std::filesystem;
using nlohmann::json;
using Kind = InputError::Kind;

namespace {

std::string strip(const std::string& s, const std::string& suf) { return s.substr(0, s.size() - suf.size()); }
std::string last_component(const std::string& s) {
  const auto p = s.rfind('.');
  return p == std::string::npos ? s : s.substr(p + 1);
}
int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
bool is_scale_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// The [rows, cols] grid of scales a weight of `shape` has under `a`.
std::pair<int64_t, int64_t> scale_dims(const std::vector<int64_t>& shape, const QuantArgs& a) {
  const ScaleGrid g = scale_grid(shape, a);
  return {cdiv(shape[0], g.rows_per), cdiv(shape[1], g.cols_per)};
}

// Tensors that only make sense in a quantized checkpoint (scales of activations / KV cache).
bool is_activation_or_kv_scale(const std::string& name) {
  const std::string last = last_component(name);
  return last == "input_scale" || last == "input_zero_point" || last == "input_global_scale" || last == "k_scale" ||
         last == "v_scale" || last == "q_scale" || last == "output_scale";
}

// The modules that have a 2-D "<m>.weight" (Linear-like or embedding; norms excluded), in
// checkpoint order. Embeddings belong in the ignore list too: vLLM and transformers match the
// "Linear" target by class and never touch them, but compressed-tensors' model-free matcher treats
// "Linear" as every `.weight` not ending in "norm" (the rule qtool quantize follows).
std::vector<std::string> weight_modules(const Checkpoint& ck) {
  std::vector<std::string> v;
  for (const auto& t : ck.tensors())
    if (t.shape.size() == 2 && t.name.ends_with(".weight") && !strip(t.name, ".weight").ends_with("norm"))
      v.push_back(strip(t.name, ".weight"));
  return v;
}

std::vector<std::string> output_ignore(const std::vector<std::string>& source, const Checkpoint& ck,
                                       const std::set<std::string>& quantized, const PatternSource& src) {
  std::vector<std::string> out;
  std::set<std::string> have;
  const std::vector<std::string> linear = weight_modules(ck);
  auto add = [&](const std::string& m) {
    if (have.insert(m).second) out.push_back(m);
  };
  for (const auto& e : source) {
    if (e.rfind("re:", 0) == 0) {
      for (const auto& m : linear)
        if (!quantized.count(m) && target_matches(e, m, true, src)) add(m);
    } else if (!quantized.count(e)) {
      add(e);
    }
  }
  for (const auto& m : linear)
    if (!quantized.count(m)) add(m);
  return out;
}

// Re-encodes a float scale tensor into `to`, exactly: every value must be representable in `to`
// (and finite), else InputError(BadValue) naming the tensor and the first offending value.
std::vector<uint8_t> convert_scale_exact(const TensorView& t, DType to, const std::string& model_dir) {
  if (!is_scale_float(t.dtype))
    throw InputError(Kind::BadFile, t.file, t.name, "scale is not a floating tensor", "F32, F16 or BF16",
                     std::string(dtype_name(t.dtype)));
  std::vector<float> v(t.numel());
  QT_ASSERT(decode_to_f32(t.dtype, t.bytes.data(), v.size(), v.data()));  // exact for F32/F16/BF16
  if (to == t.dtype) return {t.bytes.begin(), t.bytes.end()};
  const size_t es = static_cast<size_t>(dtype_bits(to) / 8);
  std::vector<uint8_t> out(v.size() * es);
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i]))
      throw InputError(Kind::BadValue, model_dir, t.name, "scale " + std::to_string(i) + " is not finite");
    const float r = round_to_dtype(to, v[i]);
    if (f32_bits(r) != f32_bits(v[i]))
      throw InputError(Kind::BadValue, model_dir, t.name,
                       "scale " + std::to_string(i) + " (" + std::to_string(v[i]) + ") is not exactly representable in " +
                           std::string(dtype_short_name(to)) + "; keep the default scale dtype");
    store_float(to, v[i], out.data() + i * es);
  }
  return out;
}

// Output folder plumbing shared by both conversions.
struct Writer {
  PartialFolder folder;
  std::vector<ShardPlan> shards;
  std::map<std::string, size_t> shard_of;
  std::vector<std::unique_ptr<SafetensorsWriter>> writers;
  uint64_t total = 0;
  std::unique_ptr<InputHashes> hashes;  // the manifest's input hashes, computed alongside

  Writer(const ConvertJob& job, const ModelFolder& m, const std::vector<TensorSpec>& specs)
      : folder(PartialFolder::create(job.output_dir, m.dir(), job.overwrite)),
        hashes(std::make_unique<InputHashes>(m.checkpoint().shard_paths(), job.hash_inputs)) {
    shards = plan_shards(specs, job.max_shard_bytes);
    for (size_t s = 0; s < shards.size(); ++s) {
      for (const auto& sp : shards[s].tensors) shard_of[sp.name] = s;
      writers.push_back(std::make_unique<SafetensorsWriter>((fs::path(folder.path()) / shards[s].file_name).string(),
                                                            shards[s].tensors,
                                                            std::map<std::string, std::string>{{"format", "pt"}}));
    }
    for (const auto& s : shards) total += s.tensor_bytes;
  }
  SafetensorsWriter& w(const std::string& name) { return *writers[shard_of.at(name)]; }

  // Commits the shards, writes index, config.json, the model's other files and the manifest,
  // then publishes the folder.
  void finish(const ModelFolder& m, const json& config, json manifest, const ConvertJob& job, ConvertSummary& sum) {
    for (auto& wr : writers) wr->commit();
    const fs::path dir = folder.path();
    std::map<std::string, std::string> weight_map;
    for (const auto& sh : shards) {
      sum.output_files.push_back(sh.file_name);
      for (const auto& sp : sh.tensors) weight_map[sp.name] = sh.file_name;
    }
    sum.shards = shards.size();
    sum.output_bytes = total;
    if (shards.size() > 1) {
      write_index_json(dir.string(), total, weight_map);
      sum.output_files.push_back(kIndexFileName);
    }
    write_config_json(dir.string(), config);
    sum.output_files.push_back("config.json");
    copy_other_files(m, dir.string(), sum.output_files);
    manifest.update(manifest_base(job.command_line, *hashes));
    manifest["notes"] = sum.notes;
    write_manifest(dir.string(), manifest);
    sum.output_files.push_back(kManifestFile);
    folder.publish();
  }
};

// An NVFP4 / MXFP4 / MXFP8 module (formats/FORMATS.md §3.5): FP4 codes packed two per U8 byte in
// P.weight_packed [out, in/2] (or F8_E4M3 codes in P.weight [out, in] for MXFP8), the group scales
// in P.weight_scale [out, in/group] as F8_E4M3 (NVFP4) or U8 biased exponents (E8M0), and for
// NVFP4 one F32 multiplier P.weight_global_scale [1]. Every mismatch names the tensor.
void read_microscale_module(const Checkpoint& ck, const std::string& cfg, const TensorView& scale, QuantizedModule& qm) {
  const QuantArgs& a = qm.weights;
  const std::string what = describe_args(a);
  const bool fp4 = a.type == QuantType::Float4E2M1;
  const bool nv = a.scale_format == ScaleFormat::Nvfp4;
  if (a.strategy != Strategy::Group || a.group_size <= 0)
    throw InputError(Kind::BadFile, cfg, "", "group strategy without a positive group_size");
  if (fp4) {
    const TensorView* pw = ck.find(qm.module + ".weight_packed");
    if (!pw)
      throw InputError(Kind::Missing, scale.file, qm.module + ".weight_packed",
                       "scale without its quantized weight (" + what + " stores the codes packed, two per byte)");
    if (pw->dtype != DType::U8 || pw->shape.size() != 2 || pw->shape[0] <= 0 || pw->shape[1] <= 0)
      throw InputError(Kind::BadFile, pw->file, pw->name, "packed FP4 weight must be a 2-D U8 tensor [out, in/2]",
                       "U8 [out, in/2]", std::string(dtype_name(pw->dtype)) + " " + shape_string(pw->shape));
    qm.codes = pw;
    qm.fp4_packed = true;
    qm.dense_shape = {pw->shape[0], pw->shape[1] * 2};
  } else {
    const TensorView* w = ck.find(qm.module + ".weight");
    if (!w) throw InputError(Kind::Missing, scale.file, qm.module + ".weight", "scale without its quantized weight");
    if (w->dtype != DType::F8_E4M3 || w->shape.size() != 2)
      throw InputError(Kind::BadFile, w->file, w->name, "quantized weight must be a 2-D F8_E4M3 tensor for " + what,
                       "F8_E4M3 [out, in]", std::string(dtype_name(w->dtype)) + " " + shape_string(w->shape));
    qm.codes = w;
    qm.dense_shape = w->shape;
  }
  const int64_t rows = qm.dense_shape[0], cols = qm.dense_shape[1];
  if (cols % a.group_size != 0)
    throw InputError(Kind::BadFile, qm.codes->file, qm.codes->name,
                     "the weight's " + std::to_string(cols) + " columns are not a multiple of the group size " +
                         std::to_string(a.group_size));
  const DType want_dt = nv ? DType::F8_E4M3 : DType::U8;
  if (scale.dtype != want_dt)
    throw InputError(Kind::BadFile, scale.file, scale.name, "scale dtype does not match " + what,
                     std::string(dtype_name(want_dt)), std::string(dtype_name(scale.dtype)));
  const std::vector<int64_t> want_shape = {rows, cols / a.group_size};
  if (scale.shape != want_shape)
    throw InputError(Kind::BadFile, scale.file, scale.name,
                     "scale shape does not match " + what + " for weight " + shape_string(qm.dense_shape),
                     shape_string(want_shape), shape_string(scale.shape));
  if (nv) {
    const TensorView* gs = ck.find(qm.module + ".weight_global_scale");
    if (!gs) throw InputError(Kind::Missing, scale.file, qm.module + ".weight_global_scale", "NVFP4 weight without its global scale");
    if (gs->dtype != DType::F32 || gs->numel() != 1 || gs->shape.size() > 1)
      throw InputError(Kind::BadFile, gs->file, gs->name, "NVFP4 global scale must be F32 [1]", "F32 [1]",
                       std::string(dtype_name(gs->dtype)) + " " + shape_string(gs->shape));
    qm.global_scale = gs;
  }
}

void report(const ConvertJob& job, size_t index, size_t total, const std::string& source, const TensorSpec& out,
            const std::string& from) {
  if (!job.on_tensor) return;
  ConvertProgress p;
  p.index = index;
  p.total = total;
  p.source = source;
  p.name = out.name;
  p.shape = shape_string(out.shape);
  p.from = from;
  p.to = std::string(dtype_short_name(out.dtype));
  p.out_bytes = *dtype_nbytes(out.dtype, [&] { uint64_t n = 1; for (auto d : out.shape) n *= static_cast<uint64_t>(d); return n; }());
  job.on_tensor(p);
}

}  // namespace

// ================================================================================================
// reading
// ================================================================================================

QuantizedCheckpoint read_quantized_checkpoint(const ModelFolder& m) {
  QuantizedCheckpoint q;
  const std::string cfg = m.config_path();
  q.info = parse_quant_info(m.config(), cfg);
  if (q.info.method.empty())
    throw InputError(Kind::Usage, cfg, "", "the checkpoint is not quantized (config.json has no quantization_config)");
  if (q.info.method != "compressed-tensors" && q.info.method != "fp8")
    throw InputError(Kind::Unsupported, cfg, "", "quant_method '" + q.info.method + "' is not supported",
                     "compressed-tensors or fp8");
  q.legacy = q.info.method == "fp8";
  if (!q.legacy && !q.info.unknown_format.empty())
    for (const auto& p : q.info.problems)
      if (p.find("'" + q.info.unknown_format + "' is not a compressed-tensors format") != std::string::npos)
        throw InputError(Kind::BadFile, cfg, "", "quantization_config: " + p);
  if (q.legacy && !q.info.problems.empty())
    throw InputError(Kind::BadFile, cfg, "", "quantization_config: " + q.info.problems.front());
  const Checkpoint& ck = m.checkpoint();

  std::set<std::string> seen;
  for (const auto& t : ck.tensors()) {
    std::string module;
    bool inv = false;
    if (t.name.ends_with(".weight_scale_inv")) { module = strip(t.name, ".weight_scale_inv"); inv = true; }
    else if (t.name.ends_with(".weight_scale")) module = strip(t.name, ".weight_scale");
    else continue;
    if (!seen.insert(module).second)
      throw InputError(Kind::BadFile, t.file, t.name, "module has both weight_scale and weight_scale_inv");
    QuantizedModule qm;
    qm.module = module;
    qm.scale = &t;
    if (ck.find(module + ".weight_zero_point"))
      throw InputError(Kind::Unsupported, t.file, module + ".weight_zero_point", "asymmetric quantization (zero points) is not supported");
    if (ck.find(module + ".weight_g_idx"))
      throw InputError(Kind::Unsupported, t.file, module + ".weight_g_idx", "activation reordering (g_idx) is not supported");

    // Which args.
    if (q.legacy) {
      QT_ASSERT(!q.info.groups.empty() && q.info.groups[0].weights);
      qm.weights = *q.info.groups[0].weights;
      const bool block = qm.weights.strategy == Strategy::Block;
      if (block != inv)
        throw InputError(Kind::BadFile, t.file, t.name,
                         block ? "legacy block FP8 (weight_block_size) stores its scales as weight_scale_inv"
                               : "weight_scale_inv without weight_block_size in quantization_config");
    } else {
      if (inv) throw InputError(Kind::BadFile, t.file, t.name, "weight_scale_inv in a compressed-tensors checkpoint");
      const QuantGroup* hit = nullptr;
      for (const auto& g : q.info.groups) {
        bool match = false;
        const PatternSource src{Kind::BadFile, cfg, "config group '" + g.name + "' targets"};
        for (const auto& tg : g.targets) match |= target_matches(tg, module, true, src);
        if (match) { hit = &g; break; }
      }
      if (!hit)
        throw InputError(Kind::BadFile, cfg, t.name, "quantized module '" + module + "' is targeted by no config group");
      if (!hit->weights)
        throw InputError(Kind::Unsupported, cfg, "", "config group '" + hit->name + "' weights: " + hit->weights_text);
      if (!hit->weights_symmetric)
        throw InputError(Kind::Unsupported, cfg, "", "config group '" + hit->name + "' has asymmetric weights");
      qm.weights = *hit->weights;
      if (qm.weights.strategy == Strategy::Token)
        throw InputError(Kind::BadFile, cfg, "", "config group '" + hit->name + "' weights use the token strategy");
    }

    if (qm.weights.microscale()) {
      read_microscale_module(ck, cfg, t, qm);
      q.modules.push_back(std::move(qm));
      continue;
    }

    // The codes.
    if (const TensorView* w = ck.find(module + ".weight")) {
      qm.codes = w;
      const DType want = qm.weights.is_float() ? DType::F8_E4M3 : DType::I8;
      if (w->dtype != want || qm.weights.type == QuantType::Int4)
        throw InputError(Kind::BadFile, w->file, w->name, "quantized weight has the wrong dtype for " + describe_args(qm.weights),
                         qm.weights.type == QuantType::Int4 ? "packed I32 (weight_packed)" : std::string(dtype_name(want)),
                         std::string(dtype_name(w->dtype)));
      if (w->shape.size() != 2) throw InputError(Kind::BadFile, w->file, w->name, "quantized weight is not 2-D", "", shape_string(w->shape));
      qm.dense_shape = w->shape;
    } else if (const TensorView* pw = ck.find(module + ".weight_packed")) {
      qm.codes = pw;
      qm.packed = true;
      if (qm.weights.is_float())
        throw InputError(Kind::BadFile, pw->file, pw->name, "packed weight with float quantization args");
      const TensorView* ws = ck.find(module + ".weight_shape");
      if (!ws) throw InputError(Kind::Missing, pw->file, module + ".weight_shape", "packed weight without weight_shape");
      if (ws->dtype != DType::I64 || ws->numel() != 2)
        throw InputError(Kind::BadFile, ws->file, ws->name, "weight_shape must be I64 [2]", "I64 [2]",
                         std::string(dtype_name(ws->dtype)) + " " + shape_string(ws->shape));
      qm.shape = ws;
      int64_t s[2];
      std::memcpy(s, ws->bytes.data(), 16);
      if (s[0] <= 0 || s[1] <= 0)
        throw InputError(Kind::BadFile, ws->file, ws->name, "weight_shape must be positive", "", std::to_string(s[0]) + "x" + std::to_string(s[1]));
      qm.dense_shape = {s[0], s[1]};
      const std::vector<int64_t> want = {s[0], packed_cols(s[1], qm.weights.num_bits())};
      if (pw->dtype != DType::I32 || pw->shape != want)
        throw InputError(Kind::BadFile, pw->file, pw->name, "packed weight does not match weight_shape",
                         "I32 " + shape_string(want), std::string(dtype_name(pw->dtype)) + " " + shape_string(pw->shape));
    } else {
      throw InputError(Kind::Missing, t.file, module + ".weight", "scale without its quantized weight");
    }

    // The scales.
    if (!is_scale_float(t.dtype))
      throw InputError(Kind::BadFile, t.file, t.name, "scale is not a floating tensor", "F32, F16 or BF16", std::string(dtype_name(t.dtype)));
    if (qm.weights.strategy == Strategy::Block && (qm.weights.block_rows <= 0 || qm.weights.block_cols <= 0))
      throw InputError(Kind::BadFile, cfg, "", "block strategy without a valid block structure");
    if (qm.weights.strategy == Strategy::Group && qm.weights.group_size <= 0)
      throw InputError(Kind::BadFile, cfg, "", "group strategy without a positive group_size");
    const auto [sr, sc] = scale_dims(qm.dense_shape, qm.weights);
    const bool ok = qm.weights.strategy == Strategy::Tensor ? t.numel() == 1 && t.shape.size() <= 1
                                                            : t.shape == std::vector<int64_t>{sr, sc};
    if (!ok)
      throw InputError(Kind::BadFile, t.file, t.name, "scale shape does not match " + describe_args(qm.weights) + " for weight " +
                                                          shape_string(qm.dense_shape),
                       qm.weights.strategy == Strategy::Tensor ? "[] or [1]" : shape_string({sr, sc}), shape_string(t.shape));
    q.modules.push_back(std::move(qm));
  }
  // A quantized-looking weight without a scale would be read as garbage.
  for (const auto& t : ck.tensors()) {
    if (t.name.ends_with(".weight") && (t.dtype == DType::F8_E4M3 || t.dtype == DType::I8) &&
        !seen.count(strip(t.name, ".weight")))
      throw InputError(Kind::Missing, t.file, strip(t.name, ".weight") + ".weight_scale", "quantized weight without its scale");
    if (t.name.ends_with(".weight_packed") && !seen.count(strip(t.name, ".weight_packed")))
      throw InputError(Kind::Missing, t.file, strip(t.name, ".weight_packed") + ".weight_scale",
                       "packed weight without its scale");
  }
  return q;
}

// ================================================================================================
// layout conversion
// ================================================================================================

ConvertSummary convert_quant_layout(const ModelFolder& m, OutputFormat to, std::optional<DType> scale_dtype,
                                    const ConvertJob& job) {
  const QuantizedCheckpoint q = read_quantized_checkpoint(m);
  const std::string cfg = m.config_path();
  const bool to_legacy = to == OutputFormat::LegacyFp8;
  if (to_legacy == q.legacy)
    throw InputError(Kind::Usage, cfg, "", std::string("the checkpoint is already in the ") +
                                               (q.legacy ? "legacy-fp8" : "compressed-tensors") + " layout");
  if (scale_dtype && !is_scale_float(*scale_dtype))
    throw InputError(Kind::Usage, "", "", "scale dtype must be f32, f16 or bf16");

  ConvertSummary sum;
  // ---- the scheme, in both vocabularies ----
  QuantArgs w{};
  std::optional<QuantArgs> in;
  bool kv = false;
  if (q.legacy) {
    const QuantGroup& g = q.info.groups.at(0);
    w = *g.weights;
    const bool is_static = q.info.legacy_activation_scheme == "static";
    if (w.strategy == Strategy::Block) {
      if (is_static)
        throw InputError(Kind::BadFile, cfg, "", "weight_block_size requires activation_scheme \"dynamic\" (vLLM refuses static)");
      in = QuantArgs{QuantType::Float8E4M3, Strategy::Group, w.block_cols, 0, 0, true};
    } else {
      in = QuantArgs{QuantType::Float8E4M3, Strategy::Tensor, 0, 0, 0, !is_static};
    }
    kv = q.info.kv_cache.has_value();
  } else {
    if (q.info.groups.size() != 1)
      throw InputError(Kind::Unsupported, cfg, "", "only a single config group converts to legacy fp8",
                       "1 group", std::to_string(q.info.groups.size()) + " groups");
    const QuantGroup& g = q.info.groups[0];
    if (!g.weights || !g.weights->is_float() ||
        (g.weights->strategy != Strategy::Tensor && g.weights->strategy != Strategy::Block))
      throw InputError(Kind::Unsupported, cfg, "", "legacy fp8 holds FP8 per-tensor or block weights only, not " + g.weights_text);
    w = *g.weights;
    if (!g.input)
      throw InputError(Kind::Unsupported, cfg, "", "weight-only FP8 has no legacy fp8 equivalent (vLLM's fp8 path always quantizes activations)");
    if (!g.input_symmetric) throw InputError(Kind::Unsupported, cfg, "", "asymmetric input activations");
    if (!g.input->is_float()) throw InputError(Kind::Unsupported, cfg, "", "legacy fp8 needs FP8 activations, not " + g.input_text);
    if (w.strategy == Strategy::Block && !g.input->dynamic)
      throw InputError(Kind::Unsupported, cfg, "", "block FP8 with static activations has no legacy fp8 equivalent");
    if (!g.input->dynamic && g.input->strategy != Strategy::Tensor)
      throw InputError(Kind::Unsupported, cfg, "", "static activations must be per-tensor for legacy fp8, not " + g.input_text);
    in = g.input;
    if (in->dynamic && w.strategy == Strategy::Tensor && in->strategy != Strategy::Tensor)
      sum.notes.push_back("activations were " + g.input_text + "; vLLM's legacy fp8 path quantizes them per-tensor dynamically");
    if (q.info.kv_cache) {
      if (!q.info.kv_cache->is_float() || q.info.kv_cache->strategy != Strategy::Tensor || q.info.kv_cache->dynamic)
        throw InputError(Kind::Unsupported, cfg, "", "kv_cache_scheme " + q.info.kv_cache_text + " has no legacy fp8 equivalent");
      kv = true;
    }
  }
  const bool static_input = in && !in->dynamic;
  for (const auto& qm : q.modules)
    if (qm.weights.type != w.type || qm.weights.strategy != w.strategy || qm.weights.block_rows != w.block_rows ||
        qm.weights.block_cols != w.block_cols)
      throw InputError(Kind::Unsupported, cfg, qm.scale->name, "modules quantized with different schemes");

  // ---- tensor plan: every input tensor maps to one output tensor or is dropped ----
  const Checkpoint& ck = m.checkpoint();
  std::set<std::string> quantized;
  std::map<std::string, const QuantizedModule*> by_scale;
  for (const auto& qm : q.modules) {
    quantized.insert(qm.module);
    by_scale[qm.scale->name] = &qm;
  }
  struct Item {
    const TensorView* src;
    TensorSpec out;
    bool rescale;  // convert_scale_exact to out.dtype
  };
  std::vector<Item> items;
  size_t dropped_inputs = 0;
  for (const auto& t : ck.tensors()) {
    const std::string last = last_component(t.name);
    const std::string module = t.name.substr(0, t.name.size() - std::min(t.name.size(), last.size() + 1));
    const bool is_kv = (last == "k_scale" || last == "v_scale") && t.numel() == 1;
    if (by_scale.count(t.name)) {
      const DType sdt = scale_dtype ? *scale_dtype : to_legacy ? DType::F32 : t.dtype;
      std::vector<int64_t> shape = t.shape;
      std::string name = t.name;
      if (w.strategy == Strategy::Tensor) shape = to_legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1};
      else name = module + (to_legacy ? ".weight_scale_inv" : ".weight_scale");
      items.push_back({&t, {name, sdt, shape}, true});
    } else if (last == "input_scale" && quantized.count(module)) {
      if (!static_input) {
        ++dropped_inputs;  // a dynamic scheme never reads it
        continue;
      }
      if (t.numel() != 1) throw InputError(Kind::BadFile, t.file, t.name, "input_scale of a per-tensor static scheme must hold one value", "[] or [1]", shape_string(t.shape));
      const DType sdt = scale_dtype ? *scale_dtype : to_legacy ? DType::F32 : t.dtype;
      items.push_back({&t, {t.name, sdt, to_legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}}, true});
    } else if (is_kv) {
      kv = true;
      const DType sdt = scale_dtype ? *scale_dtype : to_legacy ? DType::F32 : t.dtype;
      items.push_back({&t, {t.name, sdt, to_legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}}, true});
    } else {
      items.push_back({&t, {t.name, t.dtype, t.shape}, false});
    }
  }
  if (static_input)
    for (const auto& qm : q.modules)
      if (!ck.find(qm.module + ".input_scale"))
        throw InputError(Kind::Missing, ck.dir(), qm.module + ".input_scale", "static activations but no input_scale");
  if (dropped_inputs)
    sum.notes.push_back(std::to_string(dropped_inputs) + " input_scale tensors dropped: the scheme's activations are dynamic");

  // ---- config ----
  json config = m.config();
  const json& src_qc = config.contains("quantization_config") ? config["quantization_config"]
                                                               : config["compression_config"]["quantization_config"];
  std::vector<std::string> ignore =
      output_ignore(q.info.ignore, ck, quantized,
                    PatternSource{Kind::BadFile, m.config_path(),
                                  q.legacy ? "quantization_config.ignored_layers" : "quantization_config.ignore"});
  json qc;
  if (to_legacy) {
    qc["quant_method"] = "fp8";
    qc["activation_scheme"] = static_input ? "static" : "dynamic";
    qc["ignored_layers"] = ignore;
    if (w.strategy == Strategy::Block) qc["weight_block_size"] = json::array({w.block_rows, w.block_cols});
    if (kv) qc["kv_cache_scheme"] = "static";
  } else {
    const json group = make_ct_group(w, in, "static_minmax", CtFormat::FloatQuantized);
    qc["quant_method"] = "compressed-tensors";
    qc["format"] = std::string(ct_format_name(CtFormat::FloatQuantized));
    qc["quantization_status"] = "compressed";
    qc["global_compression_ratio"] = nullptr;
    qc["config_groups"] = json{{"group_0", group}};
    qc["ignore"] = ignore;
    qc["kv_cache_scheme"] =
        kv ? quant_args_json(QuantArgs{QuantType::Float8E4M3, Strategy::Tensor, 0, 0, 0, false}, "static_minmax") : json(nullptr);
    qc["sparsity_config"] = json::object();
    qc["transform_config"] = json::object();
    if (src_qc.contains("version")) qc["version"] = src_qc["version"];
  }
  config.erase("compression_config");
  config["quantization_config"] = qc;

  // ---- write ----
  std::vector<TensorSpec> specs;
  for (const auto& it : items) specs.push_back(it.out);
  Writer wr(job, m, specs);
  sum.output_notes = wr.folder.notes();
  sum.tensors_in = ck.tensors().size();
  sum.tensors_out = items.size();
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    if (it.rescale) wr.w(it.out.name).write(it.out.name, convert_scale_exact(*it.src, it.out.dtype, m.dir()));
    else wr.w(it.out.name).write(it.out.name, it.src->bytes);
    report(job, i + 1, items.size(), it.src->name, it.out, std::string(dtype_short_name(it.src->dtype)));
  }
  json manifest;
  manifest["conversion"] = q.legacy ? "legacy-fp8-to-compressed-tensors" : "compressed-tensors-to-legacy-fp8";
  wr.finish(m, config, manifest, job, sum);
  return sum;
}

// ================================================================================================
// dequantization
// ================================================================================================

namespace {

void encode(const float* src, size_t n, DType dt, uint8_t* dst) {
  const int64_t nn = static_cast<int64_t>(n);
  const size_t es = static_cast<size_t>(dtype_bits(dt) / 8);
  // RNE rounding of each f32 value to the output dtype (float_formats.h); F32 is a copy.
#pragma omp parallel for schedule(static) if (nn >= (1 << 16))
  for (int64_t i = 0; i < nn; ++i) store_float(dt, round_to_dtype(dt, src[i]), dst + static_cast<size_t>(i) * es);
}

constexpr const char* kMicroscaleNumerics =
    "FP4 / MX weights: x = bf16_rne(f32(code) * s), s = f32(fp8 scale) / global scale (NVFP4) or 2^(E-127) (MX), "
    "then converted to nearest-even in the output dtype, as compressed-tensors 0.20.1 decompresses them; other "
    "tensors: x = f32(code) * f32(scale), rounded to nearest-even in the output dtype";

std::string microscale_name(const QuantArgs& a) {
  if (a.scale_format == ScaleFormat::Nvfp4) return "nvfp4";
  return a.type == QuantType::Float4E2M1 ? "mxfp4" : "mxfp8";
}

// One NVFP4 / MXFP4 / MXFP8 weight, streamed in chunks of rows. compressed-tensors 0.20.1
// decompresses these to bfloat16 whatever the model dtype (libquant/NUMERICS.md §10.8):
// bf16_rne(f32(code) * s) with s the f32 effective scale, and its dequantizer then casts to the
// requested dtype; so the value is rounded to BF16 first and then to `dtype` (exact for F32).
void dequantize_microscale_module(const QuantizedModule& qm, DType dtype, const ConvertJob& job, const std::string& model_dir,
                                  SafetensorsWriter& w) {
  const QuantArgs& a = qm.weights;
  const bool nv = a.scale_format == ScaleFormat::Nvfp4;
  const int64_t rows = qm.dense_shape[0], cols = qm.dense_shape[1], ng = cols / a.group_size;
  float gs = 1.0f;
  if (nv) {
    std::memcpy(&gs, qm.global_scale->bytes.data(), 4);
    if (!(gs > 0.0f) || !std::isfinite(gs)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", static_cast<double>(gs));
      throw InputError(Kind::BadValue, qm.global_scale->file, qm.global_scale->name,
                       std::string("global scale is ") + buf + "; it must be positive and finite");
    }
  }
  // Every group scale positive and finite (an FP8 NaN / negative / zero code, or E8M0 255 = NaN).
  for (size_t k = 0; k < qm.scale->numel(); ++k) {
    const uint8_t b = qm.scale->bytes[k];
    const float v = nv ? f32_from_e4m3fn(b) : f32_from_e8m0(b);
    if (!(v > 0.0f) || !std::isfinite(v)) {
      char buf[48];
      if (std::isnan(v)) std::snprintf(buf, sizeof buf, "NaN (byte 0x%02X)", b);  // FP8 0x7F/0xFF, E8M0 255
      else std::snprintf(buf, sizeof buf, "%g (byte 0x%02X)", static_cast<double>(v), b);
      throw InputError(Kind::BadValue, qm.scale->file, qm.scale->name,
                       "scale element " + std::to_string(k) + " is " + buf + "; a quantization scale must be positive and finite");
    }
  }
  const size_t es = static_cast<size_t>(dtype_bits(dtype) / 8);
  const int64_t chunk = std::max<int64_t>(1, std::max<int64_t>(1, job.chunk_elements) / cols);
  std::vector<float> f32;
  std::vector<uint8_t> enc, codes;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    const uint8_t* c = nullptr;
    if (qm.fp4_packed) {
      codes = unpack_e2m1(qm.codes->bytes.data() + static_cast<size_t>(r0 * (cols / 2)), nr, cols);
      c = codes.data();
    } else {
      c = qm.codes->bytes.data() + static_cast<size_t>(r0 * cols);
    }
    f32.resize(static_cast<size_t>(nr * cols));
    dequantize_microscale(c, {nr, cols}, qm.scale->bytes.data() + static_cast<size_t>(r0 * ng), a, gs, f32.data());
    for (size_t k = 0; k < f32.size(); ++k) {
      // compressed-tensors' BF16 result; a product past BF16's range is Inf there too.
      const float v = f32_from_bf16(bf16_from_f32(f32[k]));
      if (!std::isfinite(v))
        throw InputError(Kind::BadValue, model_dir, qm.codes->name,
                         "dequantized value at row " + std::to_string(r0 + static_cast<int64_t>(k) / cols) + ", column " +
                             std::to_string(static_cast<int64_t>(k) % cols) + " is not finite (NaN code, or beyond BF16's range)");
      f32[k] = v;
    }
    enc.resize(f32.size() * es);
    encode(f32.data(), f32.size(), dtype, enc.data());
    w.write_chunk(qm.module + ".weight", static_cast<uint64_t>(r0 * cols) * es, enc);
  }
}

}  // namespace

ConvertSummary dequantize_model(const ModelFolder& m, DType dtype, const ConvertJob& job) {
  if (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32)
    throw InputError(Kind::Usage, "", "", "output dtype must be bf16, f16 or f32");
  const QuantizedCheckpoint q = read_quantized_checkpoint(m);
  const Checkpoint& ck = m.checkpoint();
  std::map<std::string, const QuantizedModule*> by_codes;
  std::set<std::string> drop;
  bool any_microscale = false;
  for (const auto& qm : q.modules) {
    by_codes[qm.codes->name] = &qm;
    drop.insert(qm.scale->name);
    if (qm.shape) drop.insert(qm.shape->name);
    if (qm.global_scale) drop.insert(qm.global_scale->name);
    any_microscale |= qm.weights.microscale();
  }
  ConvertSummary sum;
  struct Item {
    const TensorView* src;
    const QuantizedModule* qm;  // nullptr: a plain tensor
    TensorSpec out;
  };
  std::vector<Item> items;
  size_t dropped_act = 0;
  for (const auto& t : ck.tensors()) {
    if (drop.count(t.name)) continue;
    if (is_activation_or_kv_scale(t.name)) { ++dropped_act; continue; }
    if (auto it = by_codes.find(t.name); it != by_codes.end()) {
      items.push_back({&t, it->second, {it->second->module + ".weight", dtype, it->second->dense_shape}});
    } else if (is_scale_float(t.dtype)) {
      items.push_back({&t, nullptr, {t.name, dtype, t.shape}});
    } else {
      items.push_back({&t, nullptr, {t.name, t.dtype, t.shape}});
    }
  }
  if (dropped_act) sum.notes.push_back(std::to_string(dropped_act) + " activation / KV-cache scale tensors dropped");

  json config = m.config();
  config.erase("quantization_config");
  config.erase("compression_config");
  config["torch_dtype"] = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  if (config.contains("dtype")) config["dtype"] = config["torch_dtype"];

  std::vector<TensorSpec> specs;
  for (const auto& it : items) specs.push_back(it.out);
  Writer wr(job, m, specs);
  sum.output_notes = wr.folder.notes();
  sum.tensors_in = ck.tensors().size();
  sum.tensors_out = items.size();
  const size_t es = static_cast<size_t>(dtype_bits(dtype) / 8);
  std::vector<float> f32;
  std::vector<uint8_t> enc;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    SafetensorsWriter& w = wr.w(it.out.name);
    std::string from = std::string(dtype_short_name(it.src->dtype));
    if (!it.qm) {
      if (it.out.dtype == it.src->dtype) {
        w.write(it.out.name, it.src->bytes);
      } else {
        f32.resize(it.src->numel());
        QT_ASSERT(decode_to_f32(it.src->dtype, it.src->bytes.data(), f32.size(), f32.data()));
        enc.resize(f32.size() * es);
        encode(f32.data(), f32.size(), dtype, enc.data());
        w.write(it.out.name, enc);
      }
    } else if (it.qm->weights.microscale()) {
      dequantize_microscale_module(*it.qm, dtype, job, m.dir(), w);
      from = microscale_name(it.qm->weights);
    } else {
      const QuantizedModule& qm = *it.qm;
      const int64_t rows = qm.dense_shape[0], cols = qm.dense_shape[1];
      // Every scale positive and finite: a zero or negative scale would be multiplied in silently
      // (zeroed or sign-flipped weights), a NaN/Inf would poison the row.
      {
        std::vector<float> sv(qm.scale->numel());
        if (!decode_to_f32(qm.scale->dtype, qm.scale->bytes.data(), sv.size(), sv.data())) sv.clear();
        for (size_t k = 0; k < sv.size(); ++k)
          if (!(sv[k] > 0.0f) || !std::isfinite(sv[k])) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%g", static_cast<double>(sv[k]));
            throw InputError(Kind::BadValue, qm.scale->file, qm.scale->name,
                             "scale element " + std::to_string(k) + " is " + buf +
                                 "; a quantization scale must be positive and finite");
          }
      }
      const ScaleGrid grid = scale_grid(qm.dense_shape, qm.weights);
      const int64_t sc = cdiv(cols, grid.cols_per);
      const size_t ses = static_cast<size_t>(dtype_bits(qm.scale->dtype) / 8);
      // Chunks of whole scale rows (a block strategy's row of blocks); per-tensor and per-row
      // schemes can cut anywhere since every row of the chunk finds its scale row at r / rows_per.
      const int64_t align = qm.weights.strategy == Strategy::Block ? grid.rows_per : 1;
      int64_t chunk = std::max<int64_t>(1, std::max<int64_t>(1, job.chunk_elements) / cols);
      chunk = std::max<int64_t>(align, chunk / align * align);
      std::vector<int8_t> unpacked;
      for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t nr = std::min(chunk, rows - r0);
        const uint8_t* codes = nullptr;
        DType cd = qm.codes->dtype;
        if (qm.packed) {
          const int64_t pc = packed_cols(cols, qm.weights.num_bits());
          unpacked = unpack_int_codes(reinterpret_cast<const int32_t*>(qm.codes->bytes.data()) + r0 * pc, nr, cols,
                                      qm.weights.num_bits());
          codes = reinterpret_cast<const uint8_t*>(unpacked.data());
          cd = DType::I8;
        } else {
          codes = qm.codes->bytes.data() + static_cast<size_t>(r0 * cols);
        }
        // Per-tensor: grid.rows_per = rows, so every chunk reads scale row 0.
        const uint8_t* scales = qm.scale->bytes.data() + static_cast<size_t>((r0 / grid.rows_per) * sc) * ses;
        f32.resize(static_cast<size_t>(nr * cols));
        dequantize(codes, cd, {nr, cols}, scales, qm.scale->dtype, grid, f32.data());
        for (size_t k = 0; k < f32.size(); ++k)
          if (!std::isfinite(f32[k]))
            throw InputError(Kind::BadValue, m.dir(), qm.codes->name,
                             "dequantized value at row " + std::to_string(r0 + static_cast<int64_t>(k) / cols) + ", column " +
                                 std::to_string(static_cast<int64_t>(k) % cols) + " is not finite (NaN code or scale)");
        enc.resize(f32.size() * es);
        encode(f32.data(), f32.size(), dtype, enc.data());
        w.write_chunk(it.out.name, static_cast<uint64_t>(r0 * cols) * es, enc);
      }
      from = qm.packed ? (qm.weights.type == QuantType::Int4 ? "int4" : "int8") + std::string(" packed") : from;
    }
    report(job, i + 1, items.size(), it.src->name, it.out, from);
  }
  json manifest;
  manifest["conversion"] = "dequantize";
  manifest["dtype"] = std::string(dtype_short_name(dtype));
  manifest["numerics"] = any_microscale ? std::string(kMicroscaleNumerics)
                                        : "x = f32(code) * f32(scale), rounded to nearest-even in the output dtype";
  wr.finish(m, config, manifest, job, sum);
  return sum;
}

}  // namespace qt
