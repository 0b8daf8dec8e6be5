// safetensors writer, sharding plan and index file.
//
// SafetensorsWriter lays a file out exactly as the reference writer does (formats/FORMATS.md §1.5),
// so that for the same tensors and metadata the bytes equal Python's `safetensors.torch.save_file`:
//   1. tensors sorted by dtype DEScending in qt::DType enum order (U64, I64, F64, C64, F32, ...,
//      BOOL), ties by name ascending byte-wise; offsets assigned consecutively in that order.
//   2. compact JSON: "__metadata__" first (if any; keys sorted), then the tensors in offset order,
//      each {"dtype":..,"shape":[..],"data_offsets":[B,E]}; strings escaped as serde_json does.
//   3. header padded with spaces (0x20) so N is a multiple of 8 (data buffer 8-aligned; with step
//      1 every tensor starts at a multiple of its element size).
// Data is streamed: the header is written at construction into a temporary file in the target
// directory; tensors then arrive in any order, whole or in chunks, each pwritten at its
// precomputed offset, so the checkpoint never has to be held in memory. commit() checks that
// every byte of every tensor was written exactly once, fsyncs and renames the file into place.
// Files of 8 MiB or more are written with direct I/O where the file system offers it
// (formats/direct_writer.h: no page-cache copy of the output); otherwise through the page cache.
// The bytes are the same either way.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "libquant/dtype.h"

namespace qt {

class DirectWriter;  // formats/direct_writer.h

// What a tensor will be: name, element type, shape (row-major). Size = dtype_nbytes(numel).
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

// Where a tensor lies in the file: absolute file offset of its first byte and its byte size.
struct TensorSlot {
  uint64_t offset = 0;
  uint64_t size = 0;
};

// The complete layout of one safetensors file (pure computation, no I/O).
struct SafetensorsLayout {
  std::string header;                  // the first 8+N bytes of the file: u64 LE N, JSON, padding
  std::vector<TensorSpec> order;       // tensors in file (offset) order
  std::vector<TensorSlot> slots;       // slots[i] belongs to order[i]
  uint64_t file_size = 0;              // header.size() + sum of tensor sizes
};

// Computes the reference layout. Throws InputError(BadValue, path, tensor) for a duplicate or
// reserved ("__metadata__") or non-UTF-8 name, a negative dimension, a size that overflows or is
// not a whole number of bytes, and InputError(BadValue, path) for a header above kMaxHeaderBytes.
// `path` is only used in messages.
SafetensorsLayout plan_safetensors_layout(const std::string& path, const std::vector<TensorSpec>& specs,
                                          const std::map<std::string, std::string>& metadata);

class SafetensorsWriter {
 public:
  // Plans the layout (metadata gets "format":"pt" unless it has a "format" key already: the
  // transformers loader refuses shards without it), creates temp_path_for(path), reserves the
  // full file size (so a full disk is reported now, not half-way) and writes the header.
  // Throws InputError(BadValue) for bad specs (see plan_safetensors_layout), InputError(Io) for
  // OS errors, both naming `path`.
  SafetensorsWriter(std::string path, std::vector<TensorSpec> specs,
                    std::map<std::string, std::string> metadata = {});
  // Without a successful commit() the temporary file is removed; the target is left untouched.
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Writes a whole tensor; bytes.size() must equal its size. Same rules as write_chunk.
  void write(const std::string& name, std::span<const uint8_t> bytes);
  // Writes bytes [offset_in_tensor, offset_in_tensor + bytes.size()) of tensor `name`.
  // Thread-safe: different threads may write different tensors or chunks concurrently (but
  // commit() must not run concurrently with writes).
  // Caller errors throw std::logic_error naming the file and tensor: unknown name, range outside
  // the tensor, or a byte already written. OS errors throw InputError(Io).
  void write_chunk(const std::string& name, uint64_t offset_in_tensor, std::span<const uint8_t> bytes);
  // Writes a whole tensor whose bytes also lie, unchanged, in the regular file `src_fd` at
  // `src_offset` (`bytes` is the same data, e.g. that file's mapping). Through the page cache, the
  // kernel is asked to copy the file range (copy_file_range(2)), so the bytes do not pass through
  // this process; with direct I/O they are read from `src_fd` (pread, not through the mapping).
  // Whatever is not copied that way (another file system, an older kernel, any error: it may stop
  // part-way) is then written from `bytes` as write() does. The file's bytes are the same either
  // way. Same rules and errors as write(). Returns how many bytes came from `src_fd`.
  uint64_t write_copy(const std::string& name, std::span<const uint8_t> bytes, int src_fd, uint64_t src_offset);
  // Test hook (process wide): Auto = as above; Off = never ask the kernel (write() only);
  // FailAfterFirstChunk = the kernel copies at most the first 4096 bytes of each tensor, then the
  // rest is written as if it had failed.
  enum class KernelCopy { Auto, Off, FailAfterFirstChunk };
  static void kernel_copy_for_tests(KernelCopy mode);
  // Through the page cache, each write of 1 MiB or more also starts its writeback to disk at once
  // (not waiting for it), so that the disk writes while the caller computes the next tensor
  // instead of all at commit(); with direct I/O the writes are queued to a background thread.
  // commit() waits for them.
  // Checks completeness (std::logic_error naming the first tensor with missing bytes and how many),
  // fsyncs, renames into place and fsyncs the directory. Throws InputError(Io) on OS errors.
  // Call once; the writer is finished afterwards.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  // name -> (absolute file offset, size).
  const std::map<std::string, TensorSlot>& layout() const { return slots_; }
  // Tensors in file order, with their slots (same order).
  const SafetensorsLayout& plan() const { return plan_; }
  // The 8+N header bytes written at the start of the file.
  const std::string& header_bytes() const { return plan_.header; }
  uint64_t file_size() const { return plan_.file_size; }
  // Metadata as written (with "format" added).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  // Books bytes [begin, end) of tensor `name` as written (throwing for a range outside the tensor
  // or written before); returns the tensor's slot. false: nothing to write (empty range).
  bool book(const std::string& name, uint64_t begin, uint64_t end, TensorSlot& slot);
  // Starts the kernel writing [offset, offset+size) to disk now (see the .cpp); does not wait.
  void start_writeback(uint64_t offset, uint64_t size);

