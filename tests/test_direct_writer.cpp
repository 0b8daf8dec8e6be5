// formats/direct_writer: bytes arriving in any order, from several threads, at any alignment,
// end up as the file they make up, whether the file system takes direct I/O or the writer falls
// back to ordinary writes; reads from a source file; errors name the file and tensor. The
// expected file is always the plain byte array the ranges were cut from.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <thread>

#include "formats/direct_writer.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

using test::TempDir;

std::vector<uint8_t> pattern(size_t n, uint32_t salt) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(((i + salt) * 2654435761u) >> 24);
  return v;
}

// [begin, end) pieces covering [0, n): many small ones (inside one block, across a block
// boundary) and some of several MiB (more than one pool buffer), in a shuffled order.
std::vector<std::pair<uint64_t, uint64_t>> random_pieces(uint64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::pair<uint64_t, uint64_t>> v;
  for (uint64_t at = 0; at < n;) {
    const int kind = static_cast<int>(rng() % 4);
    uint64_t len = kind == 0 ? 1 + rng() % 16 : kind == 1 ? 1 + rng() % 9000 : 1 + rng() % (6u << 20);
    len = std::min(len, n - at);
    v.push_back({at, at + len});
    at += len;
  }
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

struct ModeGuard {
  explicit ModeGuard(DirectWriter::Mode m) { DirectWriter::mode_for_tests(m); }
  ~ModeGuard() { DirectWriter::mode_for_tests(DirectWriter::Mode::Auto); }
};

int open_output(const TempDir& d, const char* name) {
  const int fd = ::open(d.str(name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  EXPECT_GE(fd, 0);
  return fd;
}

// Whether the file system under `d` takes direct I/O at all (in the current test mode).
bool direct_io_here(const TempDir& d) {
  const int fd = open_output(d, "probe");
  const bool ok = DirectWriter::attach(fd, d.str("probe"), 1) != nullptr;
  ::close(fd);
  ::unlink(d.str("probe").c_str());
  return ok;
}

// Writes `want` by random pieces from three threads; returns whether the file stayed direct.
bool write_in_pieces(const TempDir& d, const std::vector<uint8_t>& want, uint32_t seed) {
  const int fd = open_output(d, "out.bin");
  auto w = DirectWriter::attach(fd, d.str("out.bin"), want.size());
  EXPECT_NE(w, nullptr);
  if (!w) {
    ::close(fd);
    return false;
  }
  const auto pieces = random_pieces(want.size(), seed);
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < pieces.size(); i += 3)
        w->write(pieces[i].first, {want.data() + pieces[i].first, pieces[i].second - pieces[i].first}, "t");
    });
  for (auto& th : threads) th.join();
  w->finish();
  const bool direct = w->direct();
  w.reset();
  ::close(fd);
  return direct;
}

TEST(DirectWriter, WritesPiecesArrivingInAnyOrderFromSeveralThreadsAsTheFileTheyMakeUp) {
  const ModeGuard g(DirectWriter::Mode::Always);
  // Sizes: inside one block, exactly whole blocks, and larger than all pool buffers together
  // (so buffers are reused) with a tail that ends inside a block.
  for (size_t n : {size_t{1}, size_t{4095}, size_t{3} << 12, (size_t{21} << 20) + 12345}) {
    TempDir d;
    if (!direct_io_here(d)) GTEST_SKIP() << "the file system under " << d.str() << " offers no direct I/O";
    const auto want = pattern(n, static_cast<uint32_t>(n));
    const bool direct = write_in_pieces(d, want, static_cast<uint32_t>(n));
    EXPECT_EQ(test::read_file(d.path() / "out.bin"), want) << n << " bytes, direct: " << direct;
    EXPECT_LE(DirectWriter::pool_buffers_for_tests(), DirectWriter::kPoolBuffers);
  }
}

TEST(DirectWriter, FallsBackToOrdinaryWritesWithTheSameBytesWhenADirectWriteIsRefused) {
  const ModeGuard g(DirectWriter::Mode::RefuseFirstWrite);
  TempDir d;
  const auto want = pattern((size_t{9} << 20) + 77, 5);
  if (!direct_io_here(d)) GTEST_SKIP() << "the file system under " << d.str() << " offers no direct I/O";
  EXPECT_FALSE(write_in_pieces(d, want, 9));  // fell back
  EXPECT_EQ(test::read_file(d.path() / "out.bin"), want);
}

