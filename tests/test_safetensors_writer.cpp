// SafetensorsWriter, layout planning, sharding and index files. Expected header bytes come from
// the reference writer (safetensors 0.8.0 Python `save`, quoted where used) or from
// formats/FORMATS.md §1.5.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>
#include <stdexcept>
#include <thread>

#include "formats/atomic_file.h"
#include "formats/direct_writer.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::vector<uint8_t> pattern(size_t n, uint8_t salt) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 31 + salt);
  return v;
}

uint64_t size_of(const TensorSpec& s) {
  uint64_t n = 1;
  for (auto d : s.shape) n *= static_cast<uint64_t>(d);
  return *dtype_nbytes(s.dtype, n);
}

std::vector<std::string> dir_entries(const fs::path& p) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(p)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

// Runs `body` once per way the writer can reach the disk: through the page cache, with direct
// I/O (formats/direct_writer.h; for files of any size), and with direct I/O refused at the first
// write (the fallback). Every way must give the same files.
template <class F>
void for_each_write_path(F body) {
  using M = DirectWriter::Mode;
  for (M m : {M::Off, M::Always, M::RefuseFirstWrite}) {
    SCOPED_TRACE(m == M::Off ? "page cache" : m == M::Always ? "direct I/O" : "direct I/O refused");
    DirectWriter::mode_for_tests(m);
    body();
  }
  DirectWriter::mode_for_tests(M::Auto);
}

TEST(SafetensorsLayout, EmptyFileMatchesTheReferenceBytes) {
  // formats/FORMATS.md §1.5 / safetensors test_empty:
  // 08 00 00 00 00 00 00 00 7B 7D 20 20 20 20 20 20
  const auto L = plan_safetensors_layout("x", {}, {});
  const std::string expected("\x08\0\0\0\0\0\0\0{}      ", 16);
  EXPECT_EQ(L.header, expected);
  EXPECT_EQ(L.file_size, 16u);
}

TEST(SafetensorsLayout, SortsByDtypeDescendingThenNameAndEscapesLikeSerde) {
  // Python: safetensors.torch.save({...}, metadata={"format":"pt"}) (safetensors 0.8.0) with
  // b,a: bf16[3]; z: uint8[1]; c: f32[2]; e: f32[0]; "q\"\n\x01é/\x7f": int64[1] gave this header
  // (N = 376 = 0x178, two padding spaces).
  const std::string weird = "q\"\n\x01\xc3\xa9/\x7f";
  const std::vector<TensorSpec> specs = {{"b", DType::BF16, {3}}, {"a", DType::BF16, {3}},
                                         {"z", DType::U8, {1}},   {"c", DType::F32, {2}},
                                         {"e", DType::F32, {0}},  {weird, DType::I64, {1}}};
  const auto L = plan_safetensors_layout("x", specs, {{"format", "pt"}});
  const std::string json =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"q\\\"\\n\\u0001\xc3\xa9/\x7f\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,16]},"
      "\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},"
      "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[22,28]},"
      "\"z\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[28,29]}}  ";
  ASSERT_EQ(json.size(), 376u);
  EXPECT_EQ(L.header.substr(8), json);
  EXPECT_EQ(L.header.substr(0, 8), std::string("\x78\x01\0\0\0\0\0\0", 8));
  ASSERT_EQ(L.order.size(), 6u);
  EXPECT_EQ(L.order[0].name, weird);
  EXPECT_EQ(L.order[5].name, "z");
  EXPECT_EQ(L.slots[3].offset, 8 + 376 + 16u);
  EXPECT_EQ(L.file_size, 8 + 376 + 29u);
}

