#include "libquant/kernels/cpu_common.h"

#include "libquant/kernels/act_quant.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "libquant/error.h"
#include "libquant/float_formats.h"

namespace qt::kernels {

namespace detail {
namespace {

bool is_scale_dtype(DType t) { return t == DType::BF16 || t == DType::F16 || t == DType::F32; }

std::string q(int64_t v) { return std::to_string(v); }

std::string hex2(unsigned v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%02X", v & 0xFFu);
  return b;
}

[[noreturn]] void bad_value(const QuantizedWeightRef& w, const std::string& what) {
  throw InputError(InputError::Kind::BadValue, w.file, w.tensor, what);
}

}  // namespace

std::string check_common(const LinearDescriptor& d) {
  if (d.N < 1 || d.K < 1) return "empty layer (N=" + q(d.N) + ", K=" + q(d.K) + ")";
  if (d.weight_strategy == Strategy::Token) return "weights cannot be scaled per-token";
  if (d.weight_zero_points)
    return "asymmetric weights (zero points) are not implemented by the CPU kernels (qtool writes "
           "symmetric weights only)";
  if (d.act_zero_points)
    return "asymmetric activations (input zero points) are not implemented by the CPU kernels";
  if (!is_scale_dtype(d.weight_scale_dtype))
    return "weight scales of dtype " + std::string(dtype_name(d.weight_scale_dtype)) +
           " are not supported (BF16, F16 or F32)";
  if (d.weight_strategy == Strategy::Group && (d.weight_group < 1 || d.K % d.weight_group != 0))
    return "weight group size " + q(d.weight_group) + " does not divide K=" + q(d.K);
  if (d.weight_strategy == Strategy::Block && (d.block_rows < 1 || d.block_cols < 1))
    return "weight block " + q(d.block_rows) + "x" + q(d.block_cols) + " is empty";
  if ((d.act_type == ActType::None) != (d.act_scheme == ActScheme::None))
    return "inconsistent descriptor: activation type " + std::string(act_type_name(d.act_type)) +
           " with scheme " + std::string(act_scheme_name(d.act_scheme));
  if (d.act_type == ActType::None) return "";

  // Quantized activations from here on.
  if (d.weight_type == QuantType::Int4)
    return "INT4 weights run weight-only (W4A16); INT4 weights with " +
           std::string(act_type_name(d.act_type)) + " activations (W4A8) are not implemented";
  if (d.weight_type == QuantType::Float8E4M3 && d.act_type == ActType::Int8)
    return "FP8 weights with INT8 activations: no GEMM multiplies E4M3 by INT8 codes";
  if (d.weight_type == QuantType::Int8 && d.act_type == ActType::Float8E4M3)
    return "INT8 weights with FP8 activations: no GEMM multiplies INT8 by E4M3 codes";
  if (d.act_type == ActType::Int8 && d.act_scheme == ActScheme::DynamicGroup)
    return "INT8 activations per-group of " + q(d.act_group) +
           ": block-scaled GEMMs (vLLM cutlass_scaled_mm) are FP8-only";
  if (d.act_type == ActType::Int8 && d.act_scheme == ActScheme::DynamicTensor)
    return "dynamic per-tensor INT8 activations: vLLM quantizes INT8 activations dynamically "
           "per token only";
  if (d.act_scheme == ActScheme::StaticTensor && !is_scale_dtype(d.input_scale_dtype))
    return "input scale of dtype " + std::string(dtype_name(d.input_scale_dtype)) +
           " is not supported (BF16, F16 or F32)";
  if (d.act_scheme == ActScheme::DynamicGroup && (d.act_group < 1 || d.K % d.act_group != 0))
    return "activation group size " + q(d.act_group) + " does not divide K=" + q(d.K);
  if (d.k_segment() == 0)
    return "weight scales span " + q(d.weight_k_span()) + " columns and activation scales " +
           q(d.act_k_span()) + ": neither divides the other, so no K-segment has constant scales";
  return "";
}

const float* e4m3_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> a{};
    for (int b = 0; b < 256; ++b) a[static_cast<size_t>(b)] = f32_from_e4m3fn(static_cast<uint8_t>(b));
    return a;
  }();
  return t.data();
}

