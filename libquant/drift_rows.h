// Drift statistics of one scale group (calib/like.cpp, `quantize --like`): how far NEW's weights
// lie from QUANT's dequantized ones, in one pass that decodes QUANT's codes and reads NEW's values,
// with AVX-512 and AVX2 bodies picked at run time (libquant/cpu_isa.h) for BF16 weights with E4M3
// or INT8 codes, and a scalar reference on f32 values that every body equals bit for bit
// (tests/test_drift_rows.cpp).
//
// For element j of the group (a = NEW's value widened exactly to f32, c = the code's value,
// s = the group's scale, all f32 operations rounded to nearest, no fused multiply-add):
//   deq = c * s,  d = a - deq
//   d2 = sum d*d,  r2 = sum deq*deq                       (f32)
//   max_d = max |d|,  amax_new = max |a|,  amax_quant = max |deq|   (a NaN is skipped)
//   clipped = count of |a| > lim_s
// The summation order is fixed, the same on every path: 16 partial sums, partial sum l taking
// elements l, l + 16, l + 32, ... in order; then partial sums l and l + 8 are added (l < 8), then
// l and l + 4 (l < 4), l and l + 2, and finally 0 and 1. A NaN term makes the sum NaN. The
// maxima and the count do not depend on the order.
#pragma once

#include <cstdint>

#include "libquant/dtype.h"

namespace qt {

struct DriftGroup {
  float d2 = 0, r2 = 0, max_d = 0, amax_new = 0, amax_quant = 0;
  int64_t clipped = 0;
};

// The reference: `a` NEW's values and `c` the codes' values, n of each.
DriftGroup drift_group_ref(const float* a, const float* c, int64_t n, float s, float lim_s);

// The same statistics straight from the stored bytes: `w` n BF16 values (any byte alignment),
// `codes` n codes of `code_dtype` (F8_E4M3 or I8, one byte each; E4M3 0x7F / 0xFF are NaN).
// Equal to drift_group_ref on the decoded values (decode_to_f32) on every path.
DriftGroup drift_group_bf16(const uint8_t* w, const uint8_t* codes, DType code_dtype, int64_t n, float s,
                            float lim_s);

}  // namespace qt