TEST(SafetensorsLayout, PadsTheHeaderToAMultipleOfEightAndAlignsEveryTensor) {
  // Sweep name lengths so the unpadded JSON hits every remainder mod 8.
  for (int len = 1; len <= 17; ++len) {
    const std::vector<TensorSpec> specs = {{std::string(static_cast<size_t>(len), 'n'), DType::F64, {3}},
                                           {"h", DType::F16, {5}}, {"b", DType::U8, {3}}, {"i", DType::I32, {7}}};
    const auto L = plan_safetensors_layout("x", specs, {{"format", "pt"}});
    const uint64_t n = L.header.size() - 8;
    EXPECT_EQ(n % 8, 0u) << len;
    const size_t close = L.header.rfind('}');
    EXPECT_LT(L.header.size() - close - 1, 8u);
    EXPECT_EQ(L.header.find_first_not_of(' ', close + 1), std::string::npos);
    for (size_t i = 0; i < L.order.size(); ++i)
      EXPECT_EQ(L.slots[i].offset % static_cast<uint64_t>(dtype_bits(L.order[i].dtype) / 8), 0u)
          << L.order[i].name;
  }
}

TEST(SafetensorsLayout, RejectsBadSpecs) {
  auto expect_bad = [](const std::vector<TensorSpec>& specs, const std::string& msg) {
    try {
      plan_safetensors_layout("out.safetensors", specs, {});
      ADD_FAILURE() << "accepted: " << msg;
    } catch (const InputError& e) {
      EXPECT_EQ(e.kind(), InputError::Kind::BadValue);
      EXPECT_CONTAINS(e.what(), msg);
      EXPECT_CONTAINS(e.what(), "out.safetensors");
    }
  };
  expect_bad({{"a", DType::U8, {1}}, {"a", DType::U8, {2}}}, "tensor 'a': tensor name given twice");
  expect_bad({{"a", DType::U8, {1}}, {"a", DType::F32, {2}}}, "tensor 'a': tensor name given twice");
  expect_bad({{"__metadata__", DType::U8, {1}}}, "reserved");
  expect_bad({{"a", DType::U8, {-2}}}, "shape [-2] has a negative dimension");
  expect_bad({{"a", DType::F4, {3}}}, "not a whole number of bytes");
  expect_bad({{"bad\xff", DType::U8, {1}}}, "not valid UTF-8");
}

TEST(SafetensorsWriter, WritesTensorsInAnyOrderAndTheReaderGetsThemBack) {
  for_each_write_path([&] {
    TempDir d;
    const std::string path = d.str("m.safetensors");
    const std::vector<TensorSpec> specs = {{"w", DType::BF16, {4, 3}}, {"s", DType::F32, {4, 1}},
                                           {"q", DType::I8, {5}},      {"z", DType::F32, {0, 2}},
                                           {"scalar", DType::I64, {}}};
    {
      SafetensorsWriter w(path, specs, {{"quant", "fp8"}});
      for (auto it = specs.rbegin(); it != specs.rend(); ++it)
        w.write(it->name, pattern(size_of(*it), static_cast<uint8_t>(it->name[0])));
      EXPECT_FALSE(fs::exists(path));
      EXPECT_TRUE(fs::exists(w.temp_path()));
      w.commit();
      EXPECT_EQ(fs::file_size(path), w.file_size());
      EXPECT_EQ(w.layout().at("s").size, 16u);
      EXPECT_EQ(test::read_file(path).size(), w.file_size());
      const auto bytes = test::read_file(path);
      EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + static_cast<long>(w.header_bytes().size())), w.header_bytes());
    }
    EXPECT_EQ(dir_entries(d.path()), std::vector<std::string>{"m.safetensors"});
    const auto f = SafetensorsFile::open(path);
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_EQ(f.metadata().at("quant"), "fp8");
    ASSERT_EQ(f.tensors().size(), specs.size());
    for (const auto& s : specs) {
      const TensorView* t = f.find(s.name);
      ASSERT_NE(t, nullptr) << s.name;
      EXPECT_EQ(t->dtype, s.dtype);
      EXPECT_EQ(t->shape, s.shape);
      const auto want = pattern(size_of(s), static_cast<uint8_t>(s.name[0]));
      EXPECT_TRUE(std::equal(t->bytes.begin(), t->bytes.end(), want.begin(), want.end())) << s.name;
    }
  });
}

