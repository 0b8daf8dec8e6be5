#include "formats/output_folder.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "formats/atomic_file.h"
#include "formats/manifest.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;
using Kind = InputError::Kind;

std::string canonical_or_abs(const std::string& path) {
  // Absolute first (a relative path with no existing part would stay relative), and without a
  // trailing separator ("out/" must name the folder "out", not an empty name inside it).
  fs::path a = fs::absolute(path).lexically_normal();
  if (a.has_relative_path() && a.filename().empty()) a = a.parent_path();
  std::error_code ec;
  fs::path c = fs::weakly_canonical(a, ec);
  return (ec ? a : c).string();
}

namespace {

bool is_inside(const std::string& child, const std::string& parent) {
  if (child == parent) return true;
  std::string p = parent;
  if (!p.empty() && p.back() != '/') p += '/';
  return child.rfind(p, 0) == 0;
}

// What sits at a path, without following a final symlink.
enum class Entry { None, EmptyDir, QtoolOutput, Other };

Entry entry_at(const std::string& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return errno == ENOENT ? Entry::None : Entry::Other;
  if (!S_ISDIR(st.st_mode)) return Entry::Other;
  std::error_code ec;
  if (fs::is_empty(p, ec) && !ec) return Entry::EmptyDir;
  return is_qtool_output_folder(p) ? Entry::QtoolOutput : Entry::Other;
}

[[noreturn]] void taken(const std::string& out) {
  throw InputError(Kind::Io, out, "",
                   "the output path is taken by something this run did not create (it appeared or changed during "
                   "the run); it was left untouched and this run's output was discarded");
}

}  // namespace

void check_writable_folder(const std::string& dir, const std::string& what) {
  if (::access(dir.c_str(), W_OK | X_OK) == 0) return;
  const int err = errno;
  if (err == ENOENT || err == ENOTDIR) throw InputError(Kind::Missing, dir, "", what + " does not exist");
  throw InputError(Kind::Io, dir, "", what + " is not writable (" + std::strerror(err) + ")");
}

bool is_qtool_output_folder(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  const std::string m = (fs::path(dir) / kManifestFile).string();
  return ::lstat(m.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void check_output_folder(const std::string& out_arg, const std::string& input, bool overwrite, bool offers_overwrite) {
  const std::string not_empty = offers_overwrite
                                    ? "output folder exists and is not empty (use --overwrite to replace it after success)"
                                    : "output folder exists and is not empty; this command writes only a new or empty folder";
  if (out_arg.empty()) throw InputError(Kind::Usage, "", "", "no output folder given (-o OUT)");
  const std::string out = canonical_or_abs(out_arg);
  if (!input.empty()) {
    const std::string in = canonical_or_abs(input);
    if (is_inside(out, in))
      throw InputError(Kind::Usage, out_arg, "", "output folder is the input or inside it; choose another -o");
    if (is_inside(in, out))
      throw InputError(Kind::Usage, out_arg, "", "output folder contains the input; choose another -o");
  }
  switch (entry_at(out)) {
    case Entry::None:
    case Entry::EmptyDir:
      break;
    case Entry::QtoolOutput:
      if (!overwrite) throw InputError(Kind::Usage, out_arg, "", not_empty);
      break;
    case Entry::Other:
      if (!overwrite) throw InputError(Kind::Usage, out_arg, "", not_empty);
      throw InputError(Kind::Usage, out_arg, "",
                       "exists and is not a qtool output folder (a file, a symlink, or a folder without " +
                           std::string(kManifestFile) + "); --overwrite replaces only a folder qtool wrote");
  }
  std::error_code ec;
  const fs::path parent = fs::path(out).parent_path();
  if (!fs::exists(parent, ec))
    throw InputError(Kind::Missing, parent.string(), "", "parent folder of the output does not exist");
}

// ---- no-replace rename ----

int rename_no_replace(const std::string& from, const std::string& to, bool force_fallback) {
#ifdef SYS_renameat2
  if (!force_fallback) {
    constexpr unsigned kNoReplace = 1;  // RENAME_NOREPLACE
    if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), kNoReplace) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return errno;
  }
#endif
  // The file system refuses the flag: claim the name first, then replace only our claim.
  struct stat st {};
  if (::lstat(from.c_str(), &st) != 0) return errno;
  if (S_ISDIR(st.st_mode)) {
    if (::mkdir(to.c_str(), 0700) != 0) return errno;  // EEXIST: something is there
    if (::rename(from.c_str(), to.c_str()) != 0) {
      const int err = errno;   // ENOTEMPTY/EEXIST: something was put into our claim meanwhile
      ::rmdir(to.c_str());     // removes only an empty folder (our claim)
      return err;
    }
    return 0;
  }
  if (::link(from.c_str(), to.c_str()) != 0) return errno;  // EEXIST: something is there
  ::unlink(from.c_str());
  return 0;
}

