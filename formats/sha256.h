// SHA-256 (FIPS 180-4), streaming. Used for provenance: the manifest records a hash of every
// input shard so an output checkpoint can be traced to the exact bytes it came from.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace qt {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> digest();  // finishes; the object must not be updated afterwards
  std::string hex();                 // digest() as 64 lower-case hex digits
 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t used_ = 0;
  uint64_t total_ = 0;
};

// Hash of a whole file (read with mmap, sequentially). Throws InputError(Io) naming the file.
std::string sha256_file(const std::string& path);

}  // namespace qt
