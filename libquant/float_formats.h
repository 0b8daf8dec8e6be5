// Number formats, converted exactly as PyTorch converts them (libquant/NUMERICS.md §2).
//
// Every function here is a pure, scalar, bit-exact reference. Rounding is round-to-nearest,
// ties-to-even (RNE) everywhere, matching c10's implementations:
//   - f32 -> bf16: c10 round_to_nearest_even, overflow -> inf. NaN -> quiet NaN 0x7FC0 | sign
//     (c10's scalar rule gives 0x7FC0 for every NaN and torch's vectorized CPU cast 0xFFFF; no
//     NaN bits are relied on anywhere).
//   - f32 -> f16 : IEEE RNE (as c10::Half / F16C), overflow -> inf; NaN is quieted keeping its
//     sign and top 10 payload bits, as torch's CPU cast (F16C) does.
//   - f32 -> float8_e4m3fn: c10 fp8e4m3fn_from_fp32_value. NOT saturating: |x| in (464, 480)
//     rounds up into the NaN code, |x| >= 480 and +-inf give NaN (0x7F / 0xFF, sign kept);
//     subnormals on the 2^-9 grid; signed zero kept. Callers clamp to +-448 first.
//     This is c10 before pytorch/pytorch#178817 (April 2026). Newer PyTorch (e.g. 2.15, the
//     version the goldens were made with) saturates instead: see e4m3fn_from_f32_sat. The two
//     differ only for |x| > 464 and +-inf, i.e. never after the +-448 clamp.
//   - f32 -> float8_e5m2: c10 fp8e5m2_from_fp32_value; >= 61440 rounds to inf (0x7C).
// Wider-to-narrower conversions from bf16/f16 go through f32, which is exact.
#pragma once

#include <cstdint>
#include <span>

#include "libquant/dtype.h"

namespace qt {

// --- bit casts -----------------------------------------------------------------------------
uint32_t f32_bits(float f);
float f32_from_bits(uint32_t u);

// --- bf16 / f16 ----------------------------------------------------------------------------
uint16_t bf16_from_f32(float f);   // RNE
float f32_from_bf16(uint16_t h);   // exact
uint16_t f16_from_f32(float f);    // RNE
float f32_from_f16(uint16_t h);    // exact

// --- float8 --------------------------------------------------------------------------------
uint8_t e4m3fn_from_f32(float f);  // c10 rule, non-saturating (see above)
// Newer c10 rule (pytorch#178817, merged April 2026; torch 2.15.0 has it): same rounding, but
// a finite overflow (|x| > 464) or +-inf gives +-448 (0x7E / 0xFE); NaN still gives 0x7F / 0xFF
// (sign kept).
uint8_t e4m3fn_from_f32_sat(float f);
float f32_from_e4m3fn(uint8_t b);  // exact; 0x7F/0xFF -> NaN
uint8_t e5m2_from_f32(float f);    // c10 rule
float f32_from_e5m2(uint8_t b);    // exact

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

// --- bulk decode -----------------------------------------------------------------------------
// Decodes `n` elements of `src` (raw little-endian bytes of dtype `t`) to f32. Supported for
// F32, F16, BF16, F64 (rounded RNE to f32), F8_E4M3, F8_E5M2, I8, U8, I16, I32, I64, BOOL.
// Returns false for a dtype it cannot decode (F4, F6*, E8M0, FNUZ, C64, U16/U32/U64).
bool decode_to_f32(DType t, const uint8_t* src, uint64_t n, float* dst);

// Index of the first of `n` elements of `src` (raw little-endian bytes of dtype `t`) that
// decode_to_f32 would turn into a NaN or an infinity -- a NaN or Inf stored as such, or an F64
// value beyond the f32 range -- or -1 when there is none (always -1 for integer dtypes and for
// dtypes decode_to_f32 cannot decode). Reads the bits without decoding (a streaming scan).
int64_t first_nonfinite_f32(DType t, const uint8_t* src, uint64_t n);

// Encodes one f32 value into the model (scale) dtype and back: the value a PyTorch tensor of
// dtype `t` would hold after `tensor.to(t)`. Only F32, F16, BF16.
float round_to_dtype(DType t, float f);
// Stores f (already representable in t) as little-endian bytes of dtype t at dst.
void store_float(DType t, float f, uint8_t* dst);
// Machine epsilon of a float dtype as torch.finfo(t).eps (bf16 2^-7, f16 2^-10, f32 2^-23).
float dtype_eps(DType t);

}  // namespace qt