TEST(SafetensorsWriter, KeepsACallersFormatMetadata) {
  TempDir d;
  SafetensorsWriter w(d.str("a.safetensors"), {}, {{"format", "mlx"}});
  EXPECT_EQ(w.metadata().at("format"), "mlx");
  w.commit();
  EXPECT_EQ(SafetensorsFile::open(d.str("a.safetensors")).metadata().at("format"), "mlx");
}

TEST(SafetensorsWriter, AcceptsChunksInAnyOrderOfAnySize) {
  for_each_write_path([&] {
    for (size_t chunk : {1u, 7u, 64u, 100u, 1000u}) {
      TempDir d;
      const TensorSpec spec{"t", DType::U8, {1000}};
      const auto data = pattern(1000, 5);
      std::vector<size_t> starts;
      for (size_t s = 0; s < 1000; s += chunk) starts.push_back(s);
      std::shuffle(starts.begin(), starts.end(), std::mt19937(static_cast<unsigned>(chunk)));
      SafetensorsWriter w(d.str("c.safetensors"), {spec, {"u", DType::U16, {3}}});
      for (size_t s : starts) {
        const size_t len = std::min(chunk, 1000 - s);
        w.write_chunk("t", s, std::span<const uint8_t>(data.data() + s, len));
      }
      w.write("u", pattern(6, 1));
      w.commit();
      const auto f = SafetensorsFile::open(d.str("c.safetensors"));
      EXPECT_TRUE(std::equal(f.find("t")->bytes.begin(), f.find("t")->bytes.end(), data.begin(), data.end()))
          << "chunk " << chunk;
    }
  });
}

TEST(SafetensorsWriter, AcceptsConcurrentWritesFromSeveralThreads) {
  for_each_write_path([&] {
    TempDir d;
    std::vector<TensorSpec> specs;
    for (int i = 0; i < 16; ++i) specs.push_back({"t" + std::to_string(i), DType::F32, {257}});
    SafetensorsWriter w(d.str("p.safetensors"), specs);
    std::vector<std::thread> threads;
    for (int k = 0; k < 4; ++k)
      threads.emplace_back([&, k] {
        for (int i = k; i < 16; i += 4) {
          const auto data = pattern(257 * 4, static_cast<uint8_t>(i));
          for (size_t off = 0; off < data.size(); off += 100)
            w.write_chunk(specs[static_cast<size_t>(i)].name, off,
                          std::span<const uint8_t>(data.data() + off, std::min<size_t>(100, data.size() - off)));
        }
      });
    for (auto& t : threads) t.join();
    w.commit();
    const auto f = SafetensorsFile::open(d.str("p.safetensors"));
    for (int i = 0; i < 16; ++i) {
      const auto want = pattern(257 * 4, static_cast<uint8_t>(i));
      const auto& got = f.find("t" + std::to_string(i))->bytes;
      EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin(), want.end()));
    }
  });
}

TEST(SafetensorsWriter, CommitRefusesMissingBytesAndLeavesNoFile) {
  for_each_write_path([&] {
    TempDir d;
    {
      SafetensorsWriter w(d.str("m.safetensors"), {{"a", DType::U8, {100}}, {"b", DType::U8, {4}}});
      w.write("b", pattern(4, 0));
      w.write_chunk("a", 0, pattern(60, 0));
      w.write_chunk("a", 67, pattern(33, 0));
      try {
        w.commit();
        FAIL() << "commit accepted missing bytes";
      } catch (const std::logic_error& e) {
        EXPECT_CONTAINS(e.what(), "tensor 'a': only 93 of 100 bytes were written before commit");
      }
    }
    EXPECT_TRUE(dir_entries(d.path()).empty());
  });
}