  std::string path_, temp_path_;
  std::map<std::string, std::string> metadata_;
  SafetensorsLayout plan_;
  std::map<std::string, TensorSlot> slots_;
  // Per tensor: written byte ranges [begin, end) relative to the tensor, kept merged.
  std::map<std::string, std::map<uint64_t, uint64_t>> written_;
  std::mutex mu_;
  int fd_ = -1;
  std::unique_ptr<DirectWriter> direct_;  // null: writes go through the page cache
  bool committed_ = false;
};

// --- sharding --------------------------------------------------------------------------------

// One output shard: its file name and the tensors it holds (in input order).
struct ShardPlan {
  std::string file_name;
  std::vector<TensorSpec> tensors;
  uint64_t tensor_bytes = 0;  // sum of the tensors' byte sizes (not the file size)
};

// "model.safetensors" when count == 1, else "model-%05d-of-%05d.safetensors" (1-based), the
// names transformers / huggingface_hub use.
std::string shard_file_name(size_t index0, size_t count);

// Splits `specs` into shards of at most `max_shard_bytes` tensor bytes each, keeping input order:
// a tensor that does not fit in the current shard starts a new one; a tensor larger than the cap
// gets a shard of its own (tensors are never split). At least one shard (possibly empty) is
// returned. max_shard_bytes must be > 0 (huggingface_hub's default is 5'000'000'000).
std::vector<ShardPlan> plan_shards(const std::vector<TensorSpec>& specs, uint64_t max_shard_bytes);

// Writes <dir>/model.safetensors.index.json atomically as transformers does:
// {"metadata": {"total_size": N}, "weight_map": {name: shard, ...}} with json.dumps(indent=2,
// sort_keys=True) + "\n". total_size is the sum of tensor byte sizes. Throws InputError(Io).
void write_index_json(const std::string& dir, uint64_t total_size,
                      const std::map<std::string, std::string>& weight_map);

inline constexpr const char* kIndexFileName = "model.safetensors.index.json";

}  // namespace qt
