#include "formats/direct_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "libquant/error.h"

namespace qt {

namespace {

std::atomic<DirectWriter::Mode> g_mode{DirectWriter::Mode::Auto};

uint8_t* aligned_bytes(size_t align, size_t n) {
  void* p = nullptr;
  if (::posix_memalign(&p, align, n) != 0) throw std::bad_alloc();
  return static_cast<uint8_t*>(p);
}

// pread until `n` bytes, end of file or an error; returns the bytes read.
size_t pread_some(int fd, uint8_t* dst, size_t n, uint64_t offset) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, dst + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

// The direct-I/O block of the file behind `fd`: statx's offset alignment where the kernel
// reports it (Linux >= 6.1), else 4096 (the largest logical block size of common devices; a
// wrong guess shows as EINVAL on the first write, and the file falls back). 0: no direct I/O.
uint64_t direct_block(int fd) {
#ifdef STATX_DIOALIGN
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
    const uint64_t off = sx.stx_dio_offset_align, mem = sx.stx_dio_mem_align;
    if (off == 0 || mem == 0) return 0;                          // not offered for this file
    if ((off & (off - 1)) != 0 || off > 65536 || mem > 4096) return 0;  // unusual: not attempted
    return std::max<uint64_t>(off, 4096);
  }
#endif
  (void)fd;
  return 4096;
}

// Direct I/O is used on the local disk file systems it was measured on or is routinely used
// on (ext4, XFS). Elsewhere the page cache is the better way: tmpfs is memory already, and on
// network and FUSE file systems (NFS, Lustre, CIFS, ...) every direct write becomes a synchronous
// round trip, where buffered writes are sent many at a time.
bool local_disk_file_system(int fd) {
  struct statfs sf {};
  if (::fstatfs(fd, &sf) != 0) return false;
  constexpr unsigned long kExt4 = 0xEF53, kXfs = 0x58465342;
  const auto type = static_cast<unsigned long>(sf.f_type);
  return type == kExt4 || type == kXfs;
}

}  // namespace

// Per-file state. The fields below `block` are guarded by the service's mutex, except `direct`
// and `refuse_first`, which only the I/O thread changes.
struct DirectWriter::File {
  int fd = -1;
  std::string path;
  uint64_t file_size = 0;
  uint64_t block = 4096;
  std::atomic<bool> direct{true};
  std::atomic<bool> refuse_first{false};
  int in_flight = 0;  // items queued or being written
  bool cancelled = false;
  std::string error, error_tensor;  // the first failed write
  struct Staged {
    uint8_t* buf = nullptr;  // `block` bytes, zero-filled when created
    uint64_t filled = 0;
  };
  std::map<uint64_t, Staged> staged;  // block index -> the bytes of it that have arrived
};

namespace {

// The process-wide queue, pool and I/O thread. Created on first use and never destroyed: its
// thread waits for work for the rest of the process (nothing is in flight at exit, since every
// DirectWriter waits for its own writes before it is gone).
class IoService {
 public:
  struct Item {
    std::shared_ptr<DirectWriter::File> f;
    uint64_t offset = 0;
    uint8_t* data = nullptr;
    size_t len = 0;
    bool pooled = false;  // a pool buffer (returned) or a staging block (freed)
    std::string tensor;
  };

  static IoService* get() {
    static IoService* s = new IoService();
    return s;
  }
  // A fork()ed child has the state but not the thread: it writes through the page cache.
  bool usable() const { return pid_ == ::getpid(); }

  std::mutex mu;
  std::condition_variable cv_idle;  // some file's in_flight reached 0

