// SHA-256 (FIPS 180-4), streaming, computed by OpenSSL's libcrypto (EVP; it uses the CPU's SHA
// extensions where present: ~2 GB/s with SHA-NI against ~0.3 GB/s for the portable C code qtool
// had before, bench/RESULTS.md). Used for provenance: the manifest records a hash of every input
// shard, so an output checkpoint can be traced to the exact bytes it came from; statistics files
// record the hash of their calibration text.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace qt {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> digest();  // finishes; the object must not be updated afterwards
  std::string hex();                 // digest() as 64 lower-case hex digits

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Hash of a whole file, read through 64 MiB mappings in order (read(2) where mapping fails).
// Throws InputError(Io) naming the file.
// When `stop` becomes true the read stops and "" is returned (the caller is giving up).
std::string sha256_file(const std::string& path, const std::atomic<bool>* stop = nullptr);

}  // namespace qt
