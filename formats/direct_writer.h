// Writing an output file with direct I/O (O_DIRECT), bytes arriving in any order.
//
// Why: a write(2) through the page cache copies every byte into page-cache pages the kernel has
// just allocated, and on the machines measured (bench/RESULTS.md, "Output by direct I/O") that
// copy into fresh pages, not the quantization, was the largest CPU cost of a data-free quantize:
// `perf` put 34 % of the samples of an 8B-width run in it, and a buffered `dd` of 2.8 GB spent
// 6.7 s of system time against 2.2 s for the same copy with O_DIRECT. With direct I/O the disk
// reads the bytes by DMA from a few reused, page-aligned buffers: no page-cache copy, no fresh
// pages, and the output does not push the input out of the page cache.
//
// How: direct I/O needs the file offset, the length and the buffer address aligned to the file
// system's direct-I/O block (statx STATX_DIOALIGN; 4096 assumed where the kernel does not say).
// Callers write arbitrary byte ranges (a tensor, a chunk of one), so each write is split:
//   - the whole blocks inside it are copied into pool buffers (4 MiB, page-aligned, at most
//     kPoolBuffers in the whole process, reused) and queued;
//   - the bytes of the blocks at its two ends go into per-block staging buffers, kept until
//     every byte of that block has arrived from whichever writes cover it, then queued whole.
// One background thread (process wide) performs the queued writes with pwrite(2). The last
// block of the file is written zero-padded to a whole block and the file truncated back to its
// size by finish(). A writer waits for a free pool buffer when all are queued, so memory stays
// bounded (kPoolBuffers x 4 MiB = 128 MiB, allocated as the queue grows, + the staging blocks of
// ranges still incomplete) whatever the file size. The queue is that long so that the output of
// a large tensor (an 8B model's MLP weight: 56 MiB of FP8) is queued while the next tensor is
// computed: with 4 buffers the quantize loop waited for the disk after each tensor.
//
// Every byte must be written exactly once before finish() (SafetensorsWriter books the ranges
// and refuses overlaps). Direct I/O is used on ext4 and XFS only: tmpfs is memory already, and
// on network and FUSE file systems each direct write is a synchronous round trip. Where the file
// system refuses it anyway (statx reports no direct-I/O alignment, or the first write fails with
// EINVAL), attach() returns null or the file falls back to ordinary writes, with the same bytes.
// QTOOL_DIRECT_IO=0 in the environment turns direct I/O off.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace qt {

class DirectWriter {
 public:
  // Files smaller than this are written through the page cache (the copy is cheap there).
  static constexpr uint64_t kMinFileBytes = uint64_t{8} << 20;
  static constexpr size_t kBufferBytes = size_t{4} << 20;
  static constexpr int kPoolBuffers = 32;  // 128 MiB at most; fewer held the quantize loop back (bench/RESULTS.md)

  // Switches `fd` (open for writing; owned by the caller, who keeps it open until this object is
  // gone) to O_DIRECT and returns a writer for a file of `file_size` bytes, or null where direct
  // I/O is off, not offered by the file system, not ext4 or XFS, or not worth it (file_size <
  // kMinFileBytes).
  // `path` names the file in errors.
  static std::unique_ptr<DirectWriter> attach(int fd, const std::string& path, uint64_t file_size);
  // Drops what is still queued for this file and waits for its write in progress (after an
  // error, or when the caller gives up; the file's contents are then undefined).
  ~DirectWriter();
  DirectWriter(const DirectWriter&) = delete;
  DirectWriter& operator=(const DirectWriter&) = delete;

  // Queues bytes [offset, offset + bytes.size()) of the file; `bytes` may be reused on return.
  // Thread-safe. Throws InputError(Io) naming the file (and `tensor`) if an earlier queued
  // write of this file failed.
  void write(uint64_t offset, std::span<const uint8_t> bytes, const std::string& tensor);
  // Queues `size` bytes read from `src_fd` at `src_offset` (pread into the pool buffers, so they
  // do not pass through a mapping) to the file at `offset`. Stops at the first read error or
  // end of file and returns how many bytes it queued; the caller writes the rest.
  uint64_t copy(int src_fd, uint64_t src_offset, uint64_t offset, uint64_t size, const std::string& tensor);
  // Waits for every queued write of this file, then truncates it to file_size. Throws
  // InputError(Io) naming the file for the first write that failed. Call once, after every byte
  // was written; the caller then fsyncs.
  void finish();
  // False once the file fell back to ordinary writes (the first direct write was refused).
  bool direct() const;

  // Test hook (process wide): Auto = as above; Off = attach() always returns null; Always =
  // direct I/O for files of any size on any file system that takes it; RefuseFirstWrite = as Always, and the first write of each
  // file acts as if the kernel had refused it with EINVAL (the fallback path).
  enum class Mode { Auto, Off, Always, RefuseFirstWrite };
  static void mode_for_tests(Mode mode);
  // How many pool buffers the process has allocated (never more than kPoolBuffers).
  static int pool_buffers_for_tests();

  struct File;  // per-file state shared with the I/O thread (direct_writer.cpp)

 private:
  explicit DirectWriter(std::shared_ptr<File> f);
  void put_partial(uint64_t offset, std::span<const uint8_t> bytes, const std::string& tensor);
  void throw_if_failed(const std::string& tensor) const;
  std::shared_ptr<File> f_;
};

}  // namespace qt
