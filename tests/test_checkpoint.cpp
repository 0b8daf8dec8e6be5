// Checkpoint: opening a folder, a file or an index; cross-checks between index and shards.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "formats/checkpoint.h"
#include "formats/safetensors_writer.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Writes a shard with U8 tensors of the given names (tensor i has i+1 bytes, all = i+1).
void write_shard(const fs::path& path, const std::vector<std::string>& names) {
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < names.size(); ++i) specs.push_back({names[i], DType::U8, {static_cast<int64_t>(i + 1)}});
  SafetensorsWriter w(path.string(), specs);
  for (size_t i = 0; i < names.size(); ++i)
    w.write(names[i], std::vector<uint8_t>(i + 1, static_cast<uint8_t>(i + 1)));
  w.commit();
}

InputError open_error(const std::string& path) {
  try {
    Checkpoint::open(path);
  } catch (const InputError& e) {
    return e;
  }
  ADD_FAILURE() << "Checkpoint::open accepted " << path;
  return InputError(InputError::Kind::BadFile, "", "", "");
}

// Two shards + index: a,b in shard 1; c in shard 2.
void write_sharded(const TempDir& d) {
  write_shard(d.path() / "model-00001-of-00002.safetensors", {"b", "a"});
  write_shard(d.path() / "model-00002-of-00002.safetensors", {"c"});
  write_index_json(d.str(), 4,
                   {{"a", "model-00001-of-00002.safetensors"},
                    {"b", "model-00001-of-00002.safetensors"},
                    {"c", "model-00002-of-00002.safetensors"}});
}

TEST(Checkpoint, OpensASingleSafetensorsFile) {
  TempDir d;
  write_shard(d.path() / "x.safetensors", {"w", "v"});
  const auto c = Checkpoint::open(d.str("x.safetensors"));
  EXPECT_EQ(c.num_shards(), 1u);
  EXPECT_EQ(c.index_path(), "");
  EXPECT_EQ(c.dir(), d.str());
  EXPECT_EQ(c.tensors().size(), 2u);
  EXPECT_EQ(c.total_bytes(), 3u);
  EXPECT_EQ(c.metadata(0).at("format"), "pt");
}

TEST(Checkpoint, PrefersModelSafetensorsInAFolderWithoutIndex) {
  TempDir d;
  write_shard(d.path() / "model.safetensors", {"w"});
  write_shard(d.path() / "stray.safetensors", {"w"});  // would clash if it were read
  const auto c = Checkpoint::open(d.str());
  EXPECT_EQ(c.shard_paths(), std::vector<std::string>{d.str("model.safetensors")});
}

TEST(Checkpoint, ReadsEveryVisibleSafetensorsFileInNameOrderWhenThereIsNothingElse) {
  TempDir d;
  write_shard(d.path() / "b.safetensors", {"y"});
  write_shard(d.path() / "a.safetensors", {"x"});
  write_shard(d.path() / ".hidden.safetensors", {"x"});
  test::write_text(d.path() / "notes.txt", "hi");
  const auto c = Checkpoint::open(d.str());
  EXPECT_EQ(c.shard_paths(), (std::vector<std::string>{d.str("a.safetensors"), d.str("b.safetensors")}));
  ASSERT_EQ(c.tensors().size(), 2u);
  EXPECT_EQ(c.tensors()[0].name, "x");
  EXPECT_EQ(c.tensors()[1].name, "y");
}

TEST(Checkpoint, OpensAShardedFolderAndItsIndexTheSameWay) {
  TempDir d;
  write_sharded(d);
  for (const std::string& p : {d.str(), d.str("model.safetensors.index.json")}) {
    const auto c = Checkpoint::open(p);
    EXPECT_EQ(c.index_path(), d.str("model.safetensors.index.json"));
    EXPECT_EQ(c.num_shards(), 2u);
    EXPECT_EQ(c.shard_paths()[0], d.str("model-00001-of-00002.safetensors"));
    // Shard order, then offset order within a shard (the writer puts equal dtypes in name
    // order: a at offset 0, then b, although b was listed first).
    ASSERT_EQ(c.tensors().size(), 3u);
    EXPECT_EQ(c.tensors()[0].name, "a");
    EXPECT_EQ(c.tensors()[1].name, "b");
    EXPECT_EQ(c.tensors()[2].name, "c");
    EXPECT_EQ(*c.shard_of("c"), 1u);
    EXPECT_FALSE(c.shard_of("zz").has_value());
    EXPECT_EQ(c.find("zz"), nullptr);
    EXPECT_EQ(c.find("c")->bytes[0], 1);
    EXPECT_EQ(c.total_bytes(), 4u);
    EXPECT_EQ(c.index_total_size(), 4u);
  }
}

TEST(Checkpoint, ReportsAMissingShardNamingItAndTheIndex) {
  TempDir d;
  write_sharded(d);
  fs::remove(d.path() / "model-00002-of-00002.safetensors");
  const auto e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  EXPECT_CONTAINS(e.what(), "model-00002-of-00002.safetensors: shard listed in");
  EXPECT_CONTAINS(e.what(), "model.safetensors.index.json is missing");
}

