#include "calib/hidden_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "libquant/error.h"

namespace qt::calib {

HiddenStore::HiddenStore(const std::vector<int64_t>& tokens, int64_t hidden, const HiddenSpill& spill) {
  uint64_t n = 0;
  for (int64_t t : tokens) {
    offset_.push_back(n);
    n += static_cast<uint64_t>(t) * static_cast<uint64_t>(hidden);
  }
  bytes_ = n * sizeof(float);
  if (spill.dir.empty() || bytes_ <= spill.above_bytes || bytes_ == 0) {
    ram_.resize(n);
    base_ = ram_.data();
    return;
  }
  std::string path = spill.dir + "/.qtool-calib-hidden-XXXXXX";
  const int fd = ::mkstemp(path.data());
  if (fd < 0)
    throw InputError(InputError::Kind::Io, spill.dir, "", std::string("cannot create the calibration spill file: ") +
                                                              std::strerror(errno));
  ::unlink(path.c_str());  // anonymous from now on: gone when unmapped, even after a crash
  // posix_fallocate reserves the blocks now, so a full disk is an error here, not a SIGBUS later.
  const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes_));
  if (err != 0) {
    ::close(fd);
    throw InputError(InputError::Kind::Io, spill.dir, "",
                     "cannot reserve " + std::to_string(bytes_ >> 20) + " MiB for the calibration spill file: " +
                         std::strerror(err));
  }
  void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (p == MAP_FAILED)
    throw InputError(InputError::Kind::Io, spill.dir, "", std::string("cannot map the calibration spill file: ") +
                                                              std::strerror(map_errno));
  base_ = static_cast<float*>(p);
  spilled_ = true;
}

HiddenStore::~HiddenStore() {
  if (spilled_) ::munmap(base_, bytes_);
}

}  // namespace qt::calib
