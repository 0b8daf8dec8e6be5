#include "calib/quantize_pipeline.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "formats/atomic_file.h"
#include "formats/checkpoint.h"
#include "formats/mmap_file.h"
#include "formats/manifest.h"
#include "formats/ct_config.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "formats/safetensors_writer.h"
#include "calib/smoothing.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"
#include "libquant/pack.h"
#include "libquant/quantize.h"

namespace qt::calib {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string last_component(const std::string& m) {
  auto p = m.rfind('.');
  return p == std::string::npos ? m : m.substr(p + 1);
}

// Routed experts: which fused-MoE input a projection reads in vLLM -- w13 (gate and up, w1 and
// w3) or w2 (down).
bool is_w13(const std::string& last) { return last == "gate_proj" || last == "up_proj" || last == "w1" || last == "w3"; }
bool is_w2(const std::string& last) { return last == "down_proj" || last == "w2"; }

float absmax_of_group(const std::map<std::string, float>& m, const std::string& module) {
  auto it = m.find(module);
  if (it == m.end()) return NAN;
  float v = it->second;
  for (const auto& sib : fused_siblings(module)) {
    auto jt = m.find(sib);
    if (jt != m.end()) v = std::max(v, jt->second);
  }
  // A routed expert (".experts.N.proj"): vLLM's fused-MoE kernels use ONE input scale per layer
  // for w13 and one for w2, the maximum over the experts (calib/MODELS.md §10 and
  // qtool-quantize(1), MIXTURE OF EXPERTS), so the checkpoint states exactly that value for every
  // expert. The keys of one block's experts are contiguous in the sorted map.
  const auto pos = module.rfind(".experts.");
  if (pos != std::string::npos) {
    const std::string prefix = module.substr(0, pos + 9);  // "...mlp.experts."
    const std::string last = last_component(module);
    const bool w13 = is_w13(last);
    if (w13 || is_w2(last))
      for (auto jt = m.lower_bound(prefix); jt != m.end() && jt->first.compare(0, prefix.size(), prefix) == 0; ++jt) {
        const std::string l2 = last_component(jt->first);
        if (w13 ? is_w13(l2) : is_w2(l2)) v = (jt->second > v || jt->second != jt->second) ? jt->second : v;
      }
  }
  return v;
}

// A calibrated statistic must be finite and positive; anything else would be a silent bad scale.
float checked_scale(float amax, QuantType t, DType sdt, const std::string& model_path,
                    const std::string& what) {
  if (std::isnan(amax))
    throw InputError(InputError::Kind::BadValue, model_path, what,
                     "no calibration statistic (the module saw no tokens, or stats do not match the model)");
  if (!std::isfinite(amax))
    throw InputError(InputError::Kind::BadValue, model_path, what, "calibration statistic is infinite");
  if (amax == 0.0f)
    throw InputError(InputError::Kind::BadValue, model_path, what,
                     "calibration statistic is zero (all observed activations were 0)");
  return scale_from_amax(amax, t, sdt);
}

std::vector<uint8_t> scalar_bytes(DType t, float v) {
  std::vector<uint8_t> b(static_cast<size_t>(dtype_bits(t) / 8));
  store_float(t, v, b.data());
  return b;
}

}  // namespace

float static_input_scale(const ActivationStats& stats, const std::string& module, QuantType t,
                         DType scale_dtype, const std::string& model_path) {
  return checked_scale(absmax_of_group(stats.input_absmax, module), t, scale_dtype, model_path,
                       module + ".input_scale");
}

float nvfp4_input_global_scale(const ActivationStats& stats, const std::string& module, DType act_dtype,
                               const std::string& model_path) {
  const float amax = absmax_of_group(stats.input_absmax, module);
  checked_scale(amax, QuantType::Float8E4M3, DType::F32, model_path, module + ".input_global_scale");
  // The activations are held in the model dtype at inference and in llm-compressor's
  // calibration, so their absmax is a value of that dtype: round the f32 statistic to it first.
  return nvfp4_global_scale(round_to_dtype(act_dtype, amax), act_dtype);
}

