#include "formats/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "formats/input_file.h"
#include "formats/run_cleanup.h"
#include "libquant/error.h"

namespace qt {

struct Sha256::Ctx {
  EVP_MD_CTX* md = nullptr;
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  // Both can fail only on allocation failure inside libcrypto.
  if (!ctx_->md || EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) != 1) throw std::bad_alloc();
}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::update(const void* data, size_t n) {
  if (n > 0) QT_ASSERT(EVP_DigestUpdate(ctx_->md, data, n) == 1);
}

std::array<uint8_t, 32> Sha256::digest() {
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  QT_ASSERT(EVP_DigestFinal_ex(ctx_->md, out.data(), &len) == 1 && len == 32);
  return out;
}

std::string Sha256::hex() {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t b : digest()) {
    s += d[b >> 4];
    s += d[b & 15];
  }
  return s;
}

std::string sha256_file(const std::string& path, const std::atomic<bool>* stop) {
  struct Fd {
    int fd;
    ~Fd() { ::close(fd); }
  } f{open_input_file(path)};
  struct stat st {};
  if (::fstat(f.fd, &st) != 0)
    throw InputError(InputError::Kind::Io, path, "", std::string("cannot stat: ") + std::strerror(errno));
  auto stopped = [&] { return stop && stop->load(); };
  Sha256 h;
  // From the file's pages through a mapping, a window at a time: no copy of the bytes into a
  // buffer (read(2) cost ~15 % of the hashing's CPU time, bench/RESULTS.md), and the resident
  // set stays one window. Where mapping fails (a file system without mmap), read(2) instead.
  constexpr uint64_t kWindow = uint64_t{64} << 20;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t off = 0;
  for (; off < size; off += kWindow) {
    if (stopped()) return "";
    const size_t n = static_cast<size_t>(std::min(kWindow, size - off));
    void* p = ::mmap(nullptr, n, PROT_READ, MAP_SHARED, f.fd, static_cast<off_t>(off));
    if (p == MAP_FAILED) break;
    ::madvise(p, n, MADV_SEQUENTIAL);
    // A file truncated underneath raises SIGBUS here: reported as the I/O error it is, like every
    // input mapping (formats/run_cleanup.h).
    cleanup::register_mapping(p, n, path);
    h.update(p, n);
    cleanup::unregister_mapping(p);
    ::munmap(p, n);
  }
  if (off < size) {  // the read(2) fallback, from where mapping failed to the end of the file
    std::vector<uint8_t> buf(size_t{4} << 20);
    for (;;) {
      if (stopped()) return "";
      const ssize_t n = ::pread(f.fd, buf.data(), buf.size(), static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw InputError(InputError::Kind::Io, path, "", std::string("read failed: ") + std::strerror(errno));
      if (n == 0) break;
      h.update(buf.data(), static_cast<size_t>(n));
      off += static_cast<uint64_t>(n);
    }
  }
  return h.hex();
}

}  // namespace qt
