// `qtool quantize NEW -o OUT --like QUANT`: quantize NEW with the recipe of an existing quantized
// checkpoint QUANT, without running the model (re-deploying a fine-tuned or RL-updated model in
// the format already serving).
//
// What is taken from QUANT (a compressed-tensors or legacy-fp8 checkpoint qtool can read):
//   - the scheme: the one qtool scheme whose weight and input-activation args and format equal
//     QUANT's single config group (anything else is refused, naming what QUANT has);
//   - which modules are quantized: exactly those QUANT stores quantized (the ignore list follows);
//   - every static `input_scale` and `k_scale` / `v_scale`: copied byte for byte;
//   - SmoothQuant: QUANT's `qtool_smoothing.json` factors, applied to NEW's norms and weights;
//   - the observer named in the config (recorded again in OUT's config).
// Weight scales are NEW's own (computed from NEW's weights, as any run does).
//
// NEW must fit QUANT: the same architecture (config `architectures`, `model_type` and the size
// keys), the same tensors with the same shapes and dtypes (a quantized module's weight against
// QUANT's logical weight shape). The first mismatch is an error naming the tensor.
//
// Drift (per quantized module, computed while writing): NEW's weight (smoothed when QUANT is)
// against QUANT's dequantized weight: relative L2 distance, max |difference|, and how many of
// NEW's elements lie beyond the range QUANT's weight scale covers by more than rounding
// (|w| > (code_max + half the top step) * scale of their group: 464 s for FP8, 127.5 s for INT8,
// 7.5 s for INT4), i.e. would be clamped if QUANT's weight scales were kept. The sums are f32
// within a scale group in the fixed order of libquant/drift_rows.h (one fused pass for BF16
// weights with E4M3 / INT8 codes), accumulated per row in double: the same on every ISA.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/ct_config.h"
#include "formats/quantized_linear.h"
#include "libquant/tensor_view.h"
#include "libquant/schemes.h"

namespace qt {
class ModelFolder;
}

namespace qt::calib {

// The recipe read from QUANT.
struct LikeRecipe {
  std::string dir;
  const Scheme* scheme = nullptr;
  OutputFormat format = OutputFormat::CompressedTensors;
  bool kv_cache_fp8 = false;
  std::string observer = "static_minmax";       // activation / kv observer named by the config
  std::vector<std::string> quantized_modules;  // QUANT's quantized Linears, checkpoint order
  std::map<std::string, QuantizedLinearEntry> entries;  // module -> its tensors and logical shape
  std::string smoothing_file;                  // QUANT/qtool_smoothing.json, "" if none
  // The weight group size when QUANT's differs from its scheme's own (w4a16 made with
  // --group-size 64 or 32); 0 otherwise. Passed on as the plan's group size.
  int64_t group_size = 0;
  // How QUANT's weights were rounded, from its qtool_manifest.json ("rtn" when it has none or
  // says so; "gptq"). --like always rounds to nearest: GPTQ needs a calibration pass.
  std::string algorithm = "rtn";
};

// Reads QUANT's config and tensors. Throws InputError: Missing (no folder / config), Unsupported
// (not quantized, several config groups, args that are no qtool scheme, asymmetric), BadFile.
LikeRecipe read_like_recipe(const ModelFolder& quant);

// Throws InputError(Unsupported) naming the first tensor / config key where `model` does not fit
// `quant` (see above).
void check_like_fit(const ModelFolder& model, const ModelFolder& quant, const LikeRecipe& recipe);

// One module's drift (see above).
struct LayerDrift {
  std::string module;
  double rel_l2 = 0;          // ||W_new - deq(Q)|| / ||deq(Q)||
  double max_abs = 0;         // max |W_new - deq(Q)|
  int64_t clipped = 0;        // elements of W_new beyond QUANT's scale range
  int64_t elements = 0;
  float amax_new = 0, amax_quant = 0;  // max |W_new|, max |deq(Q)|
};

// `--check-scales`: one static scale QUANT fixed against the scale a short calibration of NEW
// (smoothed with QUANT's factors when QUANT is) asks for, made with the same formula.
struct ScaleCheck {
  std::string tensor;        // "model.layers.0.self_attn.q_proj.input_scale", "...self_attn.k_scale"
  float quant_scale = 0;     // QUANT's (and OUT's) value
  float needed_scale = 0;    // what NEW's activations give
  double ratio = 0;          // needed / quant: > 1 means QUANT's scale no longer covers them (they clip)
};

// The drift of one module: `w` NEW's weight as quantized (bytes in F32/F16/BF16), compared with
// QUANT's stored codes and scales for `module`. Deterministic at any thread count.
LayerDrift weight_drift(const ModelFolder& quant, const LikeRecipe& recipe, const std::string& module,
                        const TensorView& w);

}  // namespace qt::calib
