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

namespace qt {

// max over i < n of (bits(x[i]) & 0x7FFF). With `special` the first Inf/NaN pattern (0x7F80 for
// bf16, 0x7C00 for f16), *first_special is the first index i with (bits & 0x7FFF) >= special,
// or -1.
uint16_t absmax_bits16(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special);
uint16_t absmax_bits16_ref(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special);

// codes[i] = table[bf16_rne(f32(x[i]) / scale)] for i < n; x holds n bf16 values.
void quantize_bf16_row(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes);
void quantize_bf16_row_ref(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes);

// NVFP4 codes of a row (libquant/microscale.cpp): codes[i] = e2m1_from_f32(clamp(f32(x[i]) /
// divisor, -6, 6)) for i < n, one unpacked E2M1 code per byte; x holds n bf16 values. The quotient
// stays f32 (no rounding to bf16). The clamp cannot change the code (|q| > 5 is already the
// largest magnitude, the sign is kept), so the fast bodies compare |q| with the seven rounding
// thresholds directly; a NaN quotient gives magnitude 7 with sign bit clear, as the reference.
// AVX-512 and AVX2 bodies (the same compares on 16 or 8 lanes); other CPUs run the scalar twin.
void e2m1_codes_bf16_row(const uint8_t* x, int64_t n, float divisor, uint8_t* codes);
void e2m1_codes_bf16_row_ref(const uint8_t* x, int64_t n, float divisor, uint8_t* codes);

}  // namespace qt