// ---- leftovers of killed runs ----

namespace {

// Sibling folders `<OUT>.qtool-partial-<pid>` of other processes: removed when that process is
// gone and the folder carries the marker, otherwise only named. Runs with the lock held, so no
// live qtool run can be writing one of them.
std::vector<std::string> clear_stale_partials(const std::string& out) {
  std::vector<std::string> notes;
  const fs::path o(out);
  const std::string prefix = o.filename().string() + ".qtool-partial-";
  std::error_code ec;
  const std::string tmp_prefix = "." + o.filename().string() + ".qtool-";
  auto dead = [](const std::string& digits) {
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return false;
    const long pid = std::stol(digits);
    return pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  };
  for (const auto& e : fs::directory_iterator(o.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    // A temporary file of an atomic write beside OUT (".OUT.qtool-stats.zst.tmp-PID") of a dead run.
    if (const auto t = name.rfind(".tmp-"); name.rfind(tmp_prefix, 0) == 0 && t != std::string::npos &&
                                             dead(name.substr(t + 5))) {
      struct stat st {};
      if (::lstat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::unlink(e.path().c_str()) == 0)
        notes.push_back("removed a temporary file of process " + name.substr(t + 5) + " (no longer running): " +
                        e.path().string());
      continue;
    }
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(digits);
    if (pid == ::getpid()) continue;
    const std::string path = e.path().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    const bool alive = ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
    const std::string marker = (e.path() / kPartialMarker).string();
    const bool marked = ::lstat(marker.c_str(), &st) == 0 && S_ISREG(st.st_mode);
    if (alive) {
      notes.push_back(path + ": an unfinished output of process " + digits +
                      ", which is still running (or its pid was reused); left alone");
    } else if (!marked) {
      notes.push_back(path + ": looks like an unfinished output of process " + digits + " but has no " +
                      kPartialMarker + " marker (an older qtool, or not qtool's); left alone, delete it yourself");
    } else {
      std::error_code rec;
      fs::remove_all(path, rec);
      if (rec)
        notes.push_back(path + ": the unfinished output of process " + digits +
                        " (no longer running) could not be removed: " + rec.message());
      else
        notes.push_back("removed the unfinished output of process " + digits + " (no longer running): " + path);
    }
  }
  return notes;
}

}  // namespace

// ---- the lock ----

std::string output_lock_path(const std::string& out) { return canonical_or_abs(out) + ".qtool-lock"; }

OutputLock OutputLock::acquire(const std::string& out_arg) {
  OutputLock l;
  l.out_ = canonical_or_abs(out_arg);
  l.path_ = l.out_ + ".qtool-lock";
  const std::string parent = fs::path(l.out_).parent_path().string();
  // Another run may remove the lock file between our open and our flock (it unlinks it while
  // still holding it, at its end): then the file we locked is no longer the one at the path, and
  // we try again.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::open(l.path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) throw InputError(Kind::Missing, parent, "", "parent folder of the output does not exist");
      throw InputError(Kind::Io, parent, "",
                       "the output location is not writable (cannot create " + fs::path(l.path_).filename().string() +
                           ": " + std::strerror(err) + ")");
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char buf[32] = {};
      const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
      ::close(fd);
      if (err == EWOULDBLOCK) {
        std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
        while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
        throw InputError(Kind::Io, l.out_, "",
                         "another qtool run" + (pid.empty() ? std::string() : " (pid " + pid + ")") +
                             " is writing this output (it holds " + l.path_ + "); wait for it or choose another -o");
      }
      throw InputError(Kind::Io, l.path_, "", std::string("cannot lock: ") + std::strerror(err));
    }
    struct stat a {}, b {};
    if (::fstat(fd, &a) == 0 && ::lstat(l.path_.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      const std::string pid = std::to_string(::getpid()) + "\n";
      if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
      l.fd_ = fd;
      l.on_interrupt_ = cleanup::OnInterrupt(l.path_, "");
      l.notes_ = clear_stale_partials(l.out_);
      return l;
    }
    ::close(fd);
  }
  throw InputError(Kind::Io, l.path_, "", "cannot lock: the lock file keeps being replaced");
}

OutputLock::OutputLock(OutputLock&& o) noexcept
    : fd_(o.fd_), out_(std::move(o.out_)), path_(std::move(o.path_)), notes_(std::move(o.notes_)),
      on_interrupt_(std::move(o.on_interrupt_)) {
  o.fd_ = -1;
}

OutputLock& OutputLock::operator=(OutputLock&& o) noexcept {
  if (this != &o) {
    release();
    fd_ = o.fd_;
    out_ = std::move(o.out_);
    path_ = std::move(o.path_);
    notes_ = std::move(o.notes_);
    on_interrupt_ = std::move(o.on_interrupt_);
    o.fd_ = -1;
  }
  return *this;
}

