// Scalar twins and run-time dispatch of libquant/quant_rows.h. The scalar code is the reference:
// the AVX2 / AVX-512 bodies (quant_rows_isa.h) do the same integer and IEEE f32 operations per
// element, and the tests compare all of them on every bf16 pattern.
#include "libquant/quant_rows.h"

#include <algorithm>
#include <cstring>

#include "libquant/cpu_isa.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/quant_rows_isa.h"
#include "libquant/microscale.h"
#include "libquant/quantize.h"

namespace qt {

uint16_t absmax_bits16_ref(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special) {
  uint16_t m = 0;
  *first_special = -1;
  for (int64_t i = 0; i < n; ++i) {
    uint16_t b;
    std::memcpy(&b, x + 2 * i, 2);
    b &= 0x7FFFu;
    if (b >= special && *first_special < 0) *first_special = i;
    m = b > m ? b : m;
  }
  return m;
}

void quantize_bf16_row_ref(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t b;
    std::memcpy(&b, x + 2 * i, 2);
    codes[i] = table[bf16_from_f32(f32_from_bf16(b) / scale)];
  }
}

void e2m1_codes_bf16_row_ref(const uint8_t* x, int64_t n, float divisor, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t b;
    std::memcpy(&b, x + 2 * i, 2);
    codes[i] = e2m1_from_f32(std::clamp(f32_from_bf16(b) / divisor, -6.0f, 6.0f));
  }
}

void e2m1_codes_bf16_row(const uint8_t* x, int64_t n, float divisor, uint8_t* codes) {
  switch (active_isa()) {
    case Isa::Avx512: return quant_rows_avx512::e2m1_codes_bf16_row(x, n, divisor, codes);
    case Isa::Avx2: return quant_rows_avx2::e2m1_codes_bf16_row(x, n, divisor, codes);
    default: return e2m1_codes_bf16_row_ref(x, n, divisor, codes);
  }
}

uint16_t absmax_bits16(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special) {
  switch (active_isa()) {
    case Isa::Avx512: return quant_rows_avx512::absmax_bits16(x, n, special, first_special);
    case Isa::Avx2: return quant_rows_avx2::absmax_bits16(x, n, special, first_special);
    default: return absmax_bits16_ref(x, n, special, first_special);
  }
}

void quantize_bf16_row(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes) {
  switch (active_isa()) {
    case Isa::Avx512: return quant_rows_avx512::quantize_bf16_row(x, n, scale, table, codes);
    case Isa::Avx2: return quant_rows_avx2::quantize_bf16_row(x, n, scale, table, codes);
    default: return quantize_bf16_row_ref(x, n, scale, table, codes);
  }
}

void quantize_bf16_row_cast(const uint8_t* x, int64_t n, float scale, QuantType t, uint8_t* codes) {
  QT_ASSERT(t == QuantType::Float8E4M3 || t == QuantType::Int8 || t == QuantType::Int4);
  switch (active_isa()) {
    case Isa::Avx512: return quant_rows_avx512::quantize_bf16_row_cast(x, n, scale, t, codes);
    case Isa::Avx2: return quant_rows_avx2::quantize_bf16_row_cast(x, n, scale, t, codes);
    default: break;
  }
  quantize_bf16_row_ref(x, n, scale, code_table(DType::BF16, t), codes);
}

}  // namespace qt
