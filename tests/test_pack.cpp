// pack-quantized layout (libquant/NUMERICS.md §5, formats/FORMATS.md §3.2), checked against
// hand-derived words.
#include <gtest/gtest.h>

#include "libquant/pack.h"

namespace qt {

TEST(PackIntCodes, Int4ElementZeroGoesToTheLeastSignificantNibble) {
  // libquant/NUMERICS.md §5: values [-8,-7,...,-1] -> 0x76543210.
  std::vector<int8_t> v = {-8, -7, -6, -5, -4, -3, -2, -1};
  auto w = pack_int_codes(v.data(), 1, 8, 4);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(w[0]), 0x76543210u);
  // [0..7] -> +8 each -> 0xFEDCBA98 (top bit set: a negative int32).
  std::vector<int8_t> p = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(static_cast<uint32_t>(pack_int_codes(p.data(), 1, 8, 4)[0]), 0xFEDCBA98u);
}

TEST(PackIntCodes, Int8StoresCodePlus128LittleEndian) {
  std::vector<int8_t> v = {-128, -1, 0, 127};
  auto w = pack_int_codes(v.data(), 1, 4, 8);
  EXPECT_EQ(static_cast<uint32_t>(w[0]), 0xFF807F00u);
}

TEST(PackIntCodes, PadsPartialWordsWithZeroCodesAndRoundTrips) {
  for (int bits : {4, 8})
    for (int64_t cols : {1, 5, 8, 9, 31, 64}) {
      std::vector<int8_t> v;
      const int lo = -(1 << (bits - 1)), span = 1 << bits;
      for (int64_t i = 0; i < 3 * cols; ++i) v.push_back(static_cast<int8_t>(lo + (i * 7) % span));
      auto w = pack_int_codes(v.data(), 3, cols, bits);
      EXPECT_EQ(static_cast<int64_t>(w.size()), 3 * packed_cols(cols, bits));
      EXPECT_EQ(unpack_int_codes(w.data(), 3, cols, bits), v) << bits << " " << cols;
      // Padding nibbles/bytes are u = 0.
      const int per = 32 / bits;
      if (cols % per) {
        uint32_t last = static_cast<uint32_t>(w[static_cast<size_t>(packed_cols(cols, bits) - 1)]);
        EXPECT_EQ(last >> ((cols % per) * bits), 0u);
      }
    }
}

}  // namespace qt
