// SafetensorsFile reader: every class of malformed file is rejected with a message that says
// what is wrong (formats/FORMATS.md §1.4), valid corner cases are accepted, views are zero-copy.
// Files are built by hand here (header text + data bytes), independent of the writer.
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

using test::TempDir;

// u64 LE header length, header text, `data_len` data bytes (0,1,2,...).
std::vector<uint8_t> st_bytes(const std::string& header, size_t data_len,
                              std::optional<uint64_t> n_override = std::nullopt) {
  const uint64_t n = n_override.value_or(header.size());
  std::vector<uint8_t> b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(n >> (8 * i)));
  b.insert(b.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_len; ++i) b.push_back(static_cast<uint8_t>(i));
  return b;
}

// Writes the bytes and expects open() to throw; returns the error.
InputError open_error(const std::vector<uint8_t>& bytes, std::string* path_out = nullptr) {
  TempDir dir;
  const std::string path = dir.str("bad.safetensors");
  test::write_file(path, bytes);
  if (path_out) *path_out = path;
  try {
    SafetensorsFile::open(path);
  } catch (const InputError& e) {
    return e;
  }
  ADD_FAILURE() << "open() accepted a bad file";
  return InputError(InputError::Kind::BadFile, "", "", "");
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t b, uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(b) + "," + std::to_string(e) + "]}";
}

// ---- accepted files ---------------------------------------------------------------------

TEST(SafetensorsReader, AcceptsAnEmptyHeaderPaddedWithSpaces) {
  TempDir d;
  test::write_file(d.str("e.safetensors"), st_bytes("{}      ", 0));
  const auto f = SafetensorsFile::open(d.str("e.safetensors"));
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.header_size(), 16u);
  EXPECT_EQ(f.file_size(), 16u);
}

TEST(SafetensorsReader, ReturnsZeroCopyViewsInOffsetOrderWithMetadata) {
  // Header order (b, a) differs from data order (a at 0, b at 8).
  const std::string h = "{" + entry("b", "U8", "[2,2]", 8, 12) + "," +
                        "\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"}," +
                        entry("a", "F32", "[2]", 0, 8) + "}";
  TempDir d;
  test::write_file(d.str("m.safetensors"), st_bytes(h, 12));
  const auto f = SafetensorsFile::open(d.str("m.safetensors"));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a");
  EXPECT_EQ(f.tensors()[1].name, "b");
  const TensorView* b = f.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::U8);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 2}));
  ASSERT_EQ(b->bytes.size(), 4u);
  EXPECT_EQ(b->bytes[0], 8);  // data byte i holds i
  EXPECT_EQ(b->bytes[3], 11);
  EXPECT_EQ(b->file, d.str("m.safetensors"));
  EXPECT_EQ(f.file_offset(*b), 8 + h.size() + 8);
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("x"), "y");
  // Zero copy: the view points into the mapping.
  EXPECT_EQ(b->bytes.data(), f.tensors()[0].bytes.data() + 8);
}

TEST(SafetensorsReader, AcceptsZeroSizeAndScalarTensors) {
  const std::string h = "{" + entry("empty", "F32", "[0,4]", 0, 0) + "," +
                        entry("scalar", "I64", "[]", 0, 8) + "," + entry("empty2", "BF16", "[3,0]", 8, 8) + "}";
  TempDir d;
  test::write_file(d.str("z.safetensors"), st_bytes(h, 8));
  const auto f = SafetensorsFile::open(d.str("z.safetensors"));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.find("scalar")->numel(), 1u);
  EXPECT_EQ(f.find("scalar")->bytes.size(), 8u);
  EXPECT_EQ(f.find("empty")->bytes.size(), 0u);
  EXPECT_EQ(f.find("empty2")->numel(), 0u);
}

TEST(SafetensorsReader, AcceptsWhitespaceAroundTheHeaderObject) {
  const std::string h = " \n{" + entry("a", "U8", "[1]", 0, 1) + "}\t\r\n   ";
  TempDir d;
  test::write_file(d.str("w.safetensors"), st_bytes(h, 1));
  EXPECT_EQ(SafetensorsFile::open(d.str("w.safetensors")).tensors().size(), 1u);
}

