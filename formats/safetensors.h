// safetensors reader: one file, memory-mapped, validated in full at open.
//
// Layout (formats/FORMATS.md §1.1): u64 LE header length N, N bytes of JSON, then the data
// buffer. open() checks everything the reference reader checks (FORMATS.md §1.4) and more, and
// throws qt::InputError naming the file (and tensor) on the first problem:
//   - not a Git LFS pointer file (Kind::Missing: "run `git lfs pull`")
//   - file >= 8 bytes; 8+N <= file size; N <= kMaxHeaderBytes (checked before the header is read)
//   - header is UTF-8 (no NUL padding) JSON object without duplicate keys at any level;
//     each entry has exactly dtype/shape/data_offsets
//   - dtype is a known safetensors dtype; shape entries are non-negative integers
//   - bytes(shape, dtype) == END-BEGIN (no overflow, whole bytes); offsets in the file; after
//     sorting by offset the ranges are contiguous from 0, non-overlapping and cover the data
//     region exactly (no gap, no trailing byte, no truncation)
//   - no duplicate tensor names; __metadata__ is a string->string map
// Accepted like the reference reader: "{}" (no tensors), zero-size tensors ([x,x] offsets), 0-rank
// tensors (shape []), whitespace before/after the JSON object.
// After open, tensors are handed out as zero-copy views into the mapping; no tensor data is
// read until the caller touches the bytes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "libquant/tensor_view.h"

namespace qt {

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // safetensors MAX_HEADER_SIZE

class MappedFile;  // formats/mmap_file.h

class SafetensorsFile {
 public:
  // Opens and validates `path`. Throws InputError (BadFile / Missing / Io).
  static SafetensorsFile open(const std::string& path);
  // Validates the whole file held in memory (`data`, `file_size` bytes: prefix, header and data
  // buffer) without touching tensor bytes beyond taking their addresses. Used by open and by the
  // fuzzer. Fills `tensors` (in data-offset order, views into `data`, file = `path`),
  // `metadata`, and `data_start` = 8 + N (absolute file offset of the data buffer).
  // On error throws InputError and leaves the outputs unspecified.
  static void parse_header(const std::string& path, const uint8_t* data, uint64_t file_size,
                           std::vector<TensorView>& tensors,
                           std::map<std::string, std::string>& metadata, uint64_t& data_start);

  const std::string& path() const { return path_; }
  // Tensors in the order of their data offsets.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr if absent.
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const;
  uint64_t header_size() const { return data_start_; }  // 8 + N
  // Absolute file offset of a tensor's first byte (data_start + BEGIN).
  uint64_t file_offset(const TensorView& t) const;
  // The mapping the views point into (shared: keep it to keep views alive without the file).
  const std::shared_ptr<const MappedFile>& mapping() const { return map_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::shared_ptr<const MappedFile> map_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_start_ = 0;
};

// True if the file content starts like a Git LFS pointer ("version https://git-lfs...").
bool is_git_lfs_pointer(const uint8_t* data, uint64_t size);

}  // namespace qt
