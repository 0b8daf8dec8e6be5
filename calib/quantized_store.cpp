#include "calib/quantized_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "formats/atomic_file.h"
#include "libquant/error.h"

namespace qt::calib {
namespace {

void pread_all(int fd, uint8_t* p, uint64_t size, uint64_t offset, const std::string& dir, const std::string& module) {
  while (size > 0) {
    const ssize_t r = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      throw InputError(InputError::Kind::Io, dir, module,
                       std::string("cannot read the GPTQ weights back from their temporary file: ") +
                           (r < 0 ? std::strerror(errno) : "unexpected end of file"));
    p += r, size -= static_cast<uint64_t>(r), offset += static_cast<uint64_t>(r);
  }
}

// INT4 codes (int8 values in [-8, 7]) two per byte, low nibble first; exact.
bool fits_nibbles(const QuantizedWeight& q) {
  if (q.code_dtype != DType::I8) return false;
  return std::all_of(q.codes.begin(), q.codes.end(), [](uint8_t c) {
    const int v = static_cast<int8_t>(c);
    return v >= -8 && v <= 7;
  });
}

}  // namespace

QuantizedStore::QuantizedStore(std::string spill_dir) : dir_(std::move(spill_dir)) {}

QuantizedStore::~QuantizedStore() {
  if (fd_ >= 0) ::close(fd_);
}

QuantizedStore::QuantizedStore(QuantizedStore&& o) noexcept
    : dir_(std::move(o.dir_)), fd_(std::exchange(o.fd_, -1)), end_(o.end_), entries_(std::move(o.entries_)) {}

QuantizedStore& QuantizedStore::operator=(QuantizedStore&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    dir_ = std::move(o.dir_);
    fd_ = std::exchange(o.fd_, -1);
    end_ = o.end_;
    entries_ = std::move(o.entries_);
  }
  return *this;
}

void QuantizedStore::put(const std::string& module, QuantizedWeight q) {
  QT_ASSERT(!entries_.count(module));
  Entry e;
  if (dir_.empty()) {
    e.meta = std::move(q);
    entries_.emplace(module, std::move(e));
    return;
  }
  if (fd_ < 0) {
    std::string path = dir_ + "/.qtool-gptq-weights-XXXXXX";
    fd_ = ::mkstemp(path.data());
    if (fd_ < 0)
      throw InputError(InputError::Kind::Io, dir_, "",
                       std::string("cannot create the temporary file for the GPTQ weights: ") + std::strerror(errno));
    ::unlink(path.c_str());  // anonymous from now on: gone when closed, even after a crash
  }
  e.code_count = q.codes.size();
  e.nibbles = fits_nibbles(q);
  std::vector<uint8_t> packed;
  const std::vector<uint8_t>* codes = &q.codes;
  if (e.nibbles) {
    packed.assign((q.codes.size() + 1) / 2, 0);
    for (size_t i = 0; i < q.codes.size(); ++i)
      packed[i / 2] |= static_cast<uint8_t>((q.codes[i] & 0x0F) << (i % 2 ? 4 : 0));
    codes = &packed;
  }
  e.offset = end_;
  e.code_bytes = codes->size();
  e.scale_bytes = q.scale_bytes.size();
  const std::string what = "temporary file of the GPTQ weights in " + dir_;
  pwrite_all(fd_, codes->data(), codes->size(), e.offset, what, module);
  pwrite_all(fd_, q.scale_bytes.data(), q.scale_bytes.size(), e.offset + e.code_bytes, what, module);
  end_ += e.code_bytes + e.scale_bytes;
  // Release the buffers themselves (`v = {}` would keep their capacity, i.e. the memory).
  std::vector<uint8_t>().swap(q.codes);
  std::vector<uint8_t>().swap(q.scale_bytes);
  e.meta = std::move(q);
  entries_.emplace(module, std::move(e));
}

QuantizedWeight QuantizedStore::get(const std::string& module) const {
  const Entry& e = entries_.at(module);
  if (fd_ < 0) return e.meta;
  QuantizedWeight q = e.meta;
  std::vector<uint8_t> stored(e.code_bytes);
  pread_all(fd_, stored.data(), e.code_bytes, e.offset, dir_, module);
  if (e.nibbles) {
    q.codes.resize(e.code_count);
    for (uint64_t i = 0; i < e.code_count; ++i) {
      const int v = (stored[i / 2] >> (i % 2 ? 4 : 0)) & 0x0F;
      q.codes[i] = static_cast<uint8_t>(static_cast<int8_t>(v >= 8 ? v - 16 : v));
    }
  } else {
    q.codes = std::move(stored);
  }
  q.scale_bytes.resize(e.scale_bytes);
  pread_all(fd_, q.scale_bytes.data(), e.scale_bytes, e.offset + e.code_bytes, dir_, module);
  return q;
}

std::vector<std::string> QuantizedStore::modules() const {
  std::vector<std::string> m;
  for (const auto& [k, e] : entries_) m.push_back(k);
  return m;
}

}  // namespace qt::calib
