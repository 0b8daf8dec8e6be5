#include "formats/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "libquant/error.h"

namespace qt {
namespace {

using Kind = InputError::Kind;

const char* kind_of_special(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a regular file";
}

[[noreturn]] void open_failed(const std::string& path, int err) {
  if (err == ENOENT) throw InputError(Kind::Missing, path, "", "no such file");
  if (err == ELOOP) throw InputError(Kind::Missing, path, "", "cannot open: a symlink loop (too many levels of symbolic links)");
  if (err == ENOTDIR) throw InputError(Kind::Missing, path, "", "no such file (a part of the path is not a folder)");
  throw InputError(Kind::Io, path, "", std::string("cannot open: ") + std::strerror(err));
}

}  // namespace

int open_input_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) open_failed(path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw InputError(Kind::Io, path, "", std::string("cannot stat: ") + std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw InputError(Kind::Missing, path, "", "is a directory, not a file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(Kind::Io, path, "",
                     std::string("is ") + kind_of_special(st.st_mode) + ", not a regular file; qtool reads only regular files");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

void check_input_file(const std::string& path) { ::close(open_input_file(path)); }

std::string read_input_file(const std::string& path) {
  const int fd = open_input_file(path);
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw InputError(Kind::Io, path, "", std::string("cannot read: ") + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace qt
