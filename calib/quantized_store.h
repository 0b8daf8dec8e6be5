// Quantized weights computed ahead of the writer (GPTQ, calib/gptq.h) and held until the
// streaming pipeline (calib/quantize_pipeline.h) writes them.
//
// GPTQ finishes one decoder layer at a time but the pipeline writes after the whole run, so every
// layer's codes must wait somewhere: one byte per weight in RAM would be ~8 GB for an 8B model,
// growing with depth. With a spill folder, put() appends a weight's codes and scales to a
// temporary file in that folder (created and unlinked at once: page cache, not anonymous memory,
// and nothing left behind by a crash) and keeps only the small metadata; get() reads one weight
// back. INT4 codes are stored two per byte (low nibble first), so the file is half the INT4
// weights' count in bytes (one byte per INT8 code). Without a spill folder the weights stay in RAM
// (tests, tiny models). get() returns the same QuantizedWeight either way.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "libquant/quantize.h"

namespace qt::calib {

class QuantizedStore {
 public:
  // spill_dir empty: in RAM. Otherwise the temporary file is created in spill_dir on the first
  // put(); throws InputError(Io) naming spill_dir when it cannot be created or written (disk full).
  explicit QuantizedStore(std::string spill_dir = {});
  ~QuantizedStore();
  QuantizedStore(const QuantizedStore&) = delete;
  QuantizedStore& operator=(const QuantizedStore&) = delete;
  QuantizedStore(QuantizedStore&& o) noexcept;
  QuantizedStore& operator=(QuantizedStore&& o) noexcept;

  // Stores `q` under `module` (replacing nothing: a module is put once); q's codes and scales may
  // be freed by the caller afterwards.
  void put(const std::string& module, QuantizedWeight q);
  bool contains(const std::string& module) const { return entries_.count(module) != 0; }
  // The stored weight; throws std::out_of_range for an unknown module.
  QuantizedWeight get(const std::string& module) const;
  std::vector<std::string> modules() const;
  size_t size() const { return entries_.size(); }
  bool spilled() const { return fd_ >= 0; }
  uint64_t spill_bytes() const { return end_; }

 private:
  struct Entry {
    QuantizedWeight meta;       // codes and scale_bytes empty when spilled
    uint64_t offset = 0;        // in the spill file: packed codes, then scale bytes
    uint64_t code_bytes = 0;    // as stored (INT4: ceil(count / 2))
    uint64_t code_count = 0;
    uint64_t scale_bytes = 0;
    bool nibbles = false;
  };
  std::string dir_;
  int fd_ = -1;
  uint64_t end_ = 0;
  std::map<std::string, Entry> entries_;
};

}  // namespace qt::calib
