#include "libquant/quantize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"
#include "libquant/quant_rows.h"

namespace qt {
namespace {

bool is_model_float(DType t) { return t == DType::BF16 || t == DType::F16 || t == DType::F32; }

// Decodes row `r` (cols elements) of a floating tensor into dst. bf16/f16/f32 widen exactly.
void decode_row(const TensorView& w, int64_t r, int64_t cols, float* dst) {
  const size_t esz = static_cast<size_t>(dtype_bits(w.dtype) / 8);
  const uint8_t* src = w.bytes.data() + static_cast<size_t>(r) * static_cast<size_t>(cols) * esz;
  bool ok = decode_to_f32(w.dtype, src, static_cast<uint64_t>(cols), dst);
  QT_ASSERT(ok);
}

[[noreturn]] void throw_nonfinite(const TensorView& w, int64_t r, int64_t c, float v) {
  std::string pos = w.shape.size() == 2 ? "[" + std::to_string(r) + ", " + std::to_string(c) + "]"
                                        : "[" + std::to_string(c) + "]";
  throw InputError(InputError::Kind::BadValue, w.file, w.name,
                   std::string(std::isnan(v) ? "contains NaN" : "contains Inf") + " at " + pos +
                       "; the scale would be garbage (use --allow-nonfinite to quantize anyway)");
}

// max |x| over xs; reports the first non-finite element through `bad` (index) unless allowed.
// NaN propagates into the max when allowed (std::max would drop it; PyTorch's amax keeps it).
float row_absmax(const float* xs, int64_t n, bool allow_nonfinite, int64_t* bad) {
  float m = 0.0f;
  bool saw_nan = false;
  for (int64_t i = 0; i < n; ++i) {
    float a = std::fabs(xs[i]);
    if (!(a <= 3.4028235e38f)) {  // NaN or Inf
      if (!allow_nonfinite) { *bad = i; return 0.0f; }
      if (std::isnan(a)) saw_nan = true;
    }
    m = a > m ? a : m;
  }
  return saw_nan ? NAN : m;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// Table: bits of a 16-bit model-dtype value t -> code, computed with the scalar reference
// (clamp to the code range in M, then E4M3 RNE cast or round-half-even).
const uint8_t* code_table(DType M, QuantType t) {
  QT_ASSERT(M == DType::BF16 || M == DType::F16);
  static std::array<std::array<uint8_t, 65536>, 6> tables = [] {
    std::array<std::array<uint8_t, 65536>, 6> all{};
    const QuantType types[3] = {QuantType::Float8E4M3, QuantType::Int8, QuantType::Int4};
    for (int m = 0; m < 2; ++m)
      for (int k = 0; k < 3; ++k)
        for (uint32_t b = 0; b < 65536; ++b) {
          const float v = m == 0 ? f32_from_bf16(static_cast<uint16_t>(b)) : f32_from_f16(static_cast<uint16_t>(b));
          // v is already in M, so dividing by 1 and rounding to M is exact: quantize_element
          // then applies exactly the clamp and cast of the reference path.
          all[static_cast<size_t>(m * 3 + k)][b] = quantize_element(v, 1.0f, types[k], m == 0 ? DType::BF16 : DType::F16);
        }
    return all;
  }();
  const int m = M == DType::BF16 ? 0 : 1;
  const int k = t == QuantType::Float8E4M3 ? 0 : t == QuantType::Int8 ? 1 : 2;
  return tables[static_cast<size_t>(m * 3 + k)].data();
}

namespace {

}  // namespace

float scale_divisor(QuantType t) {
  switch (t) {
    case QuantType::Float8E4M3: return 448.0f;  // (448 - -448) / 2
    case QuantType::Int8: return 127.5f;        // (127 - -128) / 2, not 127 (NUMERICS.md §3.2)
    case QuantType::Int4: return 7.5f;          // (7 - -8) / 2
    case QuantType::Float4E2M1: return 6.0f;    // (6 - -6) / 2 (NVFP4's local scale divisor)
  }
  return 1.0f;
}
float code_max(QuantType t) {
  return t == QuantType::Float8E4M3 ? 448.0f : t == QuantType::Int8 ? 127.0f
         : t == QuantType::Float4E2M1 ? 6.0f : 7.0f;
}
float code_min(QuantType t) {
  return t == QuantType::Float8E4M3 ? -448.0f : t == QuantType::Int8 ? -128.0f
         : t == QuantType::Float4E2M1 ? -6.0f : -8.0f;
}

float scale_from_amax(float amax, QuantType t, DType model_dtype) {
  // f32 true division (PyTorch CPU div for reduced floats computes in f32), then one RNE
  // rounding to the model dtype, where compressed-tensors keeps the scale.
  float s = round_to_dtype(model_dtype, amax / scale_divisor(t));
  if (s == 0.0f) s = dtype_eps(model_dtype);  // all-zero group (ct >= 0.13 rule)
  return s;
}

uint8_t quantize_element(float w, float scale, QuantType t, DType model_dtype) {
  // bf16 / bf16 -> bf16 in PyTorch: f32 quotient, rounded RNE to the model dtype.
  float q = round_to_dtype(model_dtype, w / scale);
  // Clamp in the model dtype; both bounds are exactly representable. NaN stays NaN.
  q = q < code_min(t) ? code_min(t) : (q > code_max(t) ? code_max(t) : q);
  if (t == QuantType::Float8E4M3) return e4m3fn_from_f32(q);  // c10 RNE cast
  // torch.round: half to even; nearbyint uses the default FE_TONEAREST mode.
  float r = std::nearbyint(q);
  int v = std::isnan(r) ? 0 : static_cast<int>(r);
  return static_cast<uint8_t>(static_cast<int8_t>(v));
}

std::string check_weight_shape(const std::vector<int64_t>& shape, const QuantArgs& args) {
  if (shape.size() != 2) return "expected a 2-D weight, got shape " + shape_string(shape);
  const int64_t out = shape[0], in = shape[1];
  if (out == 0 || in == 0) return "empty weight " + shape_string(shape);
  if (args.strategy == Strategy::Group && in % args.group_size != 0)
    return "input dimension " + std::to_string(in) + " is not a multiple of the group size " +
           std::to_string(args.group_size);
  if (args.type == QuantType::Int4 && in % 8 != 0)
    return "input dimension " + std::to_string(in) + " is not a multiple of 8 (int4 packing)";
  return "";
}

float tensor_absmax(const TensorView& t, bool allow_nonfinite) {
  const int64_t n = static_cast<int64_t>(t.numel());
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  const int64_t rows = cols == 0 ? 0 : n / cols;
  float result = 0.0f;
  int64_t bad_row = -1, bad_col = -1;
  bool any_nan = false;
#pragma omp parallel
  {
    // 16-bit dtypes: the max of the raw bits (libquant/quant_rows.h), exact and without
    // decoding; a NaN pattern is the maximum of its row (-> NaN), as row_absmax gives.
    const bool bits16 = t.dtype == DType::BF16 || t.dtype == DType::F16;
    std::vector<float> buf(bits16 ? 0 : static_cast<size_t>(cols));
    float local = 0.0f;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t bad = -1;
      float m;
      if (bits16) {
        const uint8_t* src = t.bytes.data() + static_cast<size_t>(r) * static_cast<size_t>(cols) * 2;
        const uint16_t b = absmax_bits16(src, cols, t.dtype == DType::BF16 ? 0x7F80u : 0x7C00u, &bad);
        if (allow_nonfinite) bad = -1;
        m = bad >= 0 ? 0.0f : t.dtype == DType::BF16 ? f32_from_bf16(b) : f32_from_f16(b);
      } else {
        decode_row(t, r, cols, buf.data());
        m = row_absmax(buf.data(), cols, allow_nonfinite, &bad);
      }
      if (bad >= 0) {
#pragma omp critical
        if (bad_row < 0 || r < bad_row) { bad_row = r; bad_col = bad; }
      }
      if (std::isnan(m)) any_nan = true;
      else local = std::max(local, m);
    }
#pragma omp critical
    result = std::max(result, local);
  }
  if (bad_row >= 0) {
    std::vector<float> buf(static_cast<size_t>(cols));
    decode_row(t, bad_row, cols, buf.data());
    throw_nonfinite(t, bad_row, bad_col, buf[static_cast<size_t>(bad_col)]);
  }
  return any_nan ? NAN : result;
}

QuantizedWeight quantize_weight(const TensorView& w, const QuantArgs& args,
                                const QuantizeOptions& opts) {
  if (!is_model_float(w.dtype))
    throw InputError(InputError::Kind::Unsupported, w.file, w.name,
                     "only BF16, F16 and F32 weights can be quantized",
                     "BF16, F16 or F32", std::string(dtype_name(w.dtype)));
  if (std::string why = check_weight_shape(w.shape, args); !why.empty())
    throw InputError(InputError::Kind::Unsupported, w.file, w.name,
                     "cannot quantize with " + describe_args(args) + ": " + why);

  if (args.microscale()) return quantize_microscale(w, args, opts);
  QT_ASSERT(args.type != QuantType::Float4E2M1);

  const DType M = w.dtype;
  const QuantType qt = args.type;
  const int64_t out = w.shape[0], in = w.shape[1];

  QuantizedWeight r;
  r.shape = w.shape;
  r.code_dtype = qt == QuantType::Float8E4M3 ? DType::F8_E4M3 : DType::I8;
  r.codes.resize(static_cast<size_t>(out * in));
  r.scale_dtype = M;

  // Scale grid: [sr, sc] scales; element (i, j) uses scale (i / rows_per, j / cols_per).
  int64_t sr = 1, sc = 1, rows_per = out, cols_per = in;
  switch (args.strategy) {
    case Strategy::Tensor: r.scale_shape = {1}; break;
    case Strategy::Channel: sr = out; rows_per = 1; r.scale_shape = {out, 1}; break;
    case Strategy::Group:
      sr = out; rows_per = 1; cols_per = args.group_size; sc = in / args.group_size;
      r.scale_shape = {out, sc};
      break;
    case Strategy::Block:
      rows_per = args.block_rows; cols_per = args.block_cols;
      sr = cdiv(out, rows_per); sc = cdiv(in, cols_per);  // edge blocks are partial (ct pads 0)
      r.scale_shape = {sr, sc};
      break;
    case Strategy::Token: QT_ASSERT(false && "weights cannot be per-token");
  }

  // Pass 1: amax of each row's part of each scale group, in parallel over rows, then reduced over
  // the rows of each group. Max is exact and order-independent, so the result does not depend on
  // the thread count. 16-bit dtypes take the max of the raw bits (libquant/quant_rows.h), exact
  // and without decoding.
  const bool bits16 = M == DType::BF16 || M == DType::F16;
  const uint16_t special = M == DType::BF16 ? 0x7F80u : 0x7C00u;  // first Inf/NaN pattern
  const size_t esz = static_cast<size_t>(dtype_bits(M) / 8);
  std::vector<float> partmax(static_cast<size_t>(out * sc), 0.0f);
  int64_t bad_row = -1, bad_col = -1;
#pragma omp parallel
  {
    std::vector<float> buf(bits16 ? 0 : static_cast<size_t>(in));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < out; ++i) {
      const uint8_t* src = w.bytes.data() + static_cast<size_t>(i) * static_cast<size_t>(in) * esz;
      if (!bits16) decode_row(w, i, in, buf.data());
      for (int64_t bc = 0; bc < sc; ++bc) {
        const int64_t c0 = bc * cols_per, c1 = std::min(in, c0 + cols_per);
        int64_t bad = -1;
        float m;
        if (bits16) {
          const uint16_t b = absmax_bits16(src + static_cast<size_t>(c0) * 2, c1 - c0, special, &bad);
          if (opts.allow_nonfinite) bad = -1;
          m = M == DType::BF16 ? f32_from_bf16(b) : f32_from_f16(b);  // NaN pattern -> NaN, 0x7F80 -> Inf
        } else {
          m = row_absmax(buf.data() + c0, c1 - c0, opts.allow_nonfinite, &bad);
        }
        if (bad >= 0) {
#pragma omp critical
          if (bad_row < 0 || i < bad_row) { bad_row = i; bad_col = c0 + bad; }
          continue;
        }
        partmax[static_cast<size_t>(i * sc + bc)] = m;
      }
    }
  }
  std::vector<float> gmax(static_cast<size_t>(sr * sc), 0.0f);
  for (int64_t i = 0; i < out; ++i)
    for (int64_t bc = 0; bc < sc; ++bc) {
      const float m = partmax[static_cast<size_t>(i * sc + bc)];
      float& g = gmax[static_cast<size_t>((i / rows_per) * sc + bc)];
      g = (std::isnan(m) || std::isnan(g)) ? NAN : std::max(g, m);
    }
  if (bad_row >= 0) {
    std::vector<float> buf(static_cast<size_t>(in));
    decode_row(w, bad_row, in, buf.data());
    throw_nonfinite(w, bad_row, bad_col, buf[static_cast<size_t>(bad_col)]);
  }
  if (args.strategy == Strategy::Tensor && opts.tensor_amax_override > 0)
    gmax[0] = std::max(gmax[0], opts.tensor_amax_override);