TEST(SafetensorsWriter, RefusesBytesWrittenTwiceUnknownTensorsAndOutOfRangeChunks) {
  TempDir d;
  SafetensorsWriter w(d.str("m.safetensors"), {{"a", DType::U8, {10}}});
  w.write_chunk("a", 2, pattern(3, 0));
  EXPECT_THROW(w.write_chunk("a", 4, pattern(2, 0)), std::logic_error);  // overlaps [2,5)
  EXPECT_THROW(w.write_chunk("a", 0, pattern(3, 0)), std::logic_error);  // overlaps at 2
  EXPECT_THROW(w.write_chunk("a", 8, pattern(3, 0)), std::logic_error);  // past the end
  EXPECT_THROW(w.write("a", pattern(9, 0)), std::logic_error);           // wrong size
  EXPECT_THROW(w.write("nope", pattern(1, 0)), std::logic_error);
  try {
    w.write_chunk("a", 4, pattern(2, 0));
  } catch (const std::logic_error& e) {
    EXPECT_CONTAINS(e.what(), "tensor 'a': bytes [4,5) written twice");
  }
  w.write_chunk("a", 0, pattern(2, 0));  // adjacent ranges are fine
  w.write_chunk("a", 5, pattern(5, 0));
  w.commit();
  EXPECT_THROW(w.commit(), std::logic_error);
}

// Writes the same three tensors (one of 3 MiB + 5 bytes, one of 7 bytes, one empty) once with
// write() and once with write_copy() from a source file holding their bytes at odd offsets, under
// the given kernel-copy mode and source descriptor; returns the two files' bytes and the bytes
// the kernel copied.
struct CopyRun {
  std::vector<uint8_t> by_write, by_copy;
  uint64_t kernel_bytes = 0;
};
CopyRun write_both_ways(const TempDir& d, SafetensorsWriter::KernelCopy mode, bool bad_fd) {
  const std::vector<TensorSpec> specs = {{"big", DType::U8, {(3 << 20) + 5}}, {"small", DType::BF16, {7, 1}},
                                         {"none", DType::F32, {0}}};
  std::vector<uint8_t> src(3);  // the tensors at offsets 3, 3 + big, ...
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> parts;
  for (const auto& sp : specs) {
    auto b = pattern(size_of(sp), static_cast<uint8_t>(sp.name[0]));
    parts.push_back({src.size(), b});
    src.insert(src.end(), b.begin(), b.end());
  }
  test::write_file(d.path() / "src.bin", src);
  CopyRun r;
  {
    SafetensorsWriter w(d.str("a.safetensors"), specs);
    for (size_t i = 0; i < specs.size(); ++i) w.write(specs[i].name, parts[i].second);
    w.commit();
  }
  SafetensorsWriter::kernel_copy_for_tests(mode);
  {
    const int fd = bad_fd ? -1 : ::open(d.str("src.bin").c_str(), O_RDONLY | O_CLOEXEC);
    SafetensorsWriter w(d.str("b.safetensors"), specs);
    for (size_t i = 0; i < specs.size(); ++i)
      r.kernel_bytes += w.write_copy(specs[i].name, parts[i].second, fd, parts[i].first);
    w.commit();
    if (fd >= 0) ::close(fd);
  }
  SafetensorsWriter::kernel_copy_for_tests(SafetensorsWriter::KernelCopy::Auto);
  r.by_write = test::read_file(d.str("a.safetensors"));
  r.by_copy = test::read_file(d.str("b.safetensors"));
  return r;
}

TEST(SafetensorsWriter, WriteCopyGivesTheSameFileAsWriteWhetherTheKernelCopiesAllSomeOrNone) {
  for_each_write_path([&] {
    using K = SafetensorsWriter::KernelCopy;
    {
      TempDir d;
      const CopyRun r = write_both_ways(d, K::Auto, false);
      EXPECT_EQ(r.by_copy, r.by_write);
      // On Linux >= 5.3 on one file system the kernel copies everything; a kernel that cannot still
      // gives the same file through the fallback (0 bytes copied), which this line does not forbid.
      EXPECT_TRUE(r.kernel_bytes == (3u << 20) + 5 + 14 || r.kernel_bytes == 0) << r.kernel_bytes;
    }
    {
      TempDir d;
      const CopyRun r = write_both_ways(d, K::Off, false);
      EXPECT_EQ(r.by_copy, r.by_write);
      EXPECT_EQ(r.kernel_bytes, 0u);
    }
    {
      TempDir d;  // the kernel copies the first 4096 bytes of "big" and all 14 of "small", then "fails"
      const CopyRun r = write_both_ways(d, K::FailAfterFirstChunk, false);
      EXPECT_EQ(r.by_copy, r.by_write);
      EXPECT_TRUE(r.kernel_bytes == 4096 + 14 || r.kernel_bytes == 0) << r.kernel_bytes;
    }
    {
      TempDir d;  // a descriptor the kernel refuses (EBADF): everything through the fallback
      const CopyRun r = write_both_ways(d, K::Auto, true);
      EXPECT_EQ(r.by_copy, r.by_write);
      EXPECT_EQ(r.kernel_bytes, 0u);
    }
  });
}

