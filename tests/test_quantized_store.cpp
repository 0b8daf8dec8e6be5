// calib/quantized_store.h: GPTQ's finished weights wait for the writer in a temporary file; what
// comes back must be exactly what went in, and the file must take the size the header promises.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "calib/quantized_store.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;

QuantizedWeight weight(std::vector<int> codes, DType code_dtype, std::vector<uint8_t> scales) {
  QuantizedWeight q;
  q.code_dtype = code_dtype;
  q.shape = {1, static_cast<int64_t>(codes.size())};
  for (int c : codes) q.codes.push_back(static_cast<uint8_t>(static_cast<int8_t>(c)));
  q.scale_dtype = DType::BF16;
  q.scale_shape = {1, static_cast<int64_t>(scales.size() / 2)};
  q.scale_bytes = std::move(scales);
  q.amax = 1.5f;
  q.zero_groups = 2;
  return q;
}

void expect_same(const QuantizedWeight& a, const QuantizedWeight& b) {
  EXPECT_EQ(a.code_dtype, b.code_dtype);
  EXPECT_EQ(a.shape, b.shape);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.scale_dtype, b.scale_dtype);
  EXPECT_EQ(a.scale_shape, b.scale_shape);
  EXPECT_EQ(a.scale_bytes, b.scale_bytes);
  EXPECT_EQ(a.amax, b.amax);
  EXPECT_EQ(a.zero_groups, b.zero_groups);
}

TEST(QuantizedStore, GivesBackFromItsSpillFileExactlyWhatWasPut) {
  test::TempDir d;
  // INT4 codes (odd count: the last byte holds one nibble), INT8 codes outside [-8, 7], FP8 bytes.
  const QuantizedWeight int4 = weight({-8, 7, 0, -1, 3}, DType::I8, {0x80, 0x3f, 0x00, 0x40});
  const QuantizedWeight int8 = weight({-128, 127, 9, -9, 0, 1}, DType::I8, {0x10, 0x3c});
  const QuantizedWeight fp8 = weight({0x7e, -2, 0}, DType::F8_E4M3, {0x01, 0x02});
  calib::QuantizedStore spill(d.str()), ram;
  for (auto* s : {&spill, &ram}) {
    s->put("a", int4);
    s->put("b", int8);
    s->put("c", fp8);
  }
  EXPECT_TRUE(spill.spilled());
  EXPECT_FALSE(ram.spilled());
  // INT4: 5 codes in 3 bytes; INT8 and FP8: a byte per code; then the scale bytes.
  EXPECT_EQ(spill.spill_bytes(), (3u + 4u) + (6u + 2u) + (3u + 2u));
  EXPECT_EQ(spill.modules(), (std::vector<std::string>{"a", "b", "c"}));
  expect_same(spill.get("a"), int4);
  expect_same(spill.get("b"), int8);
  expect_same(spill.get("c"), fp8);
  expect_same(ram.get("b"), int8);
  EXPECT_TRUE(spill.contains("c"));
  EXPECT_FALSE(spill.contains("d"));
}

TEST(QuantizedStore, LeavesNoFileInItsFolder) {
  test::TempDir d;
  {
    calib::QuantizedStore s(d.str());
    s.put("a", weight({1, 2}, DType::I8, {0, 0}));
    EXPECT_TRUE(fs::is_empty(d.path())) << "the spill file is unlinked as soon as it is created";
    expect_same(s.get("a"), weight({1, 2}, DType::I8, {0, 0}));
  }
  EXPECT_TRUE(fs::is_empty(d.path()));
}

TEST(QuantizedStore, NamesTheFolderWhenItsFileCannotBeCreated) {
  test::TempDir d;
  calib::QuantizedStore s(d.str("missing"));
  try {
    s.put("model.layers.0.mlp.down_proj", weight({1}, DType::I8, {0, 0}));
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Io);
    EXPECT_EQ(e.file(), d.str("missing"));
    EXPECT_EQ(e.problem(), "cannot create the temporary file for the GPTQ weights: No such file or directory");
  }
}

}  // namespace
}  // namespace qt