TEST(SafetensorsReader, AcceptsEveryDtypeWithItsByteSize) {
  // 8 elements is a whole number of bytes for every dtype, including F4 (4 B) and F6 (6 B).
  std::string h = "{";
  uint64_t off = 0;
  for (int i = 0; i < kNumDTypes; ++i) {
    const DType t = static_cast<DType>(i);
    const uint64_t size = static_cast<uint64_t>(dtype_bits(t));  // 8 elements * bits / 8
    if (i) h += ",";
    h += entry("t" + std::to_string(i), std::string(dtype_name(t)), "[8]", off, off + size);
    off += size;
  }
  h += "}";
  TempDir d;
  test::write_file(d.str("all.safetensors"), st_bytes(h, off));
  const auto f = SafetensorsFile::open(d.str("all.safetensors"));
  ASSERT_EQ(f.tensors().size(), static_cast<size_t>(kNumDTypes));
  for (int i = 0; i < kNumDTypes; ++i)
    EXPECT_EQ(f.find("t" + std::to_string(i))->dtype, static_cast<DType>(i));
}

// ---- rejected files: sizes and framing ----------------------------------------------------

TEST(SafetensorsReader, RejectsAFileShorterThanTheLengthPrefix) {
  const auto e = open_error({1, 2, 3, 4, 5});
  EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
  EXPECT_CONTAINS(e.what(), "file is 5 bytes, shorter than the 8-byte header length");
  EXPECT_CONTAINS(e.what(), "bad.safetensors");
}

TEST(SafetensorsReader, RejectsAnEmptyFile) {
  const auto e = open_error({});
  EXPECT_CONTAINS(e.what(), "file is 0 bytes");
}

TEST(SafetensorsReader, RejectsAHeaderLengthBeyondTheFileSize) {
  auto b = st_bytes("{}", 0, 123456789012ull);
  b.resize(4096, ' ');
  const auto e = open_error(b);
  EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
  EXPECT_CONTAINS(e.what(), "header length 123456789012 exceeds file size 4096");
}

TEST(SafetensorsReader, RejectsAnOversizedHeaderBeforeReadingIt) {
  // Only 64 bytes exist in memory while the "file" claims 200 MB: if parse_header read the
  // header it would run off this buffer (ASan / a crash), so passing proves the length is
  // checked first.
  const uint64_t n = kMaxHeaderBytes + 1;
  uint8_t prefix[64];
  std::fill(std::begin(prefix), std::end(prefix), static_cast<uint8_t>(' '));
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(n >> (8 * i));
  std::vector<TensorView> t;
  std::map<std::string, std::string> m;
  uint64_t start = 0;
  try {
    SafetensorsFile::parse_header("big.safetensors", prefix, 200'000'000, t, m, start);
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_CONTAINS(e.what(), "header length 100000001 exceeds the limit of 100000000 bytes");
    EXPECT_CONTAINS(e.what(), "big.safetensors");
  }
}

TEST(SafetensorsReader, RejectsAZeroHeaderLength) {
  const auto e = open_error(st_bytes("", 0));
  EXPECT_CONTAINS(e.what(), "header length is 0");
}

TEST(SafetensorsReader, RejectsAHeaderThatIsNotJson) {
  const auto e = open_error(st_bytes("{\"a\": ", 0));
  EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
  EXPECT_CONTAINS(e.what(), "header is not valid JSON");
  EXPECT_CONTAINS(e.what(), "line 1, column");
}

TEST(SafetensorsReader, RejectsANumberBeyondDoubleRange) {
  // Found by tests/fuzz/fuzz_safetensors_header: nlohmann throws out_of_range, not parse_error.
  const auto e = open_error(st_bytes("{" + entry("w", "U8", "[5,9e391]", 0, 0) + "}", 0));
  EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
  EXPECT_CONTAINS(e.what(), "header is not valid JSON: number overflow parsing '9e391'");
}

