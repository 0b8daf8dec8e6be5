#include "libquant/pack.h"

#include "libquant/error.h"

namespace qt {

std::vector<int32_t> pack_int_codes(const int8_t* codes, int64_t rows, int64_t cols, int bits) {
  QT_ASSERT(bits == 4 || bits == 8);  // the only widths vLLM loads; both divide 32
  const int64_t wc = packed_cols(cols, bits);
  const int per_word = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  const int32_t offset = 1 << (bits - 1);  // signed -> unsigned code (+8 / +128)
  std::vector<int32_t> out(static_cast<size_t>(rows * wc));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* src = codes + r * cols;
    for (int64_t w = 0; w < wc; ++w) {
      uint32_t word = 0;
      for (int k = 0; k < per_word; ++k) {
        const int64_t c = w * per_word + k;
        if (c >= cols) break;  // padding codes are 0
        const uint32_t u = static_cast<uint32_t>(src[c] + offset) & mask;
        word |= u << (k * bits);  // element 0 in the least significant bits
      }
      out[static_cast<size_t>(r * wc + w)] = static_cast<int32_t>(word);
    }
  }
  return out;
}

std::vector<int8_t> unpack_int_codes(const int32_t* words, int64_t rows, int64_t cols, int bits) {
  QT_ASSERT(bits == 4 || bits == 8);
  const int64_t wc = packed_cols(cols, bits);
  const int per_word = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  const int32_t offset = 1 << (bits - 1);
  std::vector<int8_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t word = static_cast<uint32_t>(words[r * wc + c / per_word]);
      const uint32_t u = (word >> ((c % per_word) * bits)) & mask;
      out[static_cast<size_t>(r * cols + c)] = static_cast<int8_t>(static_cast<int32_t>(u) - offset);
    }
  return out;
}

}  // namespace qt