  // Under `lk`: a free pool buffer, waiting while all kPoolBuffers are queued or being written.
  uint8_t* acquire(std::unique_lock<std::mutex>& lk) {
    cv_space_.wait(lk, [&] { return !free_.empty() || allocated_ < DirectWriter::kPoolBuffers; });
    if (!free_.empty()) {
      uint8_t* b = free_.back();
      free_.pop_back();
      return b;
    }
    uint8_t* b = aligned_bytes(4096, DirectWriter::kBufferBytes);
    ++allocated_;
    return b;
  }
  // Under the lock.
  void release(uint8_t* data, bool pooled) {
    if (!pooled) {
      std::free(data);
      return;
    }
    free_.push_back(data);
    cv_space_.notify_one();
  }
  // Under the lock.
  void push(Item it) {
    it.f->in_flight++;
    queue_.push_back(std::move(it));
    cv_work_.notify_one();
  }
  // Under the lock: removes the queued items of `f` (not the one being written).
  void drop(const DirectWriter::File* f) {
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->f.get() != f) {
        ++it;
        continue;
      }
      release(it->data, it->pooled);
      it->f->in_flight--;
      it = queue_.erase(it);
    }
  }
  int allocated() const { return allocated_; }

 private:
  IoService() : pid_(::getpid()) { std::thread([this] { run(); }).detach(); }

  void run() {
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      cv_work_.wait(lk, [&] { return !queue_.empty(); });
      Item it = std::move(queue_.front());
      queue_.pop_front();
      DirectWriter::File& f = *it.f;
      if (!f.cancelled && f.error.empty()) {
        lk.unlock();
        std::string err = write_item(it);
        lk.lock();
        if (!err.empty() && f.error.empty()) {
          f.error = std::move(err);
          f.error_tensor = it.tensor;
        }
      }
      release(it.data, it.pooled);
      if (--f.in_flight == 0) cv_idle.notify_all();
    }
  }

  // Writes one item; "" or the error message.
  static std::string write_item(const Item& it) {
    DirectWriter::File& f = *it.f;
    const uint8_t* p = it.data;
    size_t left = it.len;
    uint64_t off = it.offset;
    while (left > 0) {
      ssize_t w;
      if (f.refuse_first.exchange(false)) {
        w = -1;
        errno = EINVAL;
      } else {
        w = ::pwrite(f.fd, p, left, static_cast<off_t>(off));
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EINVAL && f.direct.load()) {
        // The file system refused this direct write after all (alignment it did not report):
        // ordinary writes from here on, the same bytes.
        const int fl = ::fcntl(f.fd, F_GETFL);
        if (fl >= 0 && ::fcntl(f.fd, F_SETFL, fl & ~O_DIRECT) == 0) {
          f.direct = false;
          continue;
        }
        errno = EINVAL;
      }
      if (w <= 0) {
        const int err = w < 0 ? errno : EIO;
        return "cannot write bytes [" + std::to_string(off) + "," + std::to_string(off + left) +
               "): " + std::strerror(err);
      }
      p += w;
      left -= static_cast<size_t>(w);
      off += static_cast<uint64_t>(w);
    }
    return {};
  }

  const pid_t pid_;
  std::condition_variable cv_work_, cv_space_;
  std::deque<Item> queue_;
  std::vector<uint8_t*> free_;
  int allocated_ = 0;
};

}  // namespace

void DirectWriter::mode_for_tests(Mode mode) { g_mode.store(mode); }

int DirectWriter::pool_buffers_for_tests() {
  IoService& s = *IoService::get();
  std::lock_guard<std::mutex> lk(s.mu);
  return s.allocated();
}

std::unique_ptr<DirectWriter> DirectWriter::attach(int fd, const std::string& path, uint64_t file_size) {
  const Mode mode = g_mode.load();
  if (mode == Mode::Off) return nullptr;
  if (mode == Mode::Auto) {
    if (file_size < kMinFileBytes) return nullptr;
    const char* env = std::getenv("QTOOL_DIRECT_IO");
    if (env && std::string(env) == "0") return nullptr;
    if (!local_disk_file_system(fd)) return nullptr;
  }
  const uint64_t block = direct_block(fd);
  if (block == 0 || !IoService::get()->usable()) return nullptr;
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) return nullptr;
  auto f = std::make_shared<File>();
  f->fd = fd;
  f->path = path;
  f->file_size = file_size;
  f->block = block;
  f->refuse_first = mode == Mode::RefuseFirstWrite;
  return std::unique_ptr<DirectWriter>(new DirectWriter(std::move(f)));
}

DirectWriter::DirectWriter(std::shared_ptr<File> f) : f_(std::move(f)) {}

DirectWriter::~DirectWriter() {
  IoService& s = *IoService::get();
  std::unique_lock<std::mutex> lk(s.mu);
  f_->cancelled = true;
  s.drop(f_.get());
  s.cv_idle.wait(lk, [&] { return f_->in_flight == 0; });
  for (auto& [idx, st] : f_->staged) std::free(st.buf);
  f_->staged.clear();
}

bool DirectWriter::direct() const { return f_->direct.load(); }

void DirectWriter::put_partial(uint64_t offset, std::span<const uint8_t> bytes, const std::string& tensor) {
  IoService& s = *IoService::get();
  const uint64_t B = f_->block;
  std::lock_guard<std::mutex> lk(s.mu);
  size_t i = 0;
  while (i < bytes.size()) {
    const uint64_t o = offset + i, idx = o / B, start = idx * B;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes.size() - i, start + B - o));
    File::Staged& st = f_->staged[idx];
    if (!st.buf) {
      st.buf = aligned_bytes(static_cast<size_t>(B), static_cast<size_t>(B));
      std::memset(st.buf, 0, static_cast<size_t>(B));
    }
    std::memcpy(st.buf + (o - start), bytes.data() + i, n);
    st.filled += n;
    // The block is complete when every byte of it that lies inside the file has arrived; the
    // file's last block is written whole (zero padding past the end, truncated by finish()).
    if (st.filled == std::min(B, f_->file_size - start)) {
      s.push({f_, start, st.buf, static_cast<size_t>(B), false, tensor});
      f_->staged.erase(idx);
    }
    i += n;
  }
}