TEST(SafetensorsWriter, WriteCopyRefusesAWrongSizeAndBytesWrittenTwice) {
  TempDir d;
  test::write_file(d.path() / "src.bin", pattern(16, 1));
  const int fd = ::open(d.str("src.bin").c_str(), O_RDONLY | O_CLOEXEC);
  SafetensorsWriter w(d.str("m.safetensors"), {{"a", DType::U8, {10}}});
  try {
    w.write_copy("a", pattern(9, 1), fd, 0);
    ADD_FAILURE() << "no error";
  } catch (const std::logic_error& e) {
    EXPECT_CONTAINS(e.what(), "tensor 'a': write of 9 bytes, but the tensor has 10 bytes");
  }
  w.write_chunk("a", 0, pattern(1, 1));
  try {
    w.write_copy("a", pattern(10, 1), fd, 0);
    ADD_FAILURE() << "no error";
  } catch (const std::logic_error& e) {
    EXPECT_CONTAINS(e.what(), "tensor 'a': bytes [0,1) written twice");
  }
  ::close(fd);
}

TEST(SafetensorsWriter, RemovesItsTemporaryFileWhenDestroyedWithoutCommit) {
  for_each_write_path([&] {
    TempDir d;
    test::write_text(d.path() / "m.safetensors", "old");
    {
      SafetensorsWriter w(d.str("m.safetensors"), {{"a", DType::U8, {10}}});
      w.write("a", pattern(10, 0));
      EXPECT_EQ(fs::path(w.temp_path()).filename().string(),
                ".m.safetensors.tmp-" + std::to_string(::getpid()));
      EXPECT_EQ(fs::path(w.temp_path()).parent_path(), d.path());
    }
    EXPECT_EQ(dir_entries(d.path()), std::vector<std::string>{"m.safetensors"});
    EXPECT_EQ(test::read_text(d.path() / "m.safetensors"), "old");  // target untouched
  });
}

TEST(SafetensorsWriter, CommitReplacesAnExistingFile) {
  TempDir d;
  test::write_text(d.path() / "m.safetensors", "old");
  SafetensorsWriter w(d.str("m.safetensors"), {{"a", DType::U8, {2}}});
  w.write("a", pattern(2, 0));
  w.commit();
  EXPECT_EQ(SafetensorsFile::open(d.str("m.safetensors")).tensors().size(), 1u);
}

TEST(SafetensorsWriter, ReportsOsErrorsAsIoErrorsNamingTheFile) {
  TempDir d;
  try {
    SafetensorsWriter w(d.str("no/such/dir/m.safetensors"), {});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Io);
    EXPECT_CONTAINS(e.what(), "no/such/dir/m.safetensors");
    EXPECT_CONTAINS(e.what(), "No such file or directory");
  }
}

TEST(SafetensorsWriter, ReportsAFullDiskBeforeAnyTensorIsWritten) {
  // A file-size limit stands in for a full disk: the reservation at construction fails (EFBIG).
  TempDir d;
  bool threw = false;
  {
    const test::FileSizeLimit limit(1 << 20);
    try {
      SafetensorsWriter w(d.str("big.safetensors"), {{"a", DType::U8, {4 << 20}}});
    } catch (const InputError& e) {
      threw = true;
      EXPECT_EQ(e.kind(), InputError::Kind::Io);
      EXPECT_CONTAINS(e.what(), "big.safetensors");
    }
  }
  EXPECT_TRUE(threw);
  EXPECT_TRUE(dir_entries(d.path()).empty());
}