TEST(DirectWriter, OffModeSmallFilesAndTmpfsGetNoWriter) {
  TempDir d;
  const int fd = open_output(d, "x");
  {
    const ModeGuard g(DirectWriter::Mode::Off);
    EXPECT_EQ(DirectWriter::attach(fd, d.str("x"), 1u << 30), nullptr);
  }
  EXPECT_EQ(DirectWriter::attach(fd, d.str("x"), DirectWriter::kMinFileBytes - 1), nullptr);  // Auto
  EXPECT_EQ(::fcntl(fd, F_GETFL) & O_DIRECT, 0);  // the descriptor was left as it was
  ::close(fd);
  struct statfs sf {};
  if (::statfs("/dev/shm", &sf) != 0 || static_cast<unsigned long>(sf.f_type) != 0x01021994UL)
    GTEST_SKIP() << "no tmpfs at /dev/shm to check the file-system rule on";
  const std::string shm = "/dev/shm/qtool-direct-writer-test-" + std::to_string(::getpid());
  const int t = ::open(shm.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(t, 0);
  EXPECT_EQ(DirectWriter::attach(t, shm, 1u << 30), nullptr);  // tmpfs: the page cache is the file
  ::close(t);
  ::unlink(shm.c_str());
}

TEST(DirectWriter, CopiesRangesOfASourceFileAndSaysWhereTheSourceEnded) {
  const ModeGuard g(DirectWriter::Mode::Always);
  TempDir d;
  const auto src = pattern((size_t{10} << 20) + 333, 11);
  test::write_file(d.path() / "src.bin", src);
  const int in = ::open(d.str("src.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(in, 0);
  // out = [src[7 ..] shifted to 100: 9 MiB]  then src[0 .. 5000) at an odd offset, then the
  // last 2 MiB of out from past the source's end (the copy stops: the rest is written).
  const uint64_t n = (uint64_t{12} << 20) + 5;
  std::vector<uint8_t> want(n, 0);
  const int fd = open_output(d, "out.bin");
  auto w = DirectWriter::attach(fd, d.str("out.bin"), n);
  if (!w) GTEST_SKIP() << "the file system under " << d.str() << " offers no direct I/O";
  const uint64_t a = 9u << 20;
  std::copy(src.begin() + 7, src.begin() + 7 + a, want.begin() + 100);
  EXPECT_EQ(w->copy(in, 7, 100, a, "a"), a);
  std::copy(src.begin(), src.begin() + 5000, want.begin() + 100 + a);
  EXPECT_EQ(w->copy(in, 0, 100 + a, 5000, "b"), 5000u);
  const uint64_t c0 = 100 + a + 5000, c = n - c0, from = src.size() - 1000;
  std::copy(src.begin() + from, src.end(), want.begin() + c0);
  const uint64_t got = w->copy(in, from, c0, c, "c");
  EXPECT_LT(got, 1000u);  // only whole blocks of what the source had
  const auto rest = pattern(c - got, 3);
  std::copy(rest.begin(), rest.end(), want.begin() + c0 + got);
  w->write(c0 + got, rest, "c");
  w->write(0, {want.data(), 100}, "head");
  w->finish();
  w.reset();
  ::close(fd);
  ::close(in);
  EXPECT_EQ(test::read_file(d.path() / "out.bin"), want);
}

TEST(DirectWriter, ReportsAFailedWriteNamingTheFileAndTheTensor) {
  // A file-size limit stands in for a disk error: writes past 1 MiB fail with EFBIG.
  const ModeGuard g(DirectWriter::Mode::Always);
  TempDir d;
  const int fd = open_output(d, "out.bin");
  auto w = DirectWriter::attach(fd, d.str("out.bin"), 16u << 20);
  if (!w) GTEST_SKIP() << "the file system under " << d.str() << " offers no direct I/O";
  const auto bytes = pattern(16u << 20, 1);
  std::string what;
  {
    const test::FileSizeLimit limit(1 << 20);
    try {
      w->write(0, bytes, "model.layers.0.mlp.up_proj.weight");
      w->finish();
    } catch (const InputError& e) {
      EXPECT_EQ(e.kind(), InputError::Kind::Io);
      what = e.what();
    }
  }
  EXPECT_CONTAINS(what, d.str("out.bin"));
  EXPECT_CONTAINS(what, "model.layers.0.mlp.up_proj.weight");
  EXPECT_CONTAINS(what, "cannot write bytes [1048576,");
  EXPECT_CONTAINS(what, "File too large");
  w.reset();
  ::close(fd);
}

}  // namespace
}  // namespace qt
