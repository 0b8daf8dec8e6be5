#include "calib/like.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "calib/quant_plan.h"
#include "calib/smoothing.h"
#include "formats/manifest.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "libquant/drift_rows.h"
#include "libquant/error.h"
#include "libquant/dtype.h"
#include "libquant/float_formats.h"
#include "libquant/quantize.h"

namespace qt::calib {
namespace {

bool same_args(const QuantArgs& a, const QuantArgs& b) {
  return a.type == b.type && a.strategy == b.strategy && a.group_size == b.group_size && a.block_rows == b.block_rows &&
         a.block_cols == b.block_cols && a.dynamic == b.dynamic;
}
bool same_input(const std::optional<QuantArgs>& a, const std::optional<QuantArgs>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || same_args(*a, *b);
}
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// The observer the config names for static activations (or the KV cache); static_minmax when none.
std::string config_observer(const nlohmann::json& cfg) {
  if (!cfg.contains("quantization_config") || !cfg["quantization_config"].is_object()) return "static_minmax";
  const auto& q = cfg["quantization_config"];
  if (q.contains("config_groups") && q["config_groups"].is_object())
    for (const auto& [name, g] : q["config_groups"].items())
      if (g.is_object() && g.contains("input_activations") && g["input_activations"].is_object() &&
          g["input_activations"].value("observer", nlohmann::json()).is_string())
        return g["input_activations"]["observer"].get<std::string>();
  if (q.contains("kv_cache_scheme") && q["kv_cache_scheme"].is_object() &&
      q["kv_cache_scheme"].value("observer", nlohmann::json()).is_string())
    return q["kv_cache_scheme"]["observer"].get<std::string>();
  return "static_minmax";
}

// The size keys that must agree between NEW and QUANT (beside every tensor's shape).
constexpr const char* kArchKeys[] = {"architectures",       "model_type",        "hidden_size",
                                     "intermediate_size",   "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "head_dim",          "vocab_size",
                                     "tie_word_embeddings"};

}  // namespace

LikeRecipe read_like_recipe(const ModelFolder& quant) {
  LikeRecipe r;
  r.dir = quant.dir();
  const QuantInfo info = parse_quant_info(quant.config());
  if (info.method.empty())
    throw InputError(InputError::Kind::Unsupported, quant.config_path(), "",
                     "--like: this checkpoint is not quantized (config.json has no quantization_config)");
  if (info.method != "compressed-tensors" && info.method != "fp8")
    throw InputError(InputError::Kind::Unsupported, quant.config_path(), "",
                     "--like: quant_method '" + info.method + "' is not one qtool writes", "compressed-tensors or fp8",
                     info.method);
  if (info.groups.size() != 1)
    throw InputError(InputError::Kind::Unsupported, quant.config_path(), "",
                     "--like: the config has " + std::to_string(info.groups.size()) +
                         " quantization groups; qtool schemes use exactly one");
  const QuantGroup& g = info.groups[0];
  if (!g.weights)
    throw InputError(InputError::Kind::Unsupported, quant.config_path(), "",
                     "--like: group '" + g.name + "' weights are not a qtool scheme: " + g.weights_text);
  if (!g.weights_symmetric || (g.input && !g.input_symmetric))
    throw InputError(InputError::Kind::Unsupported, quant.config_path(), "",
                     "--like: group '" + g.name + "' is asymmetric; qtool schemes are symmetric");
  r.format = info.method == "fp8" ? OutputFormat::LegacyFp8 : OutputFormat::CompressedTensors;
  // A group-wise scheme made with another --group-size (one vLLM's kernels run) is that scheme.
  const bool other_group = g.weights->strategy == Strategy::Group &&
                           std::find(std::begin(kGroupSizes), std::end(kGroupSizes), g.weights->group_size) !=
                               std::end(kGroupSizes);
  for (const Scheme& s : all_schemes()) {
    QuantArgs sw = s.weights;
    if (other_group && sw.strategy == Strategy::Group) sw.group_size = g.weights->group_size;
    if (!same_args(sw, *g.weights) || !same_input(s.input, g.input)) continue;
    if (r.format == OutputFormat::LegacyFp8 ? !s.legacy_fp8 : g.format != ct_format_name(s.format)) continue;
    r.scheme = &s;
    if (sw.group_size != s.weights.group_size) r.group_size = sw.group_size;
    break;
  }
  if (!r.scheme)
    throw InputError(InputError::Kind::Unsupported, quant.config_path(), "",
                     "--like: no qtool scheme has this recipe (weights " + g.weights_text + ", input activations " +
                         g.input_text + ", format " + (g.format.empty() ? info.method : g.format) + ")",
                     scheme_names());
  if (info.kv_cache) {
    const QuantArgs kv{QuantType::Float8E4M3, Strategy::Tensor, 0, 0, 0, false};
    if (!same_args(*info.kv_cache, kv))
      throw InputError(InputError::Kind::Unsupported, quant.config_path(), "",
                       "--like: kv_cache_scheme is " + info.kv_cache_text + "; qtool writes FP8 per-tensor static only");
    r.kv_cache_fp8 = true;
  }
  r.observer = config_observer(quant.config());
  {
    std::error_code ec;
    const std::filesystem::path man = std::filesystem::path(quant.dir()) / kManifestFile;
    if (std::filesystem::exists(man, ec)) {
      const nlohmann::json mj = read_json_file(man.string());
      if (mj.is_object() && mj.contains("algorithm") && mj["algorithm"].is_string()) r.algorithm = mj["algorithm"];
    }
  }
  std::vector<std::string> skipped;
  for (auto& e : find_quantized_linears(quant.checkpoint(), info, &skipped)) {
    if (!same_args(e.weights, *g.weights))
      throw InputError(InputError::Kind::Unsupported, quant.dir(), e.weight_tensor, "--like: quantized unlike the config says");
    r.quantized_modules.push_back(e.module);
    r.entries.emplace(e.module, std::move(e));
  }
  if (!skipped.empty())
    throw InputError(InputError::Kind::Unsupported, quant.dir(), skipped[0].substr(0, skipped[0].find(':')),
                     "--like: a quantized module qtool cannot read: " + skipped[0]);
  if (r.quantized_modules.empty())
    throw InputError(InputError::Kind::Unsupported, quant.dir(), "", "--like: no quantized Linear found in the checkpoint");
  const std::string sm = (std::filesystem::path(quant.dir()) / kSmoothingFactorsFile).string();
  std::error_code ec;
  if (std::filesystem::exists(sm, ec)) r.smoothing_file = sm;
  return r;
}

void check_like_fit(const ModelFolder& model, const ModelFolder& quant, const LikeRecipe& r) {
  const auto& nc = model.config();
  const auto& qc = quant.config();
  for (const char* k : kArchKeys) {
    const nlohmann::json a = nc.contains(k) ? nc[k] : nlohmann::json(), b = qc.contains(k) ? qc[k] : nlohmann::json();
    if (a != b)
      throw InputError(InputError::Kind::Unsupported, model.config_path(), "",
                       std::string("--like: config.json '") + k + "' differs from " + quant.config_path() +
                           " (another architecture or size)",
                       b.dump(), a.dump());
  }
  // Tensors QUANT holds for its quantized modules and attention KV scales, by name.
  std::set<std::string> owned;
  for (const auto& [m, e] : r.entries)
    for (const char* suf : {".weight", ".weight_packed", ".weight_scale", ".weight_scale_inv", ".weight_shape",
                            ".weight_global_scale", ".input_scale", ".input_global_scale", ".weight_zero_point"})
      owned.insert(m + suf);
  const Checkpoint& nk = model.checkpoint();
  const Checkpoint& qk = quant.checkpoint();
  for (const TensorView& t : qk.tensors()) {
    if (owned.count(t.name)) continue;
    if (ends_with(t.name, ".k_scale") || ends_with(t.name, ".v_scale")) continue;
    const TensorView* n = nk.find(t.name);
    if (!n)
      throw InputError(InputError::Kind::Unsupported, model.dir(), t.name,
                       "--like: the model lacks this tensor, which " + quant.dir() + " has");
    if (n->shape != t.shape || n->dtype != t.dtype)
      throw InputError(InputError::Kind::Unsupported, n->file, t.name, "--like: shape or dtype differs from " + t.file,
                       std::string(dtype_name(t.dtype)) + " " + shape_string(t.shape),
                       std::string(dtype_name(n->dtype)) + " " + shape_string(n->shape));
  }
  for (const auto& [m, e] : r.entries) {
    const TensorView* n = nk.find(m + ".weight");
    if (!n)
      throw InputError(InputError::Kind::Unsupported, model.dir(), m + ".weight",
                       "--like: the model lacks module " + m + ", which " + quant.dir() + " quantizes");
    const std::vector<int64_t> want = {e.desc.N, e.desc.K};
    if (n->shape != want)
      throw InputError(InputError::Kind::Unsupported, n->file, n->name, "--like: shape differs from " + m + " in " + quant.dir(),
                       shape_string(want), shape_string(n->shape));
    if (n->dtype != DType::BF16 && n->dtype != DType::F16 && n->dtype != DType::F32)
      throw InputError(InputError::Kind::Unsupported, n->file, n->name, "--like: a quantized module's weight must be BF16, F16 or F32",
                       "BF16/F16/F32", std::string(dtype_name(n->dtype)));
  }
  for (const TensorView& t : nk.tensors()) {
    if (qk.find(t.name)) continue;
    if (ends_with(t.name, ".weight") && r.entries.count(t.name.substr(0, t.name.size() - 7))) continue;
    throw InputError(InputError::Kind::Unsupported, t.file, t.name,
                     "--like: the model has this tensor, which " + quant.dir() + " lacks (an extra module?)");
  }
}

LayerDrift weight_drift(const ModelFolder& quant, const LikeRecipe& r, const std::string& module, const TensorView& w) {
  const QuantizedLinearEntry& e = r.entries.at(module);
  const LoadedLinear l = load_quantized_linear(quant.checkpoint(), e);
  const int64_t N = e.desc.N, K = e.desc.K;
  QT_ASSERT(w.shape.size() == 2 && w.shape[0] == N && w.shape[1] == K);
  const ScaleGrid grid = l.ref.grid;
  const int64_t scols = (K + grid.cols_per - 1) / grid.cols_per;
  const int64_t srows = (N + grid.rows_per - 1) / grid.rows_per;
  std::vector<float> scales(static_cast<size_t>(srows * scols));
  const bool decoded = decode_to_f32(l.ref.scale_dtype, l.ref.scales, scales.size(), scales.data());
  QT_ASSERT(decoded);
  // Beyond the largest code by more than rounding: code_max + half the top step (FP8: 448 + 16).
  const float lim = e.weights.is_float() ? 464.0f : code_max(e.weights.type) + 0.5f;
  const size_t wbytes = dtype_bits(w.dtype) / 8, cbytes = 1;
  std::vector<double> diff2(N), ref2(N);
  std::vector<float> maxd(N);
  std::vector<float> amax_n(N), amax_q(N);
  std::vector<int64_t> clip(N);
  // One scale group at a time, in f32 within the group (a report, not a checkpoint value), in the
  // fixed order of libquant/drift_rows.h, so the result is the same on every ISA and at any thread
  // count. BF16 weights with E4M3 / INT8 codes go through the fused kernel (codes decoded in the
  // registers); other dtypes are decoded first and run its reference, which gives the same sums.
  const bool fused = w.dtype == DType::BF16 && (l.ref.code_dtype == DType::F8_E4M3 || l.ref.code_dtype == DType::I8);
#pragma omp parallel
  {
    std::vector<float> a(fused ? 0 : K), c(fused ? 0 : K);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const uint8_t* wrow = w.bytes.data() + static_cast<size_t>(i * K) * wbytes;
      const uint8_t* crow = l.ref.codes + static_cast<size_t>(i * K) * cbytes;
      if (!fused) {
        decode_to_f32(w.dtype, wrow, K, a.data());
        decode_to_f32(l.ref.code_dtype, crow, K, c.data());
      }
      const float* srow = scales.data() + (i / grid.rows_per) * scols;
      double d2 = 0, r2 = 0;
      float md = 0, an = 0, aq = 0;
      int64_t cl = 0;
      for (int64_t g0 = 0; g0 < K; g0 += grid.cols_per) {
        const int64_t g1 = std::min(K, g0 + grid.cols_per);
        const float s = srow[g0 / grid.cols_per], lim_s = lim * s;
        const DriftGroup g = fused ? drift_group_bf16(wrow + g0 * 2, crow + g0, l.ref.code_dtype, g1 - g0, s, lim_s)
                                   : drift_group_ref(a.data() + g0, c.data() + g0, g1 - g0, s, lim_s);
        d2 += g.d2, r2 += g.r2, cl += g.clipped;
        md = std::max(md, g.max_d), an = std::max(an, g.amax_new), aq = std::max(aq, g.amax_quant);
      }
      diff2[i] = d2, ref2[i] = r2, maxd[i] = md, amax_n[i] = an, amax_q[i] = aq, clip[i] = cl;
    }
  }
  LayerDrift d;
  d.module = module;
  d.elements = N * K;
  double D = 0, R = 0;
  for (int64_t i = 0; i < N; ++i) {
    D += diff2[i], R += ref2[i];
    d.max_abs = std::max(d.max_abs, static_cast<double>(maxd[i]));
    d.amax_new = std::max(d.amax_new, amax_n[i]);
    d.amax_quant = std::max(d.amax_quant, amax_q[i]);
    d.clipped += clip[i];
  }
  d.rel_l2 = R > 0 ? std::sqrt(D / R) : (D > 0 ? INFINITY : 0.0);
  return d;
}

}  // namespace qt::calib
