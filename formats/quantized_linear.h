// The quantized Linear layers of a checkpoint, as kernel descriptors (vLLM RFC #8913: the format
// produces descriptors; kernels never see the file format).
//
// A module P is quantized when the checkpoint holds P.weight in F8_E4M3/I8 (naive, int-, float-
// quantized, legacy fp8) or P.weight_packed (pack-quantized) together with P.weight_scale (or the
// legacy block name P.weight_scale_inv), and a config group covers P.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "formats/ct_config.h"
#include "libquant/kernels/descriptor.h"
#include "libquant/kernels/kernel.h"

namespace qt {

class Checkpoint;

struct QuantizedLinearEntry {
  std::string module;                 // "model.layers.0.self_attn.q_proj"
  QuantArgs weights;
  std::optional<QuantArgs> input;
  kernels::LinearDescriptor desc;
  std::string weight_tensor;          // P.weight or P.weight_packed
  std::string scale_tensor;           // P.weight_scale (or _inv)
  std::string input_scale_tensor;     // P.input_scale, P.input_global_scale (NVFP4 W4A4) or "" (dynamic / weight-only)
  bool packed = false;
  // NVFP4 / MXFP4 weight-only layers: P.weight_packed is U8 (two E2M1 codes per byte). The
  // descriptor then describes the equivalent layer the CPU kernels run exactly: every E2M1 value
  // is an E4M3 value, and each group's effective scale (FP8 scale / global scale, or 2^(E-127))
  // is handed over as an F32 scale (load_quantized_linear converts both).
  bool fp4_packed = false;
  std::string global_scale_tensor;    // P.weight_global_scale (NVFP4) or ""
  // Set only by verify's served view (verify/moe_served.h): the weight scale tensor vLLM
  // requantizes this layer's FP8 codes to (the larger scale of a fused expert gate/up pair).
  std::string served_scale_tensor;
};

// Every quantized Linear covered by the config, in checkpoint order. Modules stored quantized
// that the config does not describe in a way qtool can run are reported in `skipped` with why.
std::vector<QuantizedLinearEntry> find_quantized_linears(const Checkpoint& ckpt, const QuantInfo& q,
                                                         std::vector<std::string>* skipped = nullptr);

// One layer's codes (unpacked for pack-quantized) and a kernel-facing reference to them. Owns
// the unpacked codes; otherwise points into the checkpoint's memory map (which must outlive it).
struct LoadedLinear {
  std::vector<uint8_t> unpacked;      // pack-quantized only (FP4: E4M3 bytes of the E2M1 codes)
  std::vector<float> scales_f32;      // FP4 layers: effective F32 group scales
  kernels::QuantizedWeightRef ref;
};
LoadedLinear load_quantized_linear(const Checkpoint& ckpt, const QuantizedLinearEntry& e);

// The logical [out, in] stored in a pack-quantized `P.weight_shape` tensor (I64 [2]); nullopt if
// `ws` is null or not an I64 [2] tensor. Reads its 16 bytes.
std::optional<std::vector<int64_t>> weight_shape_value(const TensorView* ws);

}  // namespace qt
