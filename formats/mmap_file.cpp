#include "formats/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "formats/input_file.h"
#include "formats/run_cleanup.h"
#include "libquant/error.h"

namespace qt {
namespace {

[[noreturn]] void throw_os_error(const std::string& path, const char* action, int err) {
  using Kind = InputError::Kind;
  const Kind kind = (err == ENOENT || err == ENOTDIR) ? Kind::Missing : Kind::Io;
  std::string problem = std::string(action) + ": " + std::strerror(err);
  if (err == ENOENT) problem = "no such file";
  throw InputError(kind, path, "", problem);
}

// madvise wants a page-aligned start; widen the range down to the page boundary.
void advise(const void* base, uint64_t size, uint64_t offset, uint64_t length, int advice) {
  if (base == nullptr || offset >= size) return;
  if (length > size - offset) length = size - offset;
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const uint64_t end = offset + length;
  ::madvise(static_cast<char*>(const_cast<void*>(base)) + start, end - start, advice);
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = open_input_file(path);  // refuses FIFOs, devices, folders, symlink loops
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw_os_error(path, "cannot stat", err);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  dev_ = static_cast<uint64_t>(st.st_dev);
  ino_ = static_cast<uint64_t>(st.st_ino);
  if (size_ == 0) {
    // mmap(length 0) is EINVAL; an empty file is still a valid (if useless) input.
    static const uint8_t kEmpty = 0;
    data_ = &kEmpty;
    ::close(fd);
    return;
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps its own reference to the file
  if (p == MAP_FAILED) throw_os_error(path, "cannot memory-map", err);
  map_ = p;
  data_ = static_cast<const uint8_t*>(p);
  // Inputs changing underneath: qtool assumes its inputs do not change while it runs (it never
  // writes to them). If another process truncates this file, touching the lost pages raises
  // SIGBUS; the registration turns that into the I/O error "PATH: cannot read: the file was
  // truncated while qtool read it ..." (exit 7, after removing what the run created) instead of a
  // crash (formats/run_cleanup.h). Bytes rewritten in place without a size change are not detected.
  cleanup::register_mapping(p, static_cast<size_t>(size_), path_);
}

MappedFile::~MappedFile() {
  cleanup::unregister_mapping(map_);
  if (map_ != nullptr) ::munmap(map_, static_cast<size_t>(size_));
}

void MappedFile::prefetch(uint64_t offset, uint64_t length) const {
  advise(map_, size_, offset, length, MADV_WILLNEED);
}
void MappedFile::release(uint64_t offset, uint64_t length) const {
  advise(map_, size_, offset, length, MADV_DONTNEED);
}

int MappedFile::reopen_same_file() const {
  int fd = -1;
  try {
    fd = open_input_file(path_);
  } catch (const InputError&) {
    return -1;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_dev) != dev_ ||
      static_cast<uint64_t>(st.st_ino) != ino_ || static_cast<uint64_t>(st.st_size) != size_) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace qt