  // Scales in the model dtype.
  std::vector<float> scales(gmax.size());
  for (size_t g = 0; g < gmax.size(); ++g) {
    r.amax = std::isnan(gmax[g]) ? NAN : std::max(r.amax, gmax[g]);
    if (gmax[g] == 0.0f) ++r.zero_groups;
    scales[g] = scale_from_amax(gmax[g], qt, M);
  }
  const size_t ssz = static_cast<size_t>(dtype_bits(M) / 8);
  r.scale_bytes.resize(scales.size() * ssz);
  for (size_t g = 0; g < scales.size(); ++g) store_float(M, scales[g], r.scale_bytes.data() + g * ssz);

  // Pass 2: codes. For 16-bit model dtypes the rounded quotient t = M(w / scale) has only 65536
  // possible bit patterns, so clamp + cast is a table lookup built from quantize_element's own
  // reference steps (code_table); only the f32 division and the RNE rounding to M run per element.
  // BF16 rows go straight from the stored bits through quantize_bf16_row_cast (libquant/
  // quant_rows.h: the same steps, vectorised, with the clamp and cast computed in the registers).
#pragma omp parallel
  {
    std::vector<float> buf(M == DType::BF16 ? 0 : static_cast<size_t>(in));
    const uint8_t* table = M == DType::F16 ? code_table(M, qt) : nullptr;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < out; ++i) {
      const uint8_t* src = w.bytes.data() + static_cast<size_t>(i) * static_cast<size_t>(in) * esz;
      if (M != DType::BF16) decode_row(w, i, in, buf.data());
      const float* srow = scales.data() + (i / rows_per) * sc;
      uint8_t* crow = r.codes.data() + i * in;
      for (int64_t c0 = 0; c0 < in; c0 += cols_per) {
        const int64_t c1 = std::min(in, c0 + cols_per);
        const float s = srow[c0 / cols_per];
        if (M == DType::BF16) {
          quantize_bf16_row_cast(src + static_cast<size_t>(c0) * 2, c1 - c0, s, qt, crow + c0);
        } else if (M == DType::F16) {
          for (int64_t j = c0; j < c1; ++j) crow[j] = table[f16_from_f32(buf[static_cast<size_t>(j)] / s)];
        } else {
          for (int64_t j = c0; j < c1; ++j) crow[j] = quantize_element(buf[static_cast<size_t>(j)], s, qt, M);
        }
      }
    }
  }
  return r;
}

