// formats/sha256 (OpenSSL's libcrypto underneath): the FIPS 180-4 example vectors (NIST's
// "SHA256.pdf" examples: "abc", the 448-bit two-block message, one million 'a'), streaming in
// odd-sized pieces, and files.
#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "formats/sha256.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

std::string hash(const std::string& s) {
  Sha256 h;
  h.update(s.data(), s.size());
  return h.hex();
}

TEST(Sha256, MatchesTheFipsExampleVectors) {
  EXPECT_EQ(hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(hash(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, StreamingInOddPiecesGivesTheSameDigest) {
  const std::string msg(100003, 'q');
  Sha256 h;
  for (size_t i = 0; i < msg.size(); i += 997) h.update(msg.data() + i, std::min<size_t>(997, msg.size() - i));
  EXPECT_EQ(h.hex(), hash(msg));
}

TEST(Sha256, HashesAFileAndNamesAMissingOne) {
  test::TempDir d;
  test::write_text(d.path() / "f", "abc");
  EXPECT_EQ(sha256_file(d.str("f")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  try {
    sha256_file(d.str("nope"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Missing);  // inputs open through formats/input_file.h
    EXPECT_EQ(e.file(), d.str("nope"));
  }
}

TEST(Sha256, HashesAnEmptyFileAndOneLongerThanAMappingWindowLikeTheStreamingHash) {
  // sha256_file reads through 64 MiB mappings: a file one window + 4097 bytes long crosses a
  // window boundary and ends inside a page. The in-memory hash (checked above on the FIPS
  // vectors) of the same bytes is the reference.
  test::TempDir d;
  test::write_text(d.path() / "empty", "");
  EXPECT_EQ(sha256_file(d.str("empty")), hash(""));
  std::string big((size_t{64} << 20) + 4097, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 24);
  test::write_text(d.path() / "big", big);
  EXPECT_EQ(sha256_file(d.str("big")), hash(big));
  const std::atomic<bool> stop{true};
  EXPECT_EQ(sha256_file(d.str("big"), &stop), "");  // the caller gave up: nothing computed
}

}  // namespace
}  // namespace qt
