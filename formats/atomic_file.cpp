#include "formats/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "formats/run_cleanup.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;

namespace {
[[noreturn]] void io_error(const std::string& path, const std::string& tensor, const std::string& action,
                           int err) {
  throw InputError(InputError::Kind::Io, path, tensor, action + ": " + std::strerror(err));
}
}  // namespace

std::string temp_path_for(const std::string& path) {
  const fs::path p(path);
  return (p.parent_path() / ("." + p.filename().string() + ".tmp-" + std::to_string(::getpid())))
      .string();
}

void fsync_parent_directory(const std::string& path) {
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) io_error(dir.string(), "", "cannot open directory to sync it", errno);
  // Some file systems refuse fsync on directories (EINVAL); the rename itself already happened.
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    ::close(fd);
    io_error(dir.string(), "", "cannot sync directory", err);
  }
  ::close(fd);
}

void pwrite_all(int fd, const void* bytes, size_t size, uint64_t offset, const std::string& path,
                const std::string& tensor) {
  const auto* p = static_cast<const uint8_t*>(bytes);
  while (size > 0) {
    const ssize_t w = ::pwrite(fd, p, size, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      io_error(path, tensor, "cannot write", errno);
    }
    if (w == 0) io_error(path, tensor, "cannot write", EIO);
    p += w;
    size -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  const std::string tmp = temp_path_for(path);
  const cleanup::OnInterrupt on_interrupt(tmp, "");  // an interrupt removes it
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_error(path, "", "cannot create temporary file " + tmp, errno);
  try {
    pwrite_all(fd, bytes.data(), bytes.size(), 0, path);
    if (::fsync(fd) != 0) io_error(path, "", "cannot sync", errno);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    io_error(path, "", "cannot close", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    io_error(path, "", "cannot rename " + tmp + " into place", err);
  }
  fsync_parent_directory(path);
}

}  // namespace qt