// ---- sharding and index -----------------------------------------------------------------------

TEST(ShardPlanning, NamesShardsLikeTransformers) {
  EXPECT_EQ(shard_file_name(0, 1), "model.safetensors");
  EXPECT_EQ(shard_file_name(0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(shard_file_name(2, 3), "model-00003-of-00003.safetensors");
  EXPECT_EQ(shard_file_name(99, 100), "model-00100-of-00100.safetensors");
}

TEST(ShardPlanning, FillsShardsInInputOrderUpToTheCap) {
  // Sizes 40, 40, 30, 100 (oversized), 10, 60 with a cap of 80.
  const std::vector<TensorSpec> specs = {{"a", DType::U8, {40}}, {"b", DType::U8, {40}}, {"c", DType::U8, {30}},
                                         {"big", DType::U8, {100}}, {"d", DType::U8, {10}}, {"e", DType::F32, {15}}};
  const auto shards = plan_shards(specs, 80);
  ASSERT_EQ(shards.size(), 4u);
  auto names = [](const ShardPlan& s) {
    std::string r;
    for (const auto& t : s.tensors) r += t.name + " ";
    return r;
  };
  EXPECT_EQ(names(shards[0]), "a b ");
  EXPECT_EQ(names(shards[1]), "c ");
  EXPECT_EQ(names(shards[2]), "big ");
  EXPECT_EQ(names(shards[3]), "d e ");
  EXPECT_EQ(shards[0].tensor_bytes, 80u);
  EXPECT_EQ(shards[3].tensor_bytes, 70u);
  EXPECT_EQ(shards[0].file_name, "model-00001-of-00004.safetensors");
  EXPECT_EQ(shards[3].file_name, "model-00004-of-00004.safetensors");
}

TEST(ShardPlanning, UsesOneUnshardedFileWhenEverythingFits) {
  auto shards = plan_shards({{"a", DType::U8, {40}}, {"b", DType::U8, {40}}}, 5'000'000'000ull);
  ASSERT_EQ(shards.size(), 1u);
  EXPECT_EQ(shards[0].file_name, "model.safetensors");
  shards = plan_shards({}, 10);
  ASSERT_EQ(shards.size(), 1u);
  EXPECT_TRUE(shards[0].tensors.empty());
  // An oversized first and last tensor: no empty shard at either end.
  shards = plan_shards({{"x", DType::U8, {20}}}, 10);
  ASSERT_EQ(shards.size(), 1u);
}

TEST(IndexJson, IsWrittenLikeTransformersWithSortedKeysAndANewline) {
  TempDir d;
  write_index_json(d.str(), 123,
                   {{"lm_head.weight", "model-00002-of-00002.safetensors"},
                    {"a.weight", "model-00001-of-00002.safetensors"}});
  // json.dumps({"metadata": {"total_size": 123}, "weight_map": {...}}, indent=2, sort_keys=True) + "\n"
  EXPECT_EQ(test::read_text(d.path() / "model.safetensors.index.json"),
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 123\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"a.weight\": \"model-00001-of-00002.safetensors\",\n"
            "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\"\n"
            "  }\n"
            "}\n");
  EXPECT_EQ(dir_entries(d.path()), std::vector<std::string>{"model.safetensors.index.json"});
}

TEST(AtomicFile, ReplacesTheTargetAndLeavesNoTemporaryFile) {
  TempDir d;
  write_file_atomic(d.str("c.json"), "one");
  write_file_atomic(d.str("c.json"), "two");
  EXPECT_EQ(test::read_text(d.path() / "c.json"), "two");
  EXPECT_EQ(dir_entries(d.path()), std::vector<std::string>{"c.json"});
  try {
    write_file_atomic(d.str("missing/c.json"), "x");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Io);
    EXPECT_CONTAINS(e.what(), "missing/c.json");
  }
}

}  // namespace
}  // namespace qt
