// MappedFile: a whole file mapped read-only into memory.
//
// Ownership: the mapping lives as long as the MappedFile; hand it around in a shared_ptr so that
// TensorViews pointing into it stay valid (SafetensorsFile and Checkpoint do this).
// A 0-byte file is valid: data() is then a non-null pointer to nothing and size() is 0
// (mmap refuses length 0, so no mapping is made).
//
// Caveat: if another process truncates the file while it is mapped, touching the lost pages
// raises SIGBUS. qtool never writes to its inputs; document this to users, do not "handle" it.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace qt {

class MappedFile {
 public:
  // Maps `path` read-only. Throws InputError: Missing (no such file, or it is a directory),
  // Io (permission denied or any other OS error). Messages name the file.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, static_cast<size_t>(size_)}; }

  // Paging hints for [offset, offset+length) (clamped to the file; page-rounded inside). Both are
  // only advice: they never change the bytes and never fail.
  //   prefetch: start reading these pages in the background (MADV_WILLNEED).
  //   release : drop these pages from this process (MADV_DONTNEED); they are re-read from the
  //             file if touched again. Useful after a tensor has been consumed, to keep the
  //             resident set small on a machine with less RAM than the checkpoint.
  void prefetch(uint64_t offset, uint64_t length) const;
  void release(uint64_t offset, uint64_t length) const;

  // A read-only descriptor of the mapped file, for reading its bytes by file offset through the
  // kernel (copy_file_range) rather than the mapping: the path opened again (open_input_file),
  // accepted only if it is still the same file (device, inode and size as when mapped).
  // Returns -1 (having opened nothing) when it cannot be opened or is another file now (replaced
  // or truncated since): then use the mapping. The caller closes it.
  int reopen_same_file() const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;  // nullptr for an empty file
  uint64_t dev_ = 0, ino_ = 0;  // identity of the mapped file
};

}  // namespace qt