void check_codes(const LinearDescriptor& d, const QuantizedWeightRef& w) {
  const DType want = d.weight_type == QuantType::Float8E4M3 ? DType::F8_E4M3 : DType::I8;
  if (w.code_dtype != want)
    throw InputError(InputError::Kind::BadFile, w.file, w.tensor,
                     "weight codes have the wrong dtype for " + quant_type_name(d.weight_type),
                     std::string(dtype_name(want)), std::string(dtype_name(w.code_dtype)));
  QT_ASSERT(w.codes != nullptr);
  const int64_t n = d.N * d.K;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t c = w.codes[i];
    if (d.weight_type == QuantType::Float8E4M3 && (c & 0x7F) == 0x7F)
      bad_value(w, "weight code " + hex2(c) + " (FP8 NaN) at [" + q(i / d.K) + ", " +
                       q(i % d.K) + "]");
    if (d.weight_type == QuantType::Int4) {
      const int v = static_cast<int8_t>(c);
      if (v < -8 || v > 7)
        bad_value(w, "INT4 weight code " + std::to_string(v) + " outside [-8, 7] at [" +
                         q(i / d.K) + ", " + q(i % d.K) + "]");
    }
  }
}

std::vector<float> segment_weight_scales(const LinearDescriptor& d, const QuantizedWeightRef& w) {
  const ScaleGrid g = d.weight_grid();
  if (w.grid.rows_per != g.rows_per || w.grid.cols_per != g.cols_per)
    throw InputError(InputError::Kind::BadFile, w.file, w.tensor,
                     "weight scale grid does not match the layer's quantization scheme",
                     q(g.rows_per) + "x" + q(g.cols_per) + " elements per scale",
                     q(w.grid.rows_per) + "x" + q(w.grid.cols_per));
  if (w.scale_dtype != d.weight_scale_dtype)
    throw InputError(InputError::Kind::BadFile, w.file, w.tensor, "weight scale dtype differs",
                     std::string(dtype_name(d.weight_scale_dtype)),
                     std::string(dtype_name(w.scale_dtype)));
  QT_ASSERT(w.scales != nullptr);
  const int64_t sr = d.weight_scale_rows(), sc = d.weight_scale_cols();
  std::vector<float> s(static_cast<size_t>(sr * sc));
  const bool ok = decode_to_f32(w.scale_dtype, w.scales, s.size(), s.data());  // exact widening
  QT_ASSERT(ok);
  for (size_t i = 0; i < s.size(); ++i)
    if (!std::isfinite(s[i]))
      bad_value(w, "weight scale [" + q(static_cast<int64_t>(i) / sc) + ", " +
                       q(static_cast<int64_t>(i) % sc) + "] is " + (std::isnan(s[i]) ? "NaN" : "Inf"));

  const int64_t seg = d.k_segment(), nseg = d.num_segments();
  std::vector<float> out(static_cast<size_t>(d.N * nseg));
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t t = 0; t < nseg; ++t)
      out[static_cast<size_t>(n * nseg + t)] =
          s[static_cast<size_t>((n / g.rows_per) * sc + (t * seg) / g.cols_per)];
  return out;
}

SimplePacked::SimplePacked(std::string_view kernel, const LinearDescriptor& d,
                           const QuantizedWeightRef& w)
    : PackedWeights(kernel, d) {
  check_codes(d, w);
  wscale = segment_weight_scales(d, w);
  input_scale = static_input_scale(d, w);
  codes.assign(w.codes, w.codes + d.N * d.K);
}

}  // namespace detail
}  // namespace qt::kernels
