// Row kernels of weight quantization (libquant/quantize.cpp's two passes) for 16-bit model
// dtypes, with AVX-512 and AVX2 bodies picked at run time (libquant/cpu_isa.h) and a scalar twin
// (`_ref`) that every fast body must equal bit for bit (tests/test_quant_rows.cpp).
//
// Numerics (libquant/NUMERICS.md §2-3):
// - absmax: for bf16 and f16 the magnitude order of finite values is the order of their bit
//   patterns with the sign cleared, and Inf / NaN patterns lie above every finite one. So
//   max |x| is the bf16/f16 value whose bits are max(x & 0x7FFF): exact, with no decode. A NaN
//   anywhere makes the maximum a NaN pattern, an Inf (and no NaN) an Inf: the same result as
//   decoding and taking max |x| with NaN propagating.
// - codes (bf16): code = table[bf16_rne(f32(x) / scale)]: x widened exactly to f32, one IEEE f32
//   division (the same in every lane width), rounded to bf16 nearest-even as bf16_from_f32 does
//   (a NaN quotient becomes the quiet NaN 0x7FC0 with its sign), then the clamp-and-cast table of
//   code_table() (libquant/quantize.h).
// Inputs are raw little-endian 16-bit patterns at any byte alignment.
#pragma once

#include <cstdint>

#include "libquant/schemes.h"

namespace qt {

// max over i < n of (bits(x[i]) & 0x7FFF). With `special` the first Inf/NaN pattern (0x7F80 for
// bf16, 0x7C00 for f16), *first_special is the first index i with (bits & 0x7FFF) >= special,
// or -1.
uint16_t absmax_bits16(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special);
uint16_t absmax_bits16_ref(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special);

// codes[i] = table[bf16_rne(f32(x[i]) / scale)] for i < n; x holds n bf16 values.
void quantize_bf16_row(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes);
void quantize_bf16_row_ref(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes);

// The same codes for t = Float8E4M3, Int8 or Int4 with the clamp and cast computed in the vector
// registers instead of looked up: codes[i] = code_table(BF16, t)[bf16_rne(f32(x[i]) / scale)].
// After the division and the bf16 rounding (as above), with T the rounded quotient:
// - FP8 E4M3: |T| is clamped to 448 (Inf included; a NaN is not clamped), then c10's RNE cast of
//   e4m3fn_from_f32 on the clamped value: below 2^-6 the subnormal grid 2^-9 by the magic-number
//   add (|T| + 2^14 in f32, whose low mantissa bits are the code), else exponent rebias 127 -> 7
//   and mantissa rounding 7 -> 3 bits nearest-even in integers; a NaN gives 0x7F; the sign bit of
//   T is or-ed in (so -0 gives 0x80, -NaN 0xFF, -Inf 0xFE).
// - INT8 / INT4: T clamped to [-128, 127] / [-8, 7], rounded half-to-even to an integer, stored
//   as its two's-complement byte; a NaN gives 0.
// Other t (and CPUs without AVX2) run quantize_bf16_row_ref with code_table(BF16, t).
void quantize_bf16_row_cast(const uint8_t* x, int64_t n, float scale, QuantType t, uint8_t* codes);

// NVFP4 codes of a row (libquant/microscale.cpp): codes[i] = e2m1_from_f32(clamp(f32(x[i]) /
// divisor, -6, 6)) for i < n, one unpacked E2M1 code per byte; x holds n bf16 values. The quotient
// stays f32 (no rounding to bf16). The clamp cannot change the code (|q| > 5 is already the
// largest magnitude, the sign is kept), so the fast bodies compare |q| with the seven rounding
// thresholds directly; a NaN quotient gives magnitude 7 with sign bit clear, as the reference.
// AVX-512 and AVX2 bodies (the same compares on 16 or 8 lanes); other CPUs run the scalar twin.
void e2m1_codes_bf16_row(const uint8_t* x, int64_t n, float divisor, uint8_t* codes);
void e2m1_codes_bf16_row_ref(const uint8_t* x, int64_t n, float divisor, uint8_t* codes);

}  // namespace qt
