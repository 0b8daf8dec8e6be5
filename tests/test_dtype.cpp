#include <gtest/gtest.h>

#include "libquant/dtype.h"

namespace qt {

TEST(DType, TableMatchesEnumOrderAndNamesRoundTrip) {
  for (int i = 0; i < kNumDTypes; ++i) {
    DType t = static_cast<DType>(i);
    auto back = dtype_from_name(dtype_name(t));
    ASSERT_TRUE(back.has_value()) << dtype_name(t);
    EXPECT_EQ(*back, t);
  }
}

TEST(DType, RejectsUnknownNames) {
  EXPECT_FALSE(dtype_from_name("F8_E4M3FN").has_value());  // safetensors has no such string
  EXPECT_FALSE(dtype_from_name("bf16").has_value());       // case matters
  EXPECT_FALSE(dtype_from_name("").has_value());
}

TEST(DType, ByteSizesFollowTheFormatTable) {
  // formats/FORMATS.md §1.3: bits per element.
  EXPECT_EQ(dtype_bits(DType::BF16), 16);
  EXPECT_EQ(dtype_bits(DType::F8_E4M3), 8);
  EXPECT_EQ(dtype_bits(DType::I64), 64);
  EXPECT_EQ(dtype_bits(DType::F4), 4);
  EXPECT_EQ(*dtype_nbytes(DType::F4, 6), 3u);
  EXPECT_FALSE(dtype_nbytes(DType::F4, 3).has_value());        // half a byte
  EXPECT_FALSE(dtype_nbytes(DType::F6_E2M3, 3).has_value());   // 18 bits
  EXPECT_EQ(*dtype_nbytes(DType::F6_E2M3, 4), 3u);
  EXPECT_FALSE(dtype_nbytes(DType::F64, UINT64_MAX / 2).has_value());  // overflow
}

}  // namespace qt
