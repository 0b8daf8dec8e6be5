// pack-quantized layout (libquant/NUMERICS.md §5): signed b-bit codes (b = 4 or 8) packed
// along the input dimension into little-endian int32 words.
//   u = code + 2^(b-1)                       (int4: +8 -> 0..15; int8: +128 -> 0..255)
//   element k of a row -> word k*b/32, bit offset (k*b) % 32, least significant bits first
//   a row is padded with u = 0 to a whole word
// Result shape [rows, ceil(cols*b/32)], dtype I32 (words with the top bit set are negative).
#pragma once

#include <cstdint>
#include <vector>

namespace qt {

// `codes`: rows*cols signed codes (int8 storage, values in [-2^(b-1), 2^(b-1)-1]).
std::vector<int32_t> pack_int_codes(const int8_t* codes, int64_t rows, int64_t cols, int bits);
// Inverse of pack_int_codes: recovers the signed codes (cols = the unpadded column count).
std::vector<int8_t> unpack_int_codes(const int32_t* words, int64_t rows, int64_t cols, int bits);
inline int64_t packed_cols(int64_t cols, int bits) { return (cols * bits + 31) / 32; }

}  // namespace qt
