// Conversions between quantized checkpoint layouts, and back to a dense checkpoint.
//
// 1. Layout conversion, lossless (weight codes are copied byte for byte, scales keep their values
//    exactly), between the two FP8 layouts vLLM loads (formats/FORMATS.md §3.1 and §4):
//
//      legacy AutoFP8 "fp8"                         compressed-tensors "float-quantized"
//      ------------------------------------------   ----------------------------------------------
//      per-tensor: P.weight F8_E4M3                 P.weight F8_E4M3 (same bytes)
//                  P.weight_scale F32 []            P.weight_scale [1]   (strategy tensor)
//                  P.input_scale F32 []  (static)   P.input_scale [1]    (input tensor, static)
//      activation_scheme "dynamic"                  input tensor, dynamic (vLLM's legacy path is
//                                                   per-tensor dynamic; CT per-token dynamic
//                                                   converts to it, with a note)
//      block:      weight_block_size [bn, bk]       strategy block, block_structure [bn, bk]
//                  P.weight_scale_inv F32 [..]      P.weight_scale [..]  (the same multipliers)
//                  activation_scheme "dynamic"      input group, group_size bk, dynamic
//      kv_cache_scheme "static",                    kv_cache_scheme float 8 tensor static,
//      *.self_attn.{k,v}_scale F32 []               *.self_attn.{k,v}_scale [1]
//      ignored_layers                               ignore
//
//    Scale dtype: legacy output gets F32 (the AutoFP8 layout) and compressed-tensors output keeps
//    the source's dtype, unless `scale_dtype` asks for another; a narrowing conversion (e.g. F32
//    -> BF16) is done only if every value is exactly representable, else InputError(BadValue)
//    naming the tensor and the first value that is not. So legacy -> CT -> legacy, and CT(BF16)
//    -> legacy -> CT with scale_dtype BF16, give back byte-identical tensors.
//    The ignore list written is the source's (exact names kept in order, `re:` patterns expanded
//    to the module names they match) followed by every other unquantized 2-D weight module
//    (Linear-like and embeddings, as qtool quantize writes it): vLLM needs each unquantized
//    Linear named, and compressed-tensors' model-free reader treats every such weight as a Linear.
//    Not convertible (InputError(Unsupported)): compressed-tensors checkpoints with several
//    groups, non-FP8 or non-tensor/block weights, weight-only FP8 (legacy fp8 always quantizes
//    activations), block weights with static activations, asymmetric schemes.
//
// 2. Dequantization of every scheme qtool writes (compressed-tensors float-/int-/naive-/
//    pack-quantized with tensor, channel, group or block scales; legacy fp8 per-tensor and block)
//    to a dense checkpoint: x = f32(code) * f32(scale) (one f32 multiply, libquant dequantize()),
//    rounded RNE to the output dtype. Unquantized floating tensors (embeddings, norms, lm_head)
//    are converted to the output dtype too (exact when widening); other tensors are copied.
//    Scale tensors, weight_shape, input/kv-cache scales are dropped; quantization_config is
//    removed from config.json and torch_dtype set. Asymmetric weights (zero points) and
//    activation reordering (g_idx) are refused (Unsupported).
//
// Both stream tensor by tensor into a PartialFolder (formats/output_folder.h), copy the model
// folder's other files (tokenizer, generation config, ...), write a new qtool_manifest.json and are
// deterministic.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "formats/convert_job.h"
#include "formats/ct_config.h"
#include "libquant/tensor_view.h"
#include "libquant/dtype.h"
#include "libquant/schemes.h"

namespace qt {

class ModelFolder;

// One quantized Linear module of a checkpoint, validated.
struct QuantizedModule {
  std::string module;               // "model.layers.0.self_attn.q_proj"
  QuantArgs weights;                // how its weight is quantized
  const TensorView* codes = nullptr;  // P.weight (F8_E4M3 / I8) or P.weight_packed (I32)
  const TensorView* scale = nullptr;  // P.weight_scale, or P.weight_scale_inv (legacy block)
  const TensorView* shape = nullptr;  // P.weight_shape (packed only)
  const TensorView* global_scale = nullptr;  // P.weight_global_scale (NVFP4 only)
  std::vector<int64_t> dense_shape;   // [out, in]
  bool packed = false;      // INT codes packed in I32 words (pack-quantized)
  bool fp4_packed = false;  // FP4 E2M1 codes two per U8 byte (nvfp4- / mxfp4-pack-quantized)
};

// What a quantized checkpoint holds, read from config.json and the tensor names.
struct QuantizedCheckpoint {
  QuantInfo info;                       // parse_quant_info(config)
  bool legacy = false;                  // quant_method "fp8"
  std::vector<QuantizedModule> modules; // checkpoint order
};

// Finds and validates every quantized module. Throws InputError naming config.json or the tensor:
// Usage (the checkpoint is not quantized), Unsupported (a quant_method other than
// compressed-tensors / fp8; zero points; g_idx; a config group qtool cannot represent), BadFile (a
// scale without its weight, a quantized weight without scale, wrong scale shape or dtype, no
// config group targeting a quantized module).
QuantizedCheckpoint read_quantized_checkpoint(const ModelFolder& m);

// Layout conversion (1.). `to` must differ from the source layout (else InputError(Usage)).
// scale_dtype: nullopt = default (see above); else F32, F16 or BF16.
ConvertSummary convert_quant_layout(const ModelFolder& m, OutputFormat to, std::optional<DType> scale_dtype,
                                    const ConvertJob& job);

// Dequantization (2.). dtype: BF16, F16 or F32.
ConvertSummary dequantize_model(const ModelFolder& m, DType dtype, const ConvertJob& job);

}  // namespace qt