void DirectWriter::throw_if_failed(const std::string& tensor) const {
  std::lock_guard<std::mutex> lk(IoService::get()->mu);
  if (!f_->error.empty())
    throw InputError(InputError::Kind::Io, f_->path, f_->error_tensor.empty() ? tensor : f_->error_tensor,
                     f_->error);
}

void DirectWriter::write(uint64_t offset, std::span<const uint8_t> bytes, const std::string& tensor) {
  IoService& s = *IoService::get();
  throw_if_failed(tensor);
  QT_ASSERT(offset + bytes.size() <= f_->file_size);
  const uint64_t B = f_->block, end = offset + bytes.size();
  const uint64_t first = (offset + B - 1) / B * B, last = end / B * B;  // whole blocks: [first, last)
  if (first >= last) return put_partial(offset, bytes, tensor);
  if (offset < first) put_partial(offset, bytes.first(static_cast<size_t>(first - offset)), tensor);
  for (uint64_t o = first; o < last; o += kBufferBytes) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kBufferBytes, last - o));
    uint8_t* buf;
    {
      std::unique_lock<std::mutex> lk(s.mu);
      buf = s.acquire(lk);
    }
    std::memcpy(buf, bytes.data() + (o - offset), n);
    std::lock_guard<std::mutex> lk(s.mu);
    s.push({f_, o, buf, n, true, tensor});
  }
  if (last < end) put_partial(last, bytes.subspan(static_cast<size_t>(last - offset)), tensor);
}

uint64_t DirectWriter::copy(int src_fd, uint64_t src_offset, uint64_t offset, uint64_t size,
                            const std::string& tensor) {
  IoService& s = *IoService::get();
  throw_if_failed(tensor);
  QT_ASSERT(offset + size <= f_->file_size);
  const uint64_t B = f_->block, end = offset + size;
  const uint64_t first = std::min((offset + B - 1) / B * B, end), last = std::max(end / B * B, first);
  // The partial ends go through a small buffer into the staging blocks, all or nothing.
  auto small = [&](uint64_t from, uint64_t to) {
    std::vector<uint8_t> tmp(static_cast<size_t>(to - from));
    if (pread_some(src_fd, tmp.data(), tmp.size(), src_offset + (from - offset)) != tmp.size()) return false;
    put_partial(from, tmp, tensor);
    return true;
  };
  if (offset < first && !small(offset, first)) return 0;
  uint64_t done = first - offset;
  for (uint64_t o = first; o < last; o += kBufferBytes) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kBufferBytes, last - o));
    std::unique_lock<std::mutex> lk(s.mu);
    uint8_t* buf = s.acquire(lk);
    lk.unlock();
    // Whole blocks only: a short read queues what it got in whole blocks and stops there.
    const size_t got = pread_some(src_fd, buf, n, src_offset + (o - offset)) / B * B;
    lk.lock();
    if (got == 0) {
      s.release(buf, true);
      return done;
    }
    s.push({f_, o, buf, got, true, tensor});
    done += got;
    if (got < n) return done;
  }
  if (last < end && small(last, end)) done = size;
  return done;
}

void DirectWriter::finish() {
  IoService& s = *IoService::get();
  std::unique_lock<std::mutex> lk(s.mu);
  // Blocks still staged hold bytes that never arrived: the caller checks completeness first, so
  // none should remain; written as they are if any do.
  for (auto& [idx, st] : f_->staged) s.push({f_, idx * f_->block, st.buf, static_cast<size_t>(f_->block), false, ""});
  f_->staged.clear();
  s.cv_idle.wait(lk, [&] { return f_->in_flight == 0; });
  if (!f_->error.empty()) throw InputError(InputError::Kind::Io, f_->path, f_->error_tensor, f_->error);
  lk.unlock();
  if (f_->file_size % f_->block != 0 && ::ftruncate(f_->fd, static_cast<off_t>(f_->file_size)) != 0)
    throw InputError(InputError::Kind::Io, f_->path, "",
                     "cannot set file size to " + std::to_string(f_->file_size) + ": " + std::strerror(errno));
}

}  // namespace qt