OutputLock::~OutputLock() { release(); }

void OutputLock::release() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still holding it (see acquire)
  ::close(fd_);
  fd_ = -1;
  on_interrupt_.reset();
}

// ---- the partial folder ----

PartialFolder PartialFolder::create(const std::string& out_arg, const std::string& input, bool overwrite,
                                    const OutputLock* held, bool offers_overwrite) {
  check_output_folder(out_arg, input, overwrite, offers_overwrite);
  const std::string out = canonical_or_abs(out_arg);
  OutputLock own;
  if (held == nullptr || !held->held() || held->out() != out) own = OutputLock::acquire(out);
  const std::string partial = out + ".qtool-partial-" + std::to_string(::getpid());
  PartialFolder pf(out, partial, overwrite);
  pf.own_lock_ = std::move(own);
  {
    // Created and registered together: an interrupt sees either nothing or a registered folder.
    const auto hold = cleanup::hold_off_interrupts();
    std::error_code ec;
    fs::remove_all(partial, ec);
    fs::create_directories(partial, ec);
    if (ec) {
      pf.armed_ = false;
      throw InputError(Kind::Io, partial, "", "cannot create folder: " + ec.message());
    }
    pf.on_interrupt_ = cleanup::OnInterrupt(partial, "this run's unfinished output");
  }
  write_file_atomic((fs::path(partial) / kPartialMarker).string(), std::to_string(::getpid()) + "\n");
  return pf;
}

PartialFolder::PartialFolder(PartialFolder&& o) noexcept
    : out_(std::move(o.out_)), partial_(std::move(o.partial_)), overwrite_(o.overwrite_), armed_(o.armed_),
      own_lock_(std::move(o.own_lock_)), on_interrupt_(std::move(o.on_interrupt_)) {
  o.armed_ = false;
}

PartialFolder::~PartialFolder() {
  if (armed_) {
    std::error_code ec;
    fs::remove_all(partial_, ec);
  }
}

void PartialFolder::publish() {
  QT_ASSERT(armed_);
  // Test hook (qtool-quantize(1) ENVIRONMENT): stop here, everything written, until a signal.
  if (const char* v = std::getenv("QTOOL_FAULT_INJECT"); v && std::string(v) == "wait-before-publish") {
    std::fprintf(stderr, "qtool: QTOOL_FAULT_INJECT=wait-before-publish: waiting for a signal\n");
    std::fflush(stderr);
    for (;;) ::pause();
  }
  // An interrupt waits until the output is in place (or publishing failed).
  const auto hold = cleanup::hold_off_interrupts();
  if (::unlink((fs::path(partial_) / kPartialMarker).c_str()) != 0 && errno != ENOENT)
    throw InputError(Kind::Io, partial_, "", std::string("cannot remove the marker file: ") + std::strerror(errno));
  auto put_in_place = [&] {
    const int err = rename_no_replace(partial_, out_);
    if (err == EEXIST || err == ENOTEMPTY || err == ENOTDIR || err == EISDIR) taken(out_);
    if (err != 0) throw InputError(Kind::Io, out_, "", std::string("cannot publish the output: ") + std::strerror(err));
  };
  switch (entry_at(out_)) {
    case Entry::None:
      put_in_place();
      break;
    case Entry::EmptyDir:
      // rmdir removes only an empty folder: if something was put into it, it stays and we stop.
      if (::rmdir(out_.c_str()) != 0 && errno != ENOENT) taken(out_);
      put_in_place();
      break;
    case Entry::QtoolOutput: {
      if (!overwrite_) taken(out_);
      // Replace only now, after success: move the old folder aside, make sure what we moved is
      // still a qtool output, rename the new one in, then delete the old one.
      const std::string old = out_ + ".qtool-old-" + std::to_string(::getpid());
      std::error_code ec;
      fs::remove_all(old, ec);
      int err = rename_no_replace(out_, old);
      if (err != 0) throw InputError(Kind::Io, out_, "", std::string("cannot move the old output aside: ") + std::strerror(err));
      if (!is_qtool_output_folder(old)) {
        rename_no_replace(old, out_);
        taken(out_);
      }
      err = rename_no_replace(partial_, out_);
      if (err != 0) {
        rename_no_replace(old, out_);
        if (err == EEXIST || err == ENOTEMPTY) taken(out_);
        throw InputError(Kind::Io, out_, "", std::string("cannot publish the output: ") + std::strerror(err));
      }
      fs::remove_all(old, ec);
      break;
    }
    case Entry::Other:
      taken(out_);
  }
  armed_ = false;
  on_interrupt_.reset();
  own_lock_.release();
  fsync_parent_directory(out_);
}

}  // namespace qt
