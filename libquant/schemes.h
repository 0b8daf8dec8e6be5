// The schemes table: the one list that drives `--scheme` parsing, `qtool quantize --help`,
// `qtool schemes` and the man page. Each row says how weights and input activations are
// quantized and which compressed-tensors `format` the checkpoint gets (formats/FORMATS.md §2.3,
// §2.4).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace qt {

// Element type of the quantized codes.
enum class QuantType : uint8_t {
  Float8E4M3,  // OCP float8 e4m3fn, max 448 (safetensors F8_E4M3)
  Int8,        // signed, [-128, 127]
  Int4,        // signed, [-8, 7]; stored packed 8 per int32 word (pack-quantized)
  Float4E2M1,  // OCP FP4 E2M1 {0, 0.5, 1, 1.5, 2, 3, 4, 6} and negatives; 2 codes per byte
};

// How the scales of a Group strategy are formed and stored (libquant/NUMERICS.md, "FP4 and MX").
enum class ScaleFormat : uint8_t {
  ModelDtype,  // dtype(amax / D) in the model dtype (every FP8/INT scheme)
  Nvfp4,       // FP8 E4M3 group scales under one FP32 global scale per tensor (ct "tensor_group")
  E8M0,        // MX: power-of-two scales stored as biased uint8 exponents (ct scale_dtype uint8)
};

// Which elements share one scale (compressed-tensors `strategy`).
enum class Strategy : uint8_t {
  Tensor,   // one scale for the whole tensor; shape [1]
  Channel,  // one per output row; shape [out, 1]
  Group,    // one per `group_size` consecutive input columns of a row; shape [out, in/g]
  Block,    // one per block_rows x block_cols tile; shape [ceil(out/br), ceil(in/bc)]
  Token,    // activations only: one per token, computed at run time (dynamic)
};

struct QuantArgs {
  QuantType type = QuantType::Float8E4M3;
  Strategy strategy = Strategy::Tensor;
  int64_t group_size = 0;   // Strategy::Group (weights) or dynamic per-group activations
  int64_t block_rows = 0;   // Strategy::Block
  int64_t block_cols = 0;
  bool dynamic = false;     // activations: scale computed at inference, nothing stored
  ScaleFormat scale_format = ScaleFormat::ModelDtype;

  int num_bits() const { return (type == QuantType::Int4 || type == QuantType::Float4E2M1) ? 4 : 8; }
  bool is_float() const { return type == QuantType::Float8E4M3 || type == QuantType::Float4E2M1; }
  bool microscale() const { return scale_format != ScaleFormat::ModelDtype; }
};

// compressed-tensors CompressionFormat written as `format` (formats/FORMATS.md §2.3).
enum class CtFormat : uint8_t {
  FloatQuantized, IntQuantized, PackQuantized, NaiveQuantized,
  Nvfp4PackQuantized,  // "nvfp4-pack-quantized": weight_packed U8, weight_scale F8_E4M3, weight_global_scale F32
  Mxfp4PackQuantized,  // "mxfp4-pack-quantized": weight_packed U8, weight_scale U8 (E8M0)
  Mxfp8Quantized,      // "mxfp8-quantized": weight F8_E4M3, weight_scale U8 (E8M0)
};
std::string_view ct_format_name(CtFormat f);

struct Scheme {
  const char* name;         // CLI name, e.g. "fp8-dynamic"
  const char* summary;      // one line for --help and `qtool schemes`
  QuantArgs weights;
  std::optional<QuantArgs> input;  // nullopt: weight-only (activations stay in the model dtype)
  CtFormat format;
  bool needs_calibration;   // static input scales: the model must be run on calibration text
  bool legacy_fp8;          // `--format legacy-fp8` (AutoFP8 layout, per-tensor FP8) possible
  const char* vllm_scheme;  // what vLLM selects for it (informational, for docs and inspect)
};

// Every scheme, in the order users see them.
std::span<const Scheme> all_schemes();
// nullptr if `name` is not a scheme.
const Scheme* find_scheme(std::string_view name);
// "fp8-dynamic, fp8-block, ..." for error messages and help.
std::string scheme_names();

// Human words for one args object, e.g. "FP8 E4M3 per-channel" / "INT8 dynamic per-token".
std::string describe_args(const QuantArgs& a);
std::string quant_type_name(QuantType t);  // "FP8 E4M3", "INT8", "INT4"

}  // namespace qt
