#include "libquant/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "libquant/error.h"
#include "libquant/float_formats.h"

namespace qt {

namespace {

// torch.pow(t, e) on CPU: e == 0.5 is sqrt (exactly rounded), other exponents pow in f32.
float pow_like_torch(float x, float e) { return e == 0.5f ? std::sqrt(x) : std::pow(x, e); }


// The smallest |f32| that RNE sends to Inf in dtype t: half an ulp above the largest finite
// value (65504 + 16 for f16; bf16 0x7F7F + half an ulp, a tie that rounds to the even 0x7F80 = Inf).
float overflow_threshold(DType t) {
  switch (t) {
    case DType::F16: return 65520.0f;
    case DType::BF16: return f32_from_bits(0x7F7F8000u);
    default: return std::numeric_limits<float>::infinity();
  }
}

// Smoothing must not turn a finite weight into Inf (which would then be quantized or written).
void check_no_overflow(const TensorView& w, bool overflow) {
  if (overflow)
    throw InputError(InputError::Kind::BadValue, w.file, w.name,
                     "SmoothQuant: a smoothed value overflows " + std::string(dtype_name(w.dtype)) +
                         " (an extreme smoothing factor; try a smaller --smoothing-strength or --smoothquant-mappings norms)");
}

// n f32 values to dtype t (F32/F16/BF16), RNE, as raw little-endian bytes: one switch per row,
// a tight loop per element.
void encode_row(DType t, const float* v, int64_t n, uint8_t* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, v, static_cast<size_t>(n) * 4); return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = bf16_from_f32(v[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f16_from_f32(v[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    default: QT_ASSERT(!"encode_row: only F32, F16, BF16");
  }
}

// out[r, c] = M(f(r, c, f32(W[r, c]))) for a 2-D F32/F16/BF16 weight, as raw bytes of its dtype
// (f computes in f32; encode_row rounds once); rows in parallel (each element is computed alone,
// so any split gives the same bytes).
template <class F>
std::vector<uint8_t> map_2d(const TensorView& w, F f) {
  const int64_t rows = w.shape[0], cols = w.shape[1];
  const size_t esz = dtype_bits(w.dtype) / 8;
  const float limit = overflow_threshold(w.dtype);
  std::vector<uint8_t> out(w.bytes.size());
  bool overflow = false;
#pragma omp parallel reduction(|| : overflow)
  {
    std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const size_t off = static_cast<size_t>(r * cols) * esz;
      decode_to_f32(w.dtype, w.bytes.data() + off, static_cast<uint64_t>(cols), row.data());
      for (int64_t c = 0; c < cols; ++c) {
        const float in = row[static_cast<size_t>(c)], v = f(r, c, in);
        // A finite input whose result rounds to Inf (or is Inf/NaN) in the dtype.
        overflow = overflow || (std::isfinite(in) && !(std::fabs(v) < limit));
        row[static_cast<size_t>(c)] = v;
      }
      encode_row(w.dtype, row.data(), cols, out.data() + off);
    }
  }
  check_no_overflow(w, overflow);
  return out;
}

}  // namespace

std::vector<float> smoothing_scales(std::span<const float> ch_min, std::span<const float> ch_max,
                                    std::span<const float> wcol, double alpha_d, DType M) {
  QT_ASSERT(ch_min.size() == ch_max.size() && ch_min.size() == wcol.size());
  QT_ASSERT(alpha_d > 0.0 && alpha_d <= 1.0);
  // Python floats handed to torch.pow as scalars, used in f32: f32(0.8) and f32(1 - 0.8) = 0.2f
  // (not 1 - f32(0.8) = 0.19999999f).
  const float alpha = static_cast<float>(alpha_d);
  const float beta = static_cast<float>(1.0 - alpha_d);
  std::vector<float> s(ch_min.size());
  for (size_t j = 0; j < s.size(); ++j) {
    const float act = round_to_dtype(M, round_to_dtype(M, ch_max[j]) - round_to_dtype(M, ch_min[j]));
    const float wt = 2.0f * wcol[j];  // exact: a power-of-two multiple of an M value
    float v;
    if (wt > 0.0f) {
      const float num = round_to_dtype(M, pow_like_torch(act, alpha));
      const float den = round_to_dtype(M, pow_like_torch(wt, beta));
      v = round_to_dtype(M, num / den);
    } else {
      v = act;
    }
    // torch.maximum(s, float32 tensor [1e-5]): promoted to f32; NaN would propagate (checked
    // out by the caller before we get here).
    s[j] = std::max(v, kMinSmoothingScale);
  }
  return s;
}

bool accumulate_column_absmax(const TensorView& w, std::span<float> colmax) {
  if (w.shape.size() != 2 || static_cast<size_t>(w.shape[1]) != colmax.size()) return false;
  if (w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16) return false;
  const int64_t rows = w.shape[0], cols = w.shape[1];
  const size_t esz = dtype_bits(w.dtype) / 8;
  // Fixed 64-row blocks, each thread folds its blocks into a private vector; max is exact and
  // commutative, so the merged result does not depend on the split.
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (rows + kBlock - 1) / kBlock;
#pragma omp parallel
  {
    std::vector<float> local(static_cast<size_t>(cols), 0.0f), row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
      for (int64_t r = b * kBlock; r < std::min(rows, (b + 1) * kBlock); ++r) {
        decode_to_f32(w.dtype, w.bytes.data() + static_cast<size_t>(r * cols) * esz, static_cast<uint64_t>(cols),
                      row.data());
        for (int64_t c = 0; c < cols; ++c) {
          const float a = std::fabs(row[static_cast<size_t>(c)]);
          float& m = local[static_cast<size_t>(c)];
          if (a > m || a != a) m = a;
        }
      }
    }
#pragma omp critical
    for (int64_t c = 0; c < cols; ++c) {
      const float a = local[static_cast<size_t>(c)];
      float& m = colmax[static_cast<size_t>(c)];
      if (a > m || a != a) m = a;
    }
  }
  return true;
}

std::vector<uint8_t> scale_weight_columns(const TensorView& w, std::span<const float> s) {
  QT_ASSERT(w.shape.size() == 2 && static_cast<size_t>(w.shape[1]) == s.size());
  // weight.mul_(scales.view(1, -1)): f32(W) * f32(s) in f32, then RNE to the weight's dtype.
  return map_2d(w, [&](int64_t, int64_t c, float v) { return v * s[static_cast<size_t>(c)]; });
}

std::vector<uint8_t> divide_norm_weight(const TensorView& g, std::span<const float> s) {
  QT_ASSERT(g.shape.size() == 1 && static_cast<size_t>(g.shape[0]) == s.size());
  const std::vector<float> gv = decode_tensor_f32(g);
  const size_t esz = dtype_bits(g.dtype) / 8;
  const float limit = overflow_threshold(g.dtype);
  std::vector<uint8_t> out(g.bytes.size());
  bool overflow = false;
  for (size_t j = 0; j < gv.size(); ++j) {
    const float v = gv[j] / s[j];  // weight.div_(scales): f32 quotient, RNE to the dtype
    overflow = overflow || (std::isfinite(gv[j]) && !(std::fabs(v) < limit));
    store_float(g.dtype, v, out.data() + j * esz);
  }
  check_no_overflow(g, overflow);
  return out;
}

std::vector<uint8_t> divide_weight_rows(const TensorView& w, std::span<const float> s) {
  QT_ASSERT(w.shape.size() == 2 && static_cast<size_t>(w.shape[0]) == s.size());
  // weight.div_(scales.view(-1, 1)): f32 quotient, then RNE to the weight's dtype.
  return map_2d(w, [&](int64_t r, int64_t, float v) { return v / s[static_cast<size_t>(r)]; });
}

float divided_input_absmax(std::span<const float> ch_min, std::span<const float> ch_max, std::span<const float> s) {
  QT_ASSERT(ch_min.size() == ch_max.size() && s.size() == ch_min.size());
  double m = 0.0;
  for (size_t j = 0; j < s.size(); ++j) {
    const double a = std::max(std::fabs(static_cast<double>(ch_min[j])), std::fabs(static_cast<double>(ch_max[j])));
    m = std::max(m, a / static_cast<double>(s[j]));
  }
  return static_cast<float>(m);
}

float smoothed_input_absmax(std::span<const float> ch_min, std::span<const float> ch_max,
                            std::span<const float> g, std::span<const float> gs) {
  QT_ASSERT(ch_min.size() == ch_max.size() && g.size() == ch_min.size() && gs.size() == g.size());
  double m = 0.0;
  for (size_t j = 0; j < g.size(); ++j) {
    if (g[j] == 0.0f) continue;
    const double a = std::max(std::fabs(static_cast<double>(ch_min[j])), std::fabs(static_cast<double>(ch_max[j])));
    m = std::max(m, a * std::fabs(static_cast<double>(gs[j]) / static_cast<double>(g[j])));
  }
  return static_cast<float>(m);
}

}  // namespace qt