TEST(SafetensorsReader, RejectsAHeaderThatIsNotUtf8) {
  const std::string h = "{" + entry("a\xff", "U8", "[1]", 0, 1) + "}";
  const auto e = open_error(st_bytes(h, 1));
  EXPECT_CONTAINS(e.what(), "header is not valid UTF-8 (bad byte 0xFF at header offset 3)");
}

TEST(SafetensorsReader, RejectsOverlongUtf8AndSurrogates) {
  for (const std::string& bad : {std::string("\xc0\xaf"), std::string("\xed\xa0\x80"),
                                std::string("\xf4\x90\x80\x80"), std::string("\xe2\x82")}) {
    const std::string h = "{\"__metadata__\":{\"k\":\"" + bad + "\"}}";
    const auto e = open_error(st_bytes(h, 0));
    EXPECT_CONTAINS(e.what(), "not valid UTF-8");
  }
}

TEST(SafetensorsReader, RejectsNulPadding) {
  std::string h = "{}";
  h.append(6, '\0');
  const auto e = open_error(st_bytes(h, 0));
  EXPECT_CONTAINS(e.what(), "NUL byte at header offset 2 (padding must be spaces");
}

TEST(SafetensorsReader, RejectsAHeaderThatIsNotAnObject) {
  const auto e = open_error(st_bytes("[1,2]   ", 0));
  EXPECT_CONTAINS(e.what(), "header is not a JSON object (got array)");
}

TEST(SafetensorsReader, RejectsDeeplyNestedHeaders) {
  std::string h = "{\"a\":" + std::string(50, '[') + std::string(50, ']') + "}";
  const auto e = open_error(st_bytes(h, 0));
  EXPECT_CONTAINS(e.what(), "header nesting deeper than 8 levels");
}

// ---- rejected files: entries ----------------------------------------------------------------

TEST(SafetensorsReader, RejectsAnUnknownDtypeWithAHint) {
  auto e = open_error(st_bytes("{" + entry("w", "F8_E4M3FN", "[1]", 0, 1) + "}", 1));
  EXPECT_EQ(e.tensor(), "w");
  EXPECT_CONTAINS(e.what(), "tensor 'w': unknown dtype 'F8_E4M3FN'");
  EXPECT_CONTAINS(e.what(), "'F8_E4M3'");
  e = open_error(st_bytes("{" + entry("w", "bf16", "[1]", 0, 2) + "}", 2));
  EXPECT_CONTAINS(e.what(), "unknown dtype 'bf16' (dtype names are upper case: 'BF16')");
}

TEST(SafetensorsReader, ANulOrNewlineInATensorNameIsShownEscapedByTheCli) {
  // JSON "\u0000" is a legal string character: the name holds a real NUL byte.
  const auto bytes = st_bytes("{" + entry("a\\u0000b\\nc", "F8_E4M3FN", "[1]", 0, 1) + "}", 1);
  auto e = open_error(bytes);
  EXPECT_EQ(e.tensor(), std::string("a\0b\nc", 5));  // the library keeps the name as read
  TempDir dir;
  test::write_file(dir.path() / "bad.safetensors", bytes);
  const auto r = test::run_qtool({"inspect", dir.str("bad.safetensors")});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_CONTAINS(r.err, "tensor 'a\\x00b\\x0ac': unknown dtype 'F8_E4M3FN'");
}

TEST(SafetensorsReader, RejectsAnExtraField) {
  const std::string h =
      "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"offsets\":[0,1]}}";
  const auto e = open_error(st_bytes(h, 1));
  EXPECT_CONTAINS(e.what(), "tensor 'w': unexpected field 'offsets'");
}