TEST(Checkpoint, ReportsATensorListedInTheIndexButAbsent) {
  TempDir d;
  write_sharded(d);
  write_index_json(d.str(), 4,
                   {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00001-of-00002.safetensors"},
                    {"c", "model-00002-of-00002.safetensors"}, {"ghost", "model-00002-of-00002.safetensors"}});
  const auto e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  EXPECT_EQ(e.tensor(), "ghost");
  EXPECT_CONTAINS(e.what(), "model-00002-of-00002.safetensors: tensor 'ghost': listed in");
}

TEST(Checkpoint, ReportsATensorListedUnderTheWrongShard) {
  TempDir d;
  write_sharded(d);
  write_index_json(d.str(), 4,
                   {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"},
                    {"c", "model-00002-of-00002.safetensors"}});
  const auto e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
  EXPECT_CONTAINS(e.what(), "tensor 'b': index says it is in model-00002-of-00002.safetensors but it is stored in");
  EXPECT_CONTAINS(e.what(), "model-00001-of-00002.safetensors");
}

TEST(Checkpoint, ReportsATensorTheIndexDoesNotList) {
  TempDir d;
  write_sharded(d);
  write_index_json(d.str(), 4, {{"a", "model-00001-of-00002.safetensors"}, {"c", "model-00002-of-00002.safetensors"}});
  const auto e = open_error(d.str());
  EXPECT_EQ(e.tensor(), "b");
  EXPECT_CONTAINS(e.what(), "is stored in this shard but");
  EXPECT_CONTAINS(e.what(), "does not list it");
}

TEST(Checkpoint, ReportsATensorStoredInTwoShards) {
  TempDir d;
  write_shard(d.path() / "model-00001-of-00002.safetensors", {"a"});
  write_shard(d.path() / "model-00002-of-00002.safetensors", {"a"});
  write_index_json(d.str(), 2, {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}});
  auto e = open_error(d.str());
  EXPECT_CONTAINS(e.what(), "tensor 'a': is also stored in");
  // Without an index too.
  fs::remove(d.path() / "model.safetensors.index.json");
  e = open_error(d.str());
  EXPECT_CONTAINS(e.what(), "tensor 'a': is also stored in");
}

TEST(Checkpoint, ReportsAGitLfsPointerShard) {
  TempDir d;
  write_sharded(d);
  test::write_text(d.path() / "model-00002-of-00002.safetensors",
                   "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 10\n");
  const auto e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  EXPECT_CONTAINS(e.what(), "model-00002-of-00002.safetensors: is a Git LFS pointer file");
}

TEST(Checkpoint, RejectsMalformedIndexFiles) {
  TempDir d;
  write_sharded(d);
  const auto idx = d.path() / "model.safetensors.index.json";
  auto check = [&](const std::string& text, const std::string& msg) {
    test::write_text(idx, text);
    const auto e = open_error(d.str());
    EXPECT_EQ(e.kind(), InputError::Kind::BadFile) << text;
    EXPECT_CONTAINS(e.what(), msg);
    EXPECT_CONTAINS(e.what(), "model.safetensors.index.json");
  };
  check("{\"weight_map\": {\"a\": \"x\",}", "index is not valid JSON: parse error at line 1, column");
  check("[]", "index is not a JSON object (got array)");
  check("{\"metadata\": {}}", "index has no \"weight_map\"");
  check("{\"weight_map\": []}", "\"weight_map\" is not an object (got array)");
  check("{\"weight_map\": {}}", "\"weight_map\" is empty");
  check("{\"weight_map\": {\"a\": 3}}", "tensor 'a': weight_map value is not a file name string");
  check("{\"weight_map\": {\"a\": \"../model-00001-of-00002.safetensors\"}}", "not a relative path inside");
  check("{\"weight_map\": {\"a\": \"/etc/passwd\"}}", "not a relative path inside");
  check("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", \"a\": \"model-00001-of-00002.safetensors\"}}",
        "lists tensor 'a' twice in weight_map");
  check("{\"metadata\": {\"total_size\": \"big\"}, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\"}}",
        "\"metadata.total_size\" is not a non-negative number");
}

TEST(Checkpoint, ReportsMissingPathsAndEmptyFolders) {
  TempDir d;
  auto e = open_error(d.str("nope"));
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  EXPECT_CONTAINS(e.what(), "no model.safetensors.index.json and no *.safetensors file");
}

TEST(Checkpoint, OpensAHundredShardsWellUnderASecond) {
  TempDir d;
  std::map<std::string, std::string> wm;
  for (int s = 0; s < 100; ++s) {
    const std::string file = shard_file_name(static_cast<size_t>(s), 100);
    std::vector<std::string> names;
    for (int t = 0; t < 20; ++t) names.push_back("model.layers." + std::to_string(s) + ".t" + std::to_string(t));
    write_shard(d.path() / file, names);
    for (const auto& n : names) wm[n] = file;
  }
  write_index_json(d.str(), 0, wm);
  const auto t0 = std::chrono::steady_clock::now();
  const auto c = Checkpoint::open(d.str());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(c.tensors().size(), 2000u);
  // Headers only: ~0.05 s optimised; the bound leaves room for sanitizer builds and busy CI.
  EXPECT_LT(s, 1.0);
}

}  // namespace
}  // namespace qt
