// Internal to libquant/kernels/quant_rows.cpp: the AVX2 and AVX-512 F bodies of
// libquant/quant_rows.h (quant_rows_avx2.cpp, quant_rows_avx512.cpp). Call an ISA's functions
// only when cpu_isa() reaches that ISA. Both finish a row's tail (< one vector) with the scalar
// twin, so every element is computed by the same IEEE operations.
#pragma once

#include <cstdint>

#include "libquant/schemes.h"

namespace qt::quant_rows_avx2 {
uint16_t absmax_bits16(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special);
void quantize_bf16_row(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes);
void e2m1_codes_bf16_row(const uint8_t* x, int64_t n, float divisor, uint8_t* codes);
// t: Float8E4M3, Int8 or Int4 (quant_rows.h quantize_bf16_row_cast).
void quantize_bf16_row_cast(const uint8_t* x, int64_t n, float scale, QuantType t, uint8_t* codes);
}  // namespace qt::quant_rows_avx2

namespace qt::quant_rows_avx512 {
uint16_t absmax_bits16(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special);
void quantize_bf16_row(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes);
void quantize_bf16_row_cast(const uint8_t* x, int64_t n, float scale, QuantType t, uint8_t* codes);
void e2m1_codes_bf16_row(const uint8_t* x, int64_t n, float divisor, uint8_t* codes);
}  // namespace qt::quant_rows_avx512
