// Tests for formats/input_file.h through every reader of outside input: a FIFO, a device or a
// symlink loop in place of a shard, an index, config.json, tokenizer.json, a dataset or a
// statistics file is refused at once with an error naming the file (never a hang in open(2),
// never an internal error). Both the library calls and the CLI (exit codes) are checked.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "calib/dataset.h"
#include "calib/stats_file.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/input_file.h"
#include "formats/mmap_file.h"
#include "formats/model_folder.h"
#include "formats/run_cleanup.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;
using Kind = InputError::Kind;

using test::expect_exact;

std::string fifo_text(const std::string& p) {
  return p + ": is a FIFO (named pipe), not a regular file; qtool reads only regular files";
}
std::string loop_text(const std::string& p) {
  return p + ": cannot open: a symlink loop (too many levels of symbolic links)";
}

void make_fifo(const fs::path& p) {
  fs::remove(p);
  ASSERT_EQ(::mkfifo(p.c_str(), 0644), 0);
}
void make_loop(const fs::path& p) {
  fs::remove(p);
  fs::create_symlink(p.filename(), p);  // points at itself
}

TEST(InputFile, TheHelperRefusesEveryNonRegularFileAndNamesIt) {
  test::TempDir d;
  make_fifo(d.path() / "fifo");
  expect_exact([&] { open_input_file(d.str("fifo")); }, Kind::Io, fifo_text(d.str("fifo")));
  expect_exact([&] { read_input_file("/dev/zero"); }, Kind::Io,
               "/dev/zero: is a character device, not a regular file; qtool reads only regular files");
  expect_exact([&] { check_input_file(d.str()); }, Kind::Missing, d.str() + ": is a directory, not a file");
  expect_exact([&] { check_input_file(d.str("none")); }, Kind::Missing, d.str("none") + ": no such file");
  make_loop(d.path() / "loop");
  expect_exact([&] { check_input_file(d.str("loop")); }, Kind::Missing, loop_text(d.str("loop")));
  test::write_text(d.path() / "ok", "contents");
  EXPECT_EQ(read_input_file(d.str("ok")), "contents");
}