uint64_t free_disk_bytes(const std::string& dir) {
  struct statvfs sv {};
  if (::statvfs(dir.c_str(), &sv) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
}

void check_free_space(const std::string& dir, uint64_t free_bytes, uint64_t output_bytes, const ScratchFiles& scratch) {
  const uint64_t need = output_bytes + scratch.during_write +
                        (scratch.before_write > output_bytes ? scratch.before_write - output_bytes : 0) + (64ull << 20);
  if (free_bytes >= need) return;
  auto mib = [](uint64_t b) { return std::to_string((b + (1ull << 20) - 1) >> 20) + " MiB"; };
  std::string expected = std::to_string(need >> 20) + " MiB";
  if (!scratch.empty())
    expected += " (the output " + mib(output_bytes) + "; " + scratch.owner + ": " + scratch.during_write_what + " " +
                mib(scratch.during_write) + " while writing, " + scratch.before_write_what + " " +
                mib(scratch.before_write) + " before)";
  throw InputError(InputError::Kind::Io, dir, "", "not enough free disk space", expected,
                   std::to_string(free_bytes >> 20) + " MiB free");
}

void preflight_output(const ModelFolder& model, const QuantPlan& plan, const QuantizeJob& job, const ScratchFiles& scratch) {
  check_output_folder(job.output_dir, model.dir(), job.overwrite);
  const fs::path parent = fs::path(canonical_or_abs(job.output_dir)).parent_path();
  check_writable_folder(parent.string(), "the output location");
  check_free_space(parent.string(), free_disk_bytes(parent.string()), plan.output_bytes, scratch);
}

QuantizeSummary run_quantize(const ModelFolder& model, const QuantPlan& plan, const QuantizeJob& job) {
  const Scheme scheme = plan.options.effective_scheme();
  const bool legacy = plan.options.format == OutputFormat::LegacyFp8;
  const bool needs_stats = (scheme.input && !scheme.input->dynamic) || scheme.needs_calibration ||
                           plan.options.kv_cache_fp8;
  if (needs_stats && job.stats == nullptr)
    throw InputError(InputError::Kind::Usage, model.dir(), "",
                     std::string("scheme ") + scheme.name + " needs calibration statistics");
  QT_ASSERT(job.smoothing == nullptr || job.stats == &job.smoothing->stats);

  // Everything goes into <OUT>.qtool-partial-<pid>; removed unless published at the end.
  PartialFolder folder = PartialFolder::create(job.output_dir, model.dir(), job.overwrite, job.lock);
  const fs::path partial = folder.path();
  // The manifest's input hashes, computed alongside (formats/manifest.h).
  InputHashes hashes(model.checkpoint().shard_paths(), job.hash_inputs);

  const auto& tensors = model.checkpoint().tensors();
  std::map<std::string, const TensorView*> by_name;
  for (const auto& t : tensors) by_name[t.name] = &t;

  // ---- shard layout ----
  std::vector<TensorSpec> specs;
  for (const auto& o : plan.outputs) specs.push_back({o.name, o.dtype, o.shape});
  const auto shards = plan_shards(specs, job.max_shard_bytes);
  std::map<std::string, size_t> shard_of;
  for (size_t s = 0; s < shards.size(); ++s)
    for (const auto& sp : shards[s].tensors) shard_of[sp.name] = s;

  std::vector<std::unique_ptr<SafetensorsWriter>> writers;
  for (const auto& sh : shards)
    writers.push_back(std::make_unique<SafetensorsWriter>((partial / sh.file_name).string(), sh.tensors,
                                                          std::map<std::string, std::string>{{"format", "pt"}}));
  auto write = [&](const std::string& name, std::span<const uint8_t> bytes) {
    writers[shard_of.at(name)]->write(name, bytes);
  };

  // A tensor written unchanged (norms, embeddings, lm_head, ignored layers) is copied from its
  // input shard's file range by the kernel (SafetensorsWriter::write_copy), so its bytes need not
  // pass through this process; one input shard is open at a time (tensors come in shard order).
  // A shard that cannot be reopened as the same file is written from the mapping as before.
  struct SourceFile {
    std::optional<size_t> shard;
    int fd = -1;
    ~SourceFile() { if (fd >= 0) ::close(fd); }
  } source;
  auto write_unchanged = [&](const TensorView& v) {
    const Checkpoint& ck = model.checkpoint();
    const std::optional<size_t> sh = ck.shard_of(v.name);
    if (!sh) return write(v.name, v.bytes);
    if (source.shard != sh) {
      if (source.fd >= 0) ::close(source.fd);
      source.shard = sh;
      source.fd = ck.shard(*sh).mapping()->reopen_same_file();
    }
    if (source.fd < 0) return write(v.name, v.bytes);
    writers[shard_of.at(v.name)]->write_copy(v.name, v.bytes, source.fd, ck.shard(*sh).file_offset(v));
  };

  // Outputs grouped by source tensor, in plan order.
  std::map<std::string, std::vector<const OutputTensor*>> outs_of_source;
  std::vector<const OutputTensor*> kv_outputs;
  for (const auto& o : plan.outputs) {
    if (o.kind == OutputTensor::Kind::KvScale) kv_outputs.push_back(&o);
    else outs_of_source[o.source].push_back(&o);
  }

  // NVFP4: a fused set (q/k/v, gate/up) shares one global scale, derived from the max |w| over
  // all its quantized members (llm-compressor fuses their weight observers). Each member's
  // absmax is read once, when the set is first met.
  std::map<std::string, float> member_amax;
  std::map<std::string, bool> quantized_module;
  std::map<std::string, const TensorView*> weight_of_module;
  for (const auto& d : plan.decisions)
    if (d.quantize) { quantized_module[d.module] = true; weight_of_module[d.module] = by_name.at(d.name); }
  auto fused_amax = [&](const std::string& module) {
    float m = 0.0f;
    for (const auto& sib : fused_siblings(module)) {
      if (sib == module || !quantized_module.count(sib)) continue;
      auto it = member_amax.find(sib);
      if (it == member_amax.end())
        it = member_amax.emplace(sib, tensor_absmax(*weight_of_module.at(sib), job.allow_nonfinite)).first;
      m = std::max(m, it->second);
    }
    return m;
  };

  QuantizeSummary sum;
  sum.tensors_total = plan.decisions.size();
  sum.input_bytes = plan.input_bytes;
  sum.output_bytes = plan.output_bytes;
  sum.shards = shards.size();

  for (size_t i = 0; i < plan.decisions.size(); ++i) {
    const TensorDecision& d = plan.decisions[i];
    const TensorView& orig = *by_name.at(d.name);
    // SmoothQuant: the smoothed bytes stand in for the stored ones (one tensor's copy at a time).
    std::vector<uint8_t> smoothed;
    TensorView t = orig;
    if (job.smoothing) {
      smoothed = job.smoothing->smoothed_bytes(orig);
      if (!smoothed.empty()) t.bytes = smoothed;
    }
    TensorProgress prog;
    prog.smoothed = !smoothed.empty();
    prog.index = i + 1;
    prog.total = plan.decisions.size();
    prog.decision = &d;
    prog.shape = shape_string(t.shape);
    prog.from_dtype = std::string(dtype_short_name(t.dtype));
    prog.in_bytes = t.bytes.size();
    if (!d.quantize) {
      if (smoothed.empty()) write_unchanged(orig);
      else write(t.name, t.bytes);
      prog.to_dtype = prog.from_dtype;
      prog.out_bytes = t.bytes.size();
    } else {
      QuantizedWeight rtn;
      const QuantizedWeight* qp = nullptr;
      if (job.precomputed && job.precomputed->contains(d.module)) {
        rtn = job.precomputed->get(d.module);
        qp = &rtn;
      }
      if (!qp) {
        QuantizeOptions qo;
        qo.allow_nonfinite = job.allow_nonfinite;
        if (scheme.weights.scale_format == ScaleFormat::Nvfp4) qo.group_amax_override = fused_amax(d.module);
        rtn = quantize_weight(t, scheme.weights, qo);
        qp = &rtn;
      }
      const QuantizedWeight& q = *qp;
      sum.tensors_quantized++;
      sum.zero_groups += q.zero_groups;
      prog.amax = q.amax;
      prog.zero_groups = q.zero_groups;
      if (job.on_quantized) job.on_quantized(d, t, q);
      for (const OutputTensor* o : outs_of_source.at(d.name)) {
        switch (o->kind) {
          case OutputTensor::Kind::QuantWeight:
            write(o->name, q.codes);
            prog.to_dtype = std::string(dtype_short_name(o->dtype));
            break;
          case OutputTensor::Kind::PackedWeight: {
            if (scheme.weights.type == QuantType::Float4E2M1) {
              auto bytes = pack_e2m1(q.codes.data(), t.shape[0], t.shape[1]);
              write(o->name, bytes);
              prog.to_dtype = "fp4";
              break;
            }
            auto words = pack_int_codes(reinterpret_cast<const int8_t*>(q.codes.data()), t.shape[0],
                                        t.shape[1], scheme.weights.num_bits());
            write(o->name, {reinterpret_cast<const uint8_t*>(words.data()), words.size() * 4});
            prog.to_dtype = scheme.weights.type == QuantType::Int4 ? "int4" : "int8";
            break;
          }
          case OutputTensor::Kind::WeightScale:
            if (o->dtype == q.scale_dtype) {
              write(o->name, q.scale_bytes);
            } else {  // legacy fp8: the same (model-dtype) value stored as F32, exactly
              std::vector<float> s(q.scale_bytes.size() / (dtype_bits(q.scale_dtype) / 8));
              decode_to_f32(q.scale_dtype, q.scale_bytes.data(), s.size(), s.data());
              write(o->name, {reinterpret_cast<const uint8_t*>(s.data()), s.size() * 4});
            }
            break;
          case OutputTensor::Kind::GlobalScale: {
            QT_ASSERT(q.has_global_scale);
            write(o->name, scalar_bytes(DType::F32, q.global_scale));
            break;
          }
          case OutputTensor::Kind::WeightShape: {
            int64_t shp[2] = {t.shape[0], t.shape[1]};
            write(o->name, {reinterpret_cast<const uint8_t*>(shp), sizeof shp});
            break;
          }
          case OutputTensor::Kind::InputScale: {
            if (auto fx = job.fixed_scales.find(o->name); fx != job.fixed_scales.end()) {
              QT_ASSERT(fx->second.size() == o->nbytes);
              write(o->name, fx->second);
              break;
            }
            if (scheme.input->scale_format == ScaleFormat::Nvfp4) {  // input_global_scale, F32
              write(o->name, scalar_bytes(DType::F32, nvfp4_input_global_scale(*job.stats, d.module, t.dtype,
                                                                               model.dir())));
              break;
            }
            // Computed and stored in the scale dtype: the Linear's own dtype (F32 in legacy fp8).
            float s = static_input_scale(*job.stats, d.module, scheme.input->type, o->dtype, model.dir());
            write(o->name, scalar_bytes(o->dtype, s));
            break;
          }
          default: QT_ASSERT(false && "unexpected output kind for a weight");
        }
        prog.out_bytes += o->nbytes;
      }
    }
    if (job.on_tensor) job.on_tensor(prog);
  }
  // KV-cache scales: amax / 448 of post-RoPE K and of V (formats/FORMATS.md §3.4, rule 16).
  for (const OutputTensor* o : kv_outputs) {
    if (auto fx = job.fixed_scales.find(o->name); fx != job.fixed_scales.end()) {
      QT_ASSERT(fx->second.size() == o->nbytes);
      write(o->name, fx->second);
      continue;
    }
    const bool is_k = last_component(o->name) == "k_scale";
    const auto& m = is_k ? job.stats->k_absmax : job.stats->v_absmax;
    auto it = m.find(o->module);
    float s = checked_scale(it == m.end() ? NAN : it->second, QuantType::Float8E4M3, o->dtype,
                            model.dir(), o->name);
    write(o->name, scalar_bytes(o->dtype, s));
  }
  for (auto& w : writers) w->commit();

  // Index (only when sharded), config.json, the other files, manifest.
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    sum.output_files.push_back(shards[s].file_name);
    for (const auto& sp : shards[s].tensors) weight_map[sp.name] = shards[s].file_name;
  }
  if (shards.size() > 1) {
    write_index_json(partial.string(), plan.output_bytes, weight_map);
    sum.output_files.push_back("model.safetensors.index.json");
  }
  json config = model.config();
  config.erase("compression_config");
  CtWriteOptions co;
  co.ignore = plan.ignore_written;
  co.kv_cache_fp8 = plan.options.kv_cache_fp8;
  if (job.stats) co.activation_observer = job.stats->observer;
  config["quantization_config"] = legacy ? make_legacy_fp8_config(scheme, co) : make_ct_quant_config(scheme, co);
  write_config_json(partial.string(), config);
  sum.output_files.push_back("config.json");
  copy_other_files(model, partial.string(), sum.output_files);

  if (job.smoothing) {
    write_file_atomic((partial / kSmoothingFactorsFile).string(), smoothing_factors_json(*job.smoothing));
    sum.output_files.push_back(kSmoothingFactorsFile);
  }

  json manifest = manifest_base(job.command_line, hashes);
  manifest["scheme"] = scheme.name;
  manifest["format"] = legacy ? "legacy-fp8" : "compressed-tensors";
  if (scheme.weights.strategy == Strategy::Group) manifest["group_size"] = scheme.weights.group_size;
  manifest["algorithm"] = "rtn";  // manifest_extra says "gptq" (and its parameters) when GPTQ ran
  manifest["kv_cache"] = plan.options.kv_cache_fp8 ? "fp8" : "none";
  manifest["numerics"] = scheme.weights.microscale()
                            ? "compressed-tensors 0.20 (NVFP4 / MX scales and FP4 rounding, libquant/NUMERICS.md)"
                            : "compressed-tensors >= 0.17 (scale = dtype(amax / D), dtype-rounded quotient, RNE)";
  if (job.stats) manifest["activation_observer"] = job.stats->observer;
  if (job.smoothing) {
    manifest["smoothquant"] = {{"alpha", job.smoothing->alpha},
                               {"smoothed_layers", job.smoothing->mappings.size()},
                               {"min_factor", job.smoothing->min_factor},
                               {"max_factor", job.smoothing->max_factor},
                               {"mappings", job.smoothing->which == SmoothingMappings::All ? "all" : "norms"},
                               {"factors_file", kSmoothingFactorsFile},
                               {"method", "llm-compressor SmoothQuantModifier formula; input_layernorm -> q/k/v, "
                                          "post_attention_layernorm -> gate/up (+ up_proj -> down_proj with mappings "
                                          "all); static input scales from the smoothed activations"}};
    // MoE layers' post_attention_layernorm into every consumer (calib/smoothing.h); absent otherwise.
    if (job.smoothing->moe_norm) manifest["smoothquant"]["moe_norm"] = true;
  }
  manifest["quantized_modules"] = plan.quantized_modules.size();
  manifest["ignore"] = plan.ignore_written;
  manifest.update(job.manifest_extra);
  write_manifest(partial.string(), manifest);
  sum.output_files.push_back(kManifestFile);

  // Publish: rename partial -> OUT (an existing OUT is replaced only now, after success).
  folder.publish();
  return sum;
}

}  // namespace qt::calib