namespace {
template <bool RoundToScaleDtype>
void dequantize_impl(const uint8_t* codes, DType codes_dtype, const std::vector<int64_t>& shape,
                     const uint8_t* scales, DType scale_dtype, const ScaleGrid& g, float* out) {
  QT_ASSERT(shape.size() == 2 && g.rows_per > 0 && g.cols_per > 0);
  const int64_t rows = shape[0], cols = shape[1];
  const int64_t sr = cdiv(rows, g.rows_per), sc = cdiv(cols, g.cols_per);
  std::vector<float> s(static_cast<size_t>(sr * sc));
  bool ok = decode_to_f32(scale_dtype, scales, s.size(), s.data());
  QT_ASSERT(ok);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const float* srow = s.data() + (i / g.rows_per) * sc;
    for (int64_t j = 0; j < cols; ++j) {
      const uint8_t c = codes[i * cols + j];
      float q = codes_dtype == DType::F8_E4M3 ? f32_from_e4m3fn(c)
                                              : static_cast<float>(static_cast<int8_t>(c));
      float v = q * srow[j / g.cols_per];  // f32 product
      out[i * cols + j] = RoundToScaleDtype ? round_to_dtype(scale_dtype, v) : v;
    }
  }
}
}  // namespace

ScaleGrid scale_grid(const std::vector<int64_t>& shape, const QuantArgs& args) {
  QT_ASSERT(shape.size() == 2);
  switch (args.strategy) {
    case Strategy::Tensor: return {shape[0], shape[1]};
    case Strategy::Channel: return {1, shape[1]};
    case Strategy::Group: return {1, args.group_size};
    case Strategy::Block: return {args.block_rows, args.block_cols};
    case Strategy::Token: break;
  }
  QT_ASSERT(false && "no scale grid for per-token");
  return {1, 1};
}

void dequantize(const uint8_t* codes, DType codes_dtype, const std::vector<int64_t>& shape,
                const uint8_t* scales, DType scale_dtype, const ScaleGrid& grid, float* out) {
  dequantize_impl<false>(codes, codes_dtype, shape, scales, scale_dtype, grid, out);
}
void dequantize_ct(const uint8_t* codes, DType codes_dtype, const std::vector<int64_t>& shape,
                   const uint8_t* scales, DType scale_dtype, const ScaleGrid& grid, float* out) {
  dequantize_impl<true>(codes, codes_dtype, shape, scales, scale_dtype, grid, out);
}

}  // namespace qt