TEST(InputFile, AFifoInPlaceOfAModelFileIsRefusedWithoutBlocking) {
  test::TempDir d;
  TinyModelOptions o;
  o.num_shards = 2;
  write_tiny_model(d.str("m"), o);
  for (const char* name : {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"}) {
    test::TempDir e;
    fs::copy(d.path() / "m", e.path() / "m", fs::copy_options::recursive);
    const fs::path p = e.path() / "m" / name;
    make_fifo(p);
    expect_exact([&] { ModelFolder::open(e.str("m")); }, Kind::Io, fifo_text(p.string()));
    auto r = test::run_qtool({"quantize", e.str("m"), "-o", e.str("out"), "--scheme", "fp8-dynamic"});
    EXPECT_EQ(r.exit_code, 7) << name;
    EXPECT_EQ(r.err, "qtool: error: " + fifo_text(p.string()) + "\n");
    EXPECT_FALSE(fs::exists(e.path() / "out"));
  }
  make_fifo(d.path() / "m" / "tokenizer.json");
  expect_exact([&] { calib::Tokenizer::from_dir(d.path() / "m"); }, Kind::Io, fifo_text(d.str("m/tokenizer.json")));
}

TEST(InputFile, ASymlinkLoopInPlaceOfAShardIsAMissingFileNamingIt) {
  test::TempDir d;
  TinyModelOptions o;
  o.num_shards = 2;
  write_tiny_model(d.str("m"), o);
  const fs::path shard = d.path() / "m" / "model-00002-of-00002.safetensors";
  make_loop(shard);
  expect_exact([&] { ModelFolder::open(d.str("m")); }, Kind::Missing, loop_text(shard.string()));
  auto r = test::run_qtool({"quantize", d.str("m"), "-o", d.str("out"), "--scheme", "fp8-dynamic"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.err, "qtool: error: " + loop_text(shard.string()) + "\n");
  write_tiny_model(d.str("single"), {});
  make_loop(d.path() / "single" / "model.safetensors");
  r = test::run_qtool({"inspect", d.str("single")});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.err, "qtool: error: " + loop_text(d.str("single/model.safetensors")) + "\n");
}

TEST(InputFile, AFifoOrDeviceAsDatasetOrStatisticsFileIsRefused) {
  test::TempDir d;
  write_tiny_model(d.str("m"), {});
  make_fifo(d.path() / "data.txt");
  expect_exact([&] { calib::load_calibration_text(d.str("data.txt")); }, Kind::Io, fifo_text(d.str("data.txt")));
  auto r = test::run_qtool({"quantize", d.str("m"), "-o", d.str("out"), "--scheme", "fp8-static", "--dataset", "/dev/zero"});
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_EQ(r.err, "qtool: error: /dev/zero: is a character device, not a regular file; qtool reads only regular files\n");
  make_fifo(d.path() / "stats.zst");
  r = test::run_qtool({"quantize", d.str("m"), "-o", d.str("out"), "--scheme", "fp8-static", "--stats", d.str("stats.zst")});
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_EQ(r.err, "qtool: error: " + fifo_text(d.str("stats.zst")) + "\n");
  EXPECT_FALSE(fs::exists(d.path() / "out"));
}

// ---- a mapped input truncated underneath (SIGBUS) ----

// In a child process (a death test): maps a 1 MiB file, truncates it as another process would,
// then reads a page that no longer exists.
void map_truncate_and_read(const std::string& path, bool with_handling_thread, const std::string& partial) {
  if (with_handling_thread) cleanup::install_interrupt_handling();
  cleanup::OnInterrupt created;
  if (!partial.empty()) {
    fs::create_directories(partial);
    test::write_text(fs::path(partial) / "model.safetensors", "half");
    created = cleanup::OnInterrupt(partial, "this run's unfinished output");
  }
  MappedFile m(path);
  ::truncate(path.c_str(), 4096);
  unsigned sum = 0;
  for (uint64_t i = 0; i < m.size(); i += 4096) sum += static_cast<const volatile uint8_t*>(m.data())[i];
  std::fprintf(stderr, "read past the end without a fault (%u)\n", sum);
  std::exit(0);
}

TEST(MappedFile, ReopensTheSameFileButNotOneReplacedOrTruncatedSinceItWasMapped) {
  test::TempDir d;
  const std::string path = d.str("model.safetensors");
  test::write_file(path, std::vector<uint8_t>(10000, 7));
  {
    MappedFile m(path);
    const int fd = m.reopen_same_file();
    ASSERT_GE(fd, 0);
    uint8_t b = 0;
    EXPECT_EQ(::pread(fd, &b, 1, 9999), 1);
    EXPECT_EQ(b, 7);
    ::close(fd);
    // Replaced by another file of the same size under the same name: not the mapped file.
    test::write_file(d.str("other"), std::vector<uint8_t>(10000, 9));
    fs::rename(d.str("other"), path);
    EXPECT_EQ(m.reopen_same_file(), -1);
  }
  {
    MappedFile m(path);
    ::truncate(path.c_str(), 5000);  // the same file, another size
    EXPECT_EQ(m.reopen_same_file(), -1);
  }
  {
    MappedFile m(path);
    fs::remove(path);  // gone
    EXPECT_EQ(m.reopen_same_file(), -1);
  }
}

TEST(InputFileDeathTest, AMappedInputTruncatedWhileReadIsACleanIoErrorNamingTheFile) {
  test::TempDir d;
  const std::string path = d.str("model.safetensors");
  test::write_file(path, std::vector<uint8_t>(1 << 20, 7));
  const std::string msg = "qtool: error: " + path +
                          ": cannot read: the file was truncated while qtool read it \\(changed by another process; "
                          "qtool assumes its inputs do not change during a run\\)";
  EXPECT_EXIT(map_truncate_and_read(path, false, ""), ::testing::ExitedWithCode(7), msg);
}

TEST(InputFileDeathTest, WithTheCliHandlingTheRunsOutputIsRemovedToo) {
  test::TempDir d;
  const std::string path = d.str("model.safetensors");
  test::write_file(path, std::vector<uint8_t>(1 << 20, 7));
  const std::string partial = d.str("out.qtool-partial-1");
  const std::string msg = "qtool: error: " + path + ": cannot read: the file was truncated while qtool read it .*\n"
                          "qtool: removed " + partial + " \\(this run's unfinished output\\)";
  EXPECT_EXIT(map_truncate_and_read(path, true, partial), ::testing::ExitedWithCode(7), msg);
  EXPECT_FALSE(fs::exists(partial));
}

}  // namespace
}  // namespace qt
