#include "libquant/schemes.h"

#include <array>

namespace qt {
namespace {

constexpr QuantArgs fp8(Strategy s) { return {QuantType::Float8E4M3, s, 0, 0, 0, false}; }
constexpr QuantArgs int8(Strategy s) { return {QuantType::Int8, s, 0, 0, 0, false}; }
constexpr QuantArgs dyn(QuantArgs a) { a.dynamic = true; return a; }
constexpr QuantArgs micro(QuantType t, int64_t g, ScaleFormat f) {
  return {t, Strategy::Group, g, 0, 0, false, f};
}

// The table. Presets follow compressed-tensors' (quant_scheme.py): FP8 = tensor/tensor static,
// FP8_DYNAMIC = channel/token, FP8_BLOCK = block 128x128 / group 128 dynamic, W8A8 (INT8) =
// channel/token; W8A16 is per-channel here (compressed-tensors <= 0.15 preset; 0.16+ uses
// group 128), W4A16 = int4 group 128. NVFP4A16 = fp4 tensor_group 16 with FP8 scales, MXFP4A16 =
// fp4 group 32 with uint8 (E8M0) scales, MXFP8 = fp8 group 32 E8M0 weights and activations
// (compressed-tensors 0.20 quant_scheme.py). NVFP4 = NVFP4A16's weights plus FP4 activations in
// groups of 16, "local" dynamic: FP8 group scales computed at inference under a static FP32
// global input scale from calibration (input_global_scale; `dynamic` is true here, the config
// writes "local"). MXFP4 = MXFP4A16's weights plus FP4 activations per group of 32 with E8M0
// scales, fully dynamic (nothing calibrated, nothing extra stored).
const std::array<Scheme, 13> kSchemes = {{
    {"fp8-dynamic", "FP8 E4M3 weights per-channel; FP8 activations dynamic per-token",
     fp8(Strategy::Channel), dyn(fp8(Strategy::Token)), CtFormat::FloatQuantized, false, false,
     "CompressedTensorsW8A8Fp8 (SM>=89), weight-only Marlin below"},
    {"fp8-static", "FP8 E4M3 weights per-tensor; FP8 activations static per-tensor (calibrated)",
     fp8(Strategy::Tensor), fp8(Strategy::Tensor), CtFormat::FloatQuantized, true, true,
     "CompressedTensorsW8A8Fp8 (SM>=89)"},
    {"fp8-block", "FP8 E4M3 weights in 128x128 blocks; FP8 activations dynamic per-group of 128",
     QuantArgs{QuantType::Float8E4M3, Strategy::Block, 0, 128, 128, false},
     QuantArgs{QuantType::Float8E4M3, Strategy::Group, 128, 0, 0, true}, CtFormat::FloatQuantized,
     false, false, "CompressedTensorsW8A8Fp8 block (SM>=89)"},
    {"int8-dynamic", "INT8 symmetric weights per-channel; INT8 activations dynamic per-token",
     int8(Strategy::Channel), dyn(int8(Strategy::Token)), CtFormat::IntQuantized, false, false,
     "CompressedTensorsW8A8Int8 dynamic (SM>=75)"},
    {"int8-static", "INT8 symmetric weights per-channel; INT8 activations static per-tensor (calibrated)",
     int8(Strategy::Channel), int8(Strategy::Tensor), CtFormat::IntQuantized, true, false,
     "CompressedTensorsW8A8Int8 static (SM>=75)"},
    {"w8a16", "INT8 symmetric weights per-channel, packed; activations unquantized",
     int8(Strategy::Channel), std::nullopt, CtFormat::PackQuantized, false, false,
     "CompressedTensorsWNA16 Marlin (SM>=80)"},
    {"w4a16", "INT4 symmetric weights, group 128, round-to-nearest, packed; activations unquantized",
     QuantArgs{QuantType::Int4, Strategy::Group, 128, 0, 0, false}, std::nullopt,
     CtFormat::PackQuantized, false, false, "CompressedTensorsWNA16 Marlin (SM>=80)"},
    {"fp8-w8a16", "FP8 E4M3 weights per-channel; activations unquantized (weight-only)",
     fp8(Strategy::Channel), std::nullopt, CtFormat::NaiveQuantized, false, false,
     "CompressedTensorsW8A16Fp8 Marlin (SM>=80)"},
    {"nvfp4a16", "FP4 E2M1 weights in groups of 16, FP8 E4M3 group scales, FP32 global scale; activations unquantized",
     micro(QuantType::Float4E2M1, 16, ScaleFormat::Nvfp4), std::nullopt, CtFormat::Nvfp4PackQuantized,
     false, false, "CompressedTensorsW4A16Fp4 (FP4 Marlin below SM100)"},
    {"nvfp4", "FP4 E2M1 weights in groups of 16 (as nvfp4a16); FP4 activations per group of 16, FP8 group scales at run time under a calibrated FP32 global scale",
     micro(QuantType::Float4E2M1, 16, ScaleFormat::Nvfp4),
     [] { QuantArgs a = micro(QuantType::Float4E2M1, 16, ScaleFormat::Nvfp4); a.dynamic = true; return a; }(),
     CtFormat::Nvfp4PackQuantized, true, false, "CompressedTensorsW4A4Fp4 (SM>=100; weight-only FP4 Marlin below)"},
    {"mxfp4a16", "FP4 E2M1 weights in groups of 32, E8M0 power-of-two scales; activations unquantized",
     micro(QuantType::Float4E2M1, 32, ScaleFormat::E8M0), std::nullopt, CtFormat::Mxfp4PackQuantized,
     false, false, "CompressedTensorsW4A16Mxfp4"},
    {"mxfp4", "FP4 E2M1 weights in groups of 32 (as mxfp4a16); FP4 activations dynamic per-group of 32 (E8M0)",
     micro(QuantType::Float4E2M1, 32, ScaleFormat::E8M0),
     [] { QuantArgs a = micro(QuantType::Float4E2M1, 32, ScaleFormat::E8M0); a.dynamic = true; return a; }(),
     CtFormat::Mxfp4PackQuantized, false, false,
     "CompressedTensorsW4A4MxFp4 (FlashInfer W4A4 on SM>=100; emulation or weight-only kernels elsewhere)"},
    {"mxfp8", "FP8 E4M3 weights in groups of 32, E8M0 scales; FP8 activations dynamic per-group of 32 (E8M0)",
     micro(QuantType::Float8E4M3, 32, ScaleFormat::E8M0),
     [] { QuantArgs a = micro(QuantType::Float8E4M3, 32, ScaleFormat::E8M0); a.dynamic = true; return a; }(),
     CtFormat::Mxfp8Quantized, false, false, "CompressedTensorsW8A8MXFp8 (recent vLLM)"},
}};

}  // namespace

std::string_view ct_format_name(CtFormat f) {
  switch (f) {
    case CtFormat::FloatQuantized: return "float-quantized";
    case CtFormat::IntQuantized: return "int-quantized";
    case CtFormat::PackQuantized: return "pack-quantized";
    case CtFormat::NaiveQuantized: return "naive-quantized";
    case CtFormat::Nvfp4PackQuantized: return "nvfp4-pack-quantized";
    case CtFormat::Mxfp4PackQuantized: return "mxfp4-pack-quantized";
    case CtFormat::Mxfp8Quantized: return "mxfp8-quantized";
  }
  return "?";
}

std::span<const Scheme> all_schemes() { return kSchemes; }

const Scheme* find_scheme(std::string_view name) {
  for (const Scheme& s : kSchemes)
    if (name == s.name) return &s;
  return nullptr;
}

std::string scheme_names() {
  std::string s;
  for (const Scheme& sc : kSchemes) {
    if (!s.empty()) s += ", ";
    s += sc.name;
  }
  return s;
}

std::string quant_type_name(QuantType t) {
  switch (t) {
    case QuantType::Float8E4M3: return "FP8 E4M3";
    case QuantType::Int8: return "INT8";
    case QuantType::Int4: return "INT4";
    case QuantType::Float4E2M1: return "FP4 E2M1";
  }
  return "?";
}

std::string describe_args(const QuantArgs& a) {
  std::string s = quant_type_name(a.type);
  if (a.dynamic) s += " dynamic";
  else if (a.strategy == Strategy::Tensor || a.strategy == Strategy::Token) s += " static";
  switch (a.strategy) {
    case Strategy::Tensor: s += " per-tensor"; break;
    case Strategy::Channel: s += " per-channel"; break;
    case Strategy::Group:
      s += " per-group of " + std::to_string(a.group_size);
      if (a.scale_format == ScaleFormat::Nvfp4)
        s += a.dynamic ? " (FP8 E4M3 scales at run time, calibrated FP32 global scale)"
                       : " (FP8 E4M3 scales, FP32 global scale)";
      else if (a.scale_format == ScaleFormat::E8M0) s += " (E8M0 scales)";
      break;
    case Strategy::Block:
      s += " " + std::to_string(a.block_rows) + "x" + std::to_string(a.block_cols) + " blocks";
      break;
    case Strategy::Token: s += " per-token"; break;
  }
  return s;
}

}  // namespace qt
