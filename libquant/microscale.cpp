// Microscaling formats (NVFP4, MXFP4, MXFP8) as compressed-tensors 0.20 computes them on the CPU.
// The facts this file relies on are in libquant/NUMERICS.md, section "FP4 and MX".
#include "libquant/microscale.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/quant_rows.h"

namespace qt {
namespace {

constexpr float kE2M1Values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// Smallest positive normal number of M (torch.finfo(M).tiny).
float dtype_tiny(DType M) {
  switch (M) {
    case DType::BF16: return std::ldexp(1.0f, -126);
    case DType::F16: return std::ldexp(1.0f, -14);
    case DType::F32: return std::ldexp(1.0f, -126);
    default: QT_ASSERT(!"dtype_tiny: only BF16, F16, F32"); return 0.0f;
  }
}

int64_t group_of(const QuantArgs& a) { return a.group_size; }

void decode_row(const TensorView& w, int64_t r, int64_t cols, float* dst) {
  const size_t esz = static_cast<size_t>(dtype_bits(w.dtype) / 8);
  const uint8_t* src = w.bytes.data() + static_cast<size_t>(r) * static_cast<size_t>(cols) * esz;
  bool ok = decode_to_f32(w.dtype, src, static_cast<uint64_t>(cols), dst);
  QT_ASSERT(ok);
}

// MXFP4 code table: bf16 bits t of the rounded quotient -> code, by the reference's own clamp and
// cast (quantize_microscale's scalar loop), so that a table lookup after quantize_bf16_row's
// f32 division and bf16 rounding gives exactly the scalar result. (MXFP8 needs no table:
// quantize_bf16_row_cast computes the same clamp and E4M3 cast in the vector registers.)
const uint8_t* mxfp4_bf16_table() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(65536);
    for (uint32_t b = 0; b < 65536; ++b)
      t[b] = e2m1_from_f32(std::clamp(f32_from_bf16(static_cast<uint16_t>(b)), -6.0f, 6.0f));
    return t;
  }();
  return table.data();
}

// BF16 fast path of quantize_microscale: pass 1 takes each group's max |x| from the raw bits
// (absmax_bits16: exact, no decode), pass 2 runs the row kernels of libquant/quant_rows.h on each
// group. Returns false, having written nothing, when a group holds an Inf or NaN: then the
// scalar path runs instead, with its error message or its --allow-nonfinite treatment.
bool quantize_microscale_bf16(const TensorView& w, const QuantArgs& args, const QuantizeOptions& opts,
                              QuantizedWeight& r) {
  const int64_t out = w.shape[0], in = w.shape[1], g = group_of(args), ng = in / g;
  const bool fp4 = args.type == QuantType::Float4E2M1;
  const bool nv = args.scale_format == ScaleFormat::Nvfp4;
  std::vector<uint16_t> gbits(static_cast<size_t>(out * ng));
  bool special = false;
#pragma omp parallel for schedule(static) reduction(|| : special)
  for (int64_t i = 0; i < out; ++i) {
    const uint8_t* src = w.bytes.data() + static_cast<size_t>(i * in) * 2;
    for (int64_t k = 0; k < ng; ++k) {
      int64_t bad = -1;
      const uint16_t b = absmax_bits16(src + static_cast<size_t>(k * g) * 2, g, 0x7F80u, &bad);
      gbits[static_cast<size_t>(i * ng + k)] = b;
      if (bad >= 0) special = true;
    }
  }
  if (special) return false;
  uint16_t tmax = 0;
  for (uint16_t b : gbits) tmax = std::max(tmax, b);
  r.amax = f32_from_bf16(tmax);  // = tensor_absmax: max |x| of finite bf16 values, exactly
  if (nv) {
    r.global_scale = nvfp4_global_scale(std::max(r.amax, opts.group_amax_override), DType::BF16);
    r.has_global_scale = true;
  }
  const float gs = r.global_scale;
  // MXFP8's clamp-and-cast (to +-448, then the c10 cast) is code_table(BF16, Float8E4M3)'s, which
  // quantize_bf16_row_cast computes in the registers; MXFP4 looks its codes up.
  const uint8_t* table = nv || !fp4 ? nullptr : mxfp4_bf16_table();
  int64_t zero_groups = 0;
#pragma omp parallel for schedule(static) reduction(+ : zero_groups)
  for (int64_t i = 0; i < out; ++i) {
    const uint8_t* src = w.bytes.data() + static_cast<size_t>(i * in) * 2;
    for (int64_t k = 0; k < ng; ++k) {
      const float m = f32_from_bf16(gbits[static_cast<size_t>(i * ng + k)]);
      if (m == 0.0f) ++zero_groups;
      const uint8_t* x = src + static_cast<size_t>(k * g) * 2;
      uint8_t* codes = r.codes.data() + i * in + k * g;
      uint8_t& sb = r.scale_bytes[static_cast<size_t>(i * ng + k)];
      if (nv) {
        sb = nvfp4_group_scale(m, gs, DType::BF16);
        e2m1_codes_bf16_row(x, g, f32_from_e4m3fn(sb) / gs, codes);
      } else {
        const float s = mx_scale_in_dtype(mx_exponent(m, DType::BF16, args.type), DType::BF16);
        sb = mx_stored_exponent(s);
        if (fp4) quantize_bf16_row(x, g, s, table, codes);
        else quantize_bf16_row_cast(x, g, s, QuantType::Float8E4M3, codes);
      }
    }
  }
  r.zero_groups = zero_groups;
  return true;
}

}  // namespace