TEST(SafetensorsReader, RejectsAMissingField) {
  const auto e = open_error(st_bytes("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1));
  EXPECT_CONTAINS(e.what(), "tensor 'w': missing field 'shape'");
}

TEST(SafetensorsReader, RejectsAnEntryThatIsNotAnObject) {
  const auto e = open_error(st_bytes("{\"w\":[1,2]}", 0));
  EXPECT_CONTAINS(e.what(), "tensor 'w': header entry is not an object (got array)");
}

TEST(SafetensorsReader, RejectsANegativeShape) {
  const auto e = open_error(st_bytes("{" + entry("w", "U8", "[-1,2]", 0, 0) + "}", 0));
  EXPECT_CONTAINS(e.what(), "tensor 'w': shape [-1,2] has a negative dimension");
}

TEST(SafetensorsReader, RejectsANonIntegerShape) {
  auto e = open_error(st_bytes("{" + entry("w", "U8", "[2.5]", 0, 2) + "}", 2));
  EXPECT_CONTAINS(e.what(), "shape [2.5] has an entry that is not a non-negative 64-bit integer");
  e = open_error(st_bytes("{" + entry("w", "U8", "[\"2\"]", 0, 2) + "}", 2));
  EXPECT_CONTAINS(e.what(), "not a non-negative 64-bit integer");
  e = open_error(st_bytes("{\"w\":{\"dtype\":\"U8\",\"shape\":3,\"data_offsets\":[0,3]}}", 3));
  EXPECT_CONTAINS(e.what(), "shape is not an array (got integer)");
}

TEST(SafetensorsReader, RejectsAShapeWhoseSizeOverflows) {
  auto e = open_error(st_bytes("{" + entry("w", "U8", "[4294967296,4294967296]", 0, 0) + "}", 0));
  EXPECT_CONTAINS(e.what(), "more elements than fit in 64 bits");
  e = open_error(st_bytes("{" + entry("w", "F64", "[4611686018427387904]", 0, 0) + "}", 0));
  EXPECT_CONTAINS(e.what(), "its bit size overflows");
}

TEST(SafetensorsReader, RejectsSubByteTensorsThatAreNotWholeBytes) {
  const auto e = open_error(st_bytes("{" + entry("w", "F4", "[3]", 0, 2) + "}", 2));
  EXPECT_CONTAINS(e.what(), "shape [3] of F4 is 3 x 4 bits, not a whole number of bytes");
}

TEST(SafetensorsReader, RejectsMalformedDataOffsets) {
  auto e = open_error(st_bytes("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1));
  EXPECT_CONTAINS(e.what(), "data_offsets must be [BEGIN, END] with two non-negative integers (got [0])");
  e = open_error(st_bytes("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1));
  EXPECT_CONTAINS(e.what(), "data_offsets must be [BEGIN, END]");
  e = open_error(st_bytes("{" + entry("w", "U8", "[0]", 4, 2) + "}", 4));
  EXPECT_CONTAINS(e.what(), "data_offsets [4,2] end before they begin");
}

TEST(SafetensorsReader, RejectsASizeMismatchBetweenShapeAndOffsets) {
  const auto e = open_error(st_bytes("{" + entry("x", "BF16", "[2,3]", 0, 10) + "}", 10));
  EXPECT_EQ(e.tensor(), "x");
  EXPECT_CONTAINS(e.what(), "tensor 'x': data_offsets [0,10] but shape [2,3] of BF16 needs 12 bytes");
}

TEST(SafetensorsReader, RejectsOverlappingOffsets) {
  const std::string h = "{" + entry("a", "U8", "[8]", 0, 8) + "," + entry("b", "U8", "[8]", 4, 12) + "}";
  const auto e = open_error(st_bytes(h, 12));
  EXPECT_CONTAINS(e.what(), "tensors 'a' and 'b' overlap (data_offsets [0,8] and [4,12])");
}

TEST(SafetensorsReader, RejectsAZeroSizeTensorInsideAnother) {
  const std::string h = "{" + entry("a", "U8", "[8]", 0, 8) + "," + entry("z", "U8", "[0]", 4, 4) + "}";
  const auto e = open_error(st_bytes(h, 8));
  EXPECT_CONTAINS(e.what(), "tensors 'a' and 'z' overlap");
}

TEST(SafetensorsReader, RejectsAGapBetweenTensors) {
  const std::string h = "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("b", "U8", "[4]", 8, 12) + "}";
  const auto e = open_error(st_bytes(h, 12));
  EXPECT_CONTAINS(e.what(), "gap before tensor 'b': data bytes [4,8) belong to no tensor");
}

TEST(SafetensorsReader, RejectsAFirstTensorThatDoesNotStartAtZero) {
  const auto e = open_error(st_bytes("{" + entry("a", "U8", "[4]", 4, 8) + "}", 8));
  EXPECT_CONTAINS(e.what(), "gap before tensor 'a'");
  EXPECT_CONTAINS(e.what(), "the first tensor must start at offset 0");
}

TEST(SafetensorsReader, RejectsOffsetsPastTheEndOfTheFile) {
  const auto e = open_error(st_bytes("{" + entry("x", "U8", "[1000]", 0, 1000) + "}", 12));
  EXPECT_EQ(e.tensor(), "x");
  EXPECT_CONTAINS(e.what(), "tensor 'x': data_offsets [0,1000] extend past the end of the file: "
                            "the data buffer has only 12 bytes");
}

TEST(SafetensorsReader, RejectsATruncatedFile) {
  auto b = st_bytes("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[3]", 8, 20) + "}", 20);
  b.pop_back();
  const auto e = open_error(b);
  EXPECT_EQ(e.tensor(), "b");
  EXPECT_CONTAINS(e.what(), "the data buffer has only 19 bytes");
  EXPECT_CONTAINS(e.what(), "truncated");
}

TEST(SafetensorsReader, RejectsTrailingBytes) {
  const auto e = open_error(st_bytes("{" + entry("a", "U8", "[4]", 0, 4) + "}", 7));
  EXPECT_CONTAINS(e.what(), "3 trailing bytes after the last tensor (data buffer is 7 bytes, tensors end at 4)");
  // Data bytes with an empty header are trailing bytes too.
  EXPECT_CONTAINS(open_error(st_bytes("{}", 1)).what(), "1 trailing bytes");
}

TEST(SafetensorsReader, RejectsDuplicateTensorNames) {
  const std::string h = "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("a", "U8", "[4]", 4, 8) + "}";
  const auto e = open_error(st_bytes(h, 8));
  EXPECT_CONTAINS(e.what(), "header has a duplicate tensor name 'a'");
}

TEST(SafetensorsReader, RejectsDuplicateFieldsAndMetadataKeys) {
  auto e = open_error(st_bytes(
      "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
  EXPECT_CONTAINS(e.what(), "entry for tensor 'w' has a duplicate field 'dtype'");
  e = open_error(st_bytes("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0));
  EXPECT_CONTAINS(e.what(), "duplicate __metadata__ key 'k'");
}

TEST(SafetensorsReader, RejectsNonStringMetadata) {
  auto e = open_error(st_bytes("{\"__metadata__\":{\"format\":\"pt\",\"k\":1}}", 0));
  EXPECT_CONTAINS(e.what(), "__metadata__ value for 'k' is not a string (got integer");
  e = open_error(st_bytes("{\"__metadata__\":[\"pt\"]}", 0));
  EXPECT_CONTAINS(e.what(), "__metadata__ is not an object (got array)");
}

TEST(SafetensorsReader, ReportsAGitLfsPointerAsMissingData) {
  const std::string lfs =
      "version https://git-lfs.github.com/spec/v1\n"
      "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
      "size 4976698672\n";
  const auto e = open_error(std::vector<uint8_t>(lfs.begin(), lfs.end()));
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  EXPECT_CONTAINS(e.what(), "is a Git LFS pointer file, not the tensor data: run `git lfs pull`");
}

TEST(SafetensorsReader, ReportsMissingFilesAndDirectories) {
  TempDir d;
  try {
    SafetensorsFile::open(d.str("nope.safetensors"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Missing);
    EXPECT_CONTAINS(e.what(), "nope.safetensors: no such file");
  }
  try {
    SafetensorsFile::open(d.str());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Missing);
    EXPECT_CONTAINS(e.what(), "is a directory");
  }
}

}  // namespace
}  // namespace qt
