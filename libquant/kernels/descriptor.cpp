#include "libquant/kernels/descriptor.h"

#include <algorithm>

#include "libquant/error.h"

namespace qt::kernels {
namespace {
int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

[[noreturn]] void unsupported(const std::string& what) {
  throw InputError(InputError::Kind::Unsupported, "", "", what);
}
}  // namespace

std::string_view act_type_name(ActType t) {
  switch (t) {
    case ActType::None: return "none";
    case ActType::Float8E4M3: return "FP8 E4M3";
    case ActType::Int8: return "INT8";
  }
  return "?";
}

std::string_view act_scheme_name(ActScheme s) {
  switch (s) {
    case ActScheme::None: return "unquantized";
    case ActScheme::StaticTensor: return "static per-tensor";
    case ActScheme::DynamicTensor: return "dynamic per-tensor";
    case ActScheme::DynamicToken: return "dynamic per-token";
    case ActScheme::DynamicGroup: return "dynamic per-group";
  }
  return "?";
}

ScaleGrid LinearDescriptor::weight_grid() const {
  switch (weight_strategy) {
    case Strategy::Tensor: return {std::max<int64_t>(N, 1), std::max<int64_t>(K, 1)};
    case Strategy::Channel: return {1, std::max<int64_t>(K, 1)};
    case Strategy::Group: return {1, std::max<int64_t>(weight_group, 1)};
    case Strategy::Block:
      return {std::max<int64_t>(block_rows, 1), std::max<int64_t>(block_cols, 1)};
    case Strategy::Token: break;
  }
  return {1, 1};  // invalid for weights; can_implement rejects it
}

int64_t LinearDescriptor::weight_scale_rows() const { return cdiv(N, weight_grid().rows_per); }
int64_t LinearDescriptor::weight_scale_cols() const { return cdiv(K, weight_grid().cols_per); }

int64_t LinearDescriptor::weight_k_span() const {
  return std::min(K, weight_grid().cols_per);
}

int64_t LinearDescriptor::act_k_span() const {
  return act_scheme == ActScheme::DynamicGroup && act_group > 0 ? std::min(K, act_group) : K;
}

int64_t LinearDescriptor::k_segment() const {
  const int64_t a = weight_k_span(), b = act_k_span();
  if (a <= 0 || b <= 0) return 0;
  const int64_t lo = std::min(a, b), hi = std::max(a, b);
  // A span equal to K covers everything (a partial last block is still nested in it).
  if (hi == K || hi % lo == 0) return lo;
  return 0;
}

int64_t LinearDescriptor::num_segments() const {
  const int64_t s = k_segment();
  return s > 0 ? cdiv(K, s) : 0;
}

std::string LinearDescriptor::describe() const {
  std::string s = "N=" + std::to_string(N) + " K=" + std::to_string(K) + "; weights " +
                  (weight_fp4_values ? std::string("FP4 E2M1 (as E4M3 codes)") : quant_type_name(weight_type));
  switch (weight_strategy) {
    case Strategy::Tensor: s += " per-tensor"; break;
    case Strategy::Channel: s += " per-channel"; break;
    case Strategy::Group: s += " per-group of " + std::to_string(weight_group); break;
    case Strategy::Block:
      // Appended piecewise: `" " + std::to_string(..)` trips GCC 12's -Wrestrict false positive
      // at -O3 (GCC bug 105329).
      s += ' ';
      s += std::to_string(block_rows);
      s += 'x';
      s += std::to_string(block_cols);
      s += " blocks";
      break;
    case Strategy::Token: s += " per-token(!)"; break;
  }
  if (weight_zero_points) s += " asymmetric";
  s += " (" + std::string(dtype_name(weight_scale_dtype)) + " scales); activations ";
  if (act_type == ActType::None) return s + "unquantized";
  s += (act_fp4_values ? std::string("FP4 E2M1 (as E4M3 codes)") : std::string(act_type_name(act_type))) + " " +
       std::string(act_scheme_name(act_scheme));
  if (act_scheme == ActScheme::DynamicGroup) s += " of " + std::to_string(act_group);
  if (act_scale_format == ScaleFormat::Nvfp4) s += " (FP8 E4M3 scales under the F32 input_global_scale)";
  else if (act_scale_format == ScaleFormat::E8M0) s += " (E8M0 scales)";
  if (act_scheme == ActScheme::StaticTensor)
    s += " (" + std::string(dtype_name(input_scale_dtype)) + " scale)";
  if (act_zero_points) s += " asymmetric";
  return s;
}

LinearDescriptor descriptor_from_args(const QuantArgs& w, const std::optional<QuantArgs>& in,
                                      int64_t N, int64_t K, DType weight_scale_dtype,
                                      DType input_scale_dtype) {
  if (N < 1 || K < 1)
    unsupported("a linear layer needs N >= 1 and K >= 1, got N=" + std::to_string(N) +
                " K=" + std::to_string(K));
  if (w.strategy == Strategy::Token) unsupported("weights cannot be quantized per-token");
  if (w.microscale() || w.type == QuantType::Float4E2M1)
    unsupported("FP4 / MX weights (" + describe_args(w) +
                ") reach the kernels only as their exact FP8 + F32-scale equivalent (formats/quantized_linear.h)");
  LinearDescriptor d;
  d.N = N;
  d.K = K;
  d.weight_type = w.type;
  d.weight_strategy = w.strategy;
  d.weight_group = w.strategy == Strategy::Group ? w.group_size : 0;
  d.block_rows = w.strategy == Strategy::Block ? w.block_rows : 0;
  d.block_cols = w.strategy == Strategy::Block ? w.block_cols : 0;
  d.weight_scale_dtype = weight_scale_dtype;
  d.input_scale_dtype = input_scale_dtype;
  if (!in) return d;

  switch (in->type) {
    case QuantType::Float8E4M3: d.act_type = ActType::Float8E4M3; break;
    case QuantType::Int8: d.act_type = ActType::Int8; break;
    case QuantType::Int4: unsupported("INT4 activations are not supported (no W*A4 GEMM)");
    case QuantType::Float4E2M1:
      // NVFP4 (FP8 scales under the static global scale) or MXFP4 (E8M0 scales, as vLLM's SM >= 100
      // FlashInfer path quantizes them: act_quant.h).
      if (in->scale_format != ScaleFormat::Nvfp4 && in->scale_format != ScaleFormat::E8M0)
        unsupported("FP4 activations with " + describe_args(*in) + " scales are not simulated (NVFP4 and MXFP4 only)");
      d.act_type = ActType::Float8E4M3;  // E2M1 values as E4M3 codes
      d.act_fp4_values = true;
      break;
  }
  if (in->microscale()) {
    if (in->strategy != Strategy::Group || in->group_size != (in->scale_format == ScaleFormat::Nvfp4 ? 16 : 32))
      unsupported("microscaled activations (" + describe_args(*in) + ") other than NVFP4 group 16 / MX group 32");
    d.act_scale_format = in->scale_format;
  }
  switch (in->strategy) {
    case Strategy::Tensor:
      d.act_scheme = in->dynamic ? ActScheme::DynamicTensor : ActScheme::StaticTensor;
      break;
    case Strategy::Token: d.act_scheme = ActScheme::DynamicToken; break;
    case Strategy::Group:
      d.act_scheme = ActScheme::DynamicGroup;
      d.act_group = in->group_size;
      break;
    case Strategy::Channel:
      unsupported("activations cannot be quantized per-channel (the scale would vary along K "
                  "per column, which no GEMM epilogue can apply)");
    case Strategy::Block: unsupported("activations cannot be quantized in 2-D blocks");
  }
  return d;
}

}  // namespace qt::kernels