float f32_from_e2m1(uint8_t code) {
  const float v = kE2M1Values[code & 7];
  return (code & 8) ? -v : v;
}

uint8_t e2m1_from_f32(float x) {
  const float a = std::fabs(x);
  uint8_t idx;
  if (a <= 0.25f) idx = 0;
  else if (a < 0.75f) idx = 1;
  else if (a <= 1.25f) idx = 2;
  else if (a < 1.75f) idx = 3;
  else if (a <= 2.5f) idx = 4;
  else if (a < 3.5f) idx = 5;
  else if (a <= 5.0f) idx = 6;
  else idx = 7;
  return static_cast<uint8_t>((x < 0.0f ? 8 : 0) | idx);
}

std::vector<uint8_t> pack_e2m1(const uint8_t* codes, int64_t rows, int64_t cols) {
  QT_ASSERT(cols % 2 == 0);
  std::vector<uint8_t> out(static_cast<size_t>(rows * (cols / 2)));
  const int64_t n = static_cast<int64_t>(out.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<uint8_t>((codes[2 * i] & 0xF) | ((codes[2 * i + 1] & 0xF) << 4));
  return out;
}

std::vector<uint8_t> unpack_e2m1(const uint8_t* packed, int64_t rows, int64_t cols) {
  QT_ASSERT(cols % 2 == 0);
  std::vector<uint8_t> out(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < out.size() / 2; ++i) {
    out[2 * i] = packed[i] & 0xF;
    out[2 * i + 1] = packed[i] >> 4;
  }
  return out;
}

float f32_from_e8m0(uint8_t e) {
  if (e == 255) return NAN;
  return std::ldexp(1.0f, static_cast<int>(e) - 127);  // 2^-127 is an f32 subnormal: exact
}

uint8_t mx_exponent(float amax, DType M, QuantType elem) {
  const int offset = elem == QuantType::Float4E2M1 ? 2 : 8;  // floor(log2(6)), floor(log2(448))
  int mant, ebits;
  uint32_t bits;
  switch (M) {
    case DType::BF16: mant = 7; ebits = 8; bits = bf16_from_f32(amax); break;
    case DType::F16: mant = 10; ebits = 5; bits = f16_from_f32(amax); break;
    case DType::F32: mant = 23; ebits = 8; bits = f32_bits(amax); break;
    default: QT_ASSERT(!"mx_exponent: only BF16, F16, F32"); return 0;
  }
  // Round to a power of two on the bit pattern: add half of the FP4 mantissa step (2^(m-2)),
  // keep sign and exponent. (The constant is FP4's for FP8 elements too.)
  const uint32_t add = 1u << (mant - 2);
  const uint32_t mask = ((1u << (ebits + 1)) - 1u) << mant;
  const uint32_t p = (bits + add) & mask;
  const uint32_t efield = (p >> mant) & ((1u << ebits) - 1u);
  if (efield == 0) return 0;                          // p = 0: log2 = -inf, clamped to 0
  if (efield == (1u << ebits) - 1u) return 255;       // p = inf: clamped to 255
  const int e = static_cast<int>(efield) - ((1 << (ebits - 1)) - 1);
  const int E = 127 + e - offset;
  return static_cast<uint8_t>(std::clamp(E, 0, 255));
}

float mx_scale_in_dtype(uint8_t E, DType M) {
  const float s = round_to_dtype(M, std::ldexp(1.0f, static_cast<int>(E) - 127));
  return s == 0.0f ? 1.0f : s;
}

uint8_t mx_stored_exponent(float scale) {
  // A non-finite scale (NaN/Inf weights quantized with --allow-nonfinite, or a group max that
  // rounds up past 2^127) is stored as 255, E8M0's NaN.
  if (!(scale > 0.0f) || !std::isfinite(scale)) return 255;
  return static_cast<uint8_t>(127 + std::ilogb(scale));
}

float nvfp4_global_scale(float amax, DType M) {
  const float a = std::max(amax, dtype_tiny(M));
  const float r = round_to_dtype(M, 1.0f / a);
  const float gs = round_to_dtype(M, r * 2688.0f);
  return std::isfinite(gs) ? gs : 1.0f;
}

uint8_t nvfp4_group_scale(float group_amax, float global_scale, DType M) {
  const float local = round_to_dtype(M, group_amax / 6.0f);
  float v = global_scale * local;
  v = std::clamp(v, -448.0f, 448.0f);
  const uint8_t code = e4m3fn_from_f32(v);
  return (code & 0x7F) == 0 ? 0x20 : code;  // zero -> eps 0.125
}

QuantizedWeight quantize_microscale(const TensorView& w, const QuantArgs& args,
                                    const QuantizeOptions& opts) {
  QT_ASSERT(args.microscale() && args.strategy == Strategy::Group);
  const DType M = w.dtype;
  const int64_t out = w.shape[0], in = w.shape[1], g = group_of(args), ng = in / g;
  const bool fp4 = args.type == QuantType::Float4E2M1;
  const bool nv = args.scale_format == ScaleFormat::Nvfp4;

  QuantizedWeight r;
  r.shape = w.shape;
  r.code_dtype = fp4 ? DType::U8 : DType::F8_E4M3;
  r.codes.resize(static_cast<size_t>(out * in));
  r.scale_dtype = nv ? DType::F8_E4M3 : DType::U8;
  r.scale_shape = {out, ng};
  r.scale_bytes.resize(static_cast<size_t>(out * ng));
  if (M == DType::BF16 && quantize_microscale_bf16(w, args, opts, r)) return r;

  // Scalar path (F16, F32, and BF16 tensors holding Inf or NaN). Group maxima (exact), also refusing NaN/Inf with the tensor's position.
  std::vector<float> gmax(static_cast<size_t>(out * ng), 0.0f);
  r.amax = tensor_absmax(w, opts.allow_nonfinite);
  if (nv) {
    const float amax = std::max(r.amax, opts.group_amax_override);
    r.global_scale = nvfp4_global_scale(amax, M);
    r.has_global_scale = true;
  }
  const float gs = r.global_scale;
  int64_t zero_groups = 0;
#pragma omp parallel for schedule(static) reduction(+ : zero_groups)
  for (int64_t i = 0; i < out; ++i) {
    std::vector<float> buf(static_cast<size_t>(in));
    decode_row(w, i, in, buf.data());
    for (int64_t k = 0; k < ng; ++k) {
      const float* x = buf.data() + k * g;
      float m = 0.0f;
      for (int64_t j = 0; j < g; ++j) m = std::max(m, std::fabs(x[j]));
      if (m == 0.0f) ++zero_groups;
      uint8_t* codes = r.codes.data() + i * in + k * g;
      uint8_t& sb = r.scale_bytes[static_cast<size_t>(i * ng + k)];
      if (nv) {
        sb = nvfp4_group_scale(m, gs, M);
        const float eff = f32_from_e4m3fn(sb) / gs;  // scale / global_scale, f32
        for (int64_t j = 0; j < g; ++j) {
          const float q = std::clamp(x[j] / eff, -6.0f, 6.0f);  // f32 quotient: no M rounding
          codes[j] = e2m1_from_f32(q);
        }
      } else {
        const float s = mx_scale_in_dtype(mx_exponent(m, M, args.type), M);
        sb = mx_stored_exponent(s);
        for (int64_t j = 0; j < g; ++j) {
          const float q = round_to_dtype(M, x[j] / s);  // M / M: quotient rounded to M
          if (fp4) codes[j] = e2m1_from_f32(std::clamp(q, -6.0f, 6.0f));
          else codes[j] = e4m3fn_from_f32(std::clamp(q, -448.0f, 448.0f));
        }
      }
    }
  }
  r.zero_groups = zero_groups;
  return r;
}

void dequantize_microscale(const uint8_t* codes, const std::vector<int64_t>& shape,
                           const uint8_t* scales, const QuantArgs& args, float global_scale,
                           float* out) {
  QT_ASSERT(shape.size() == 2 && args.microscale());
  const int64_t rows = shape[0], cols = shape[1], g = args.group_size, ng = cols / g;
  const bool nv = args.scale_format == ScaleFormat::Nvfp4;
  const bool fp4 = args.type == QuantType::Float4E2M1;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < ng; ++k) {
      const uint8_t sb = scales[i * ng + k];
      const float s = nv ? f32_from_e4m3fn(sb) / global_scale : f32_from_e8m0(sb);
      for (int64_t j = k * g; j < (k + 1) * g; ++j) {
        const uint8_t c = codes[i * cols + j];
        out[i * cols + j] = (fp4 ? f32_from_e2m1(c) : f32_from_e4m3fn(c)) * s;
      }
    }
}

}  // namespace qt
