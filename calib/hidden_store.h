// The hidden states of every calibration sample, carried from layer to layer by the forward pass
// (calib/forward.h): [tokens_s, hidden] f32 per sample, one contiguous block per sample.
//
// Memory: they are the one part of calibration that grows with the data (samples x tokens x
// hidden x 4 bytes: 512 x 2048 tokens of an 8B model is 17 GB). Up to `spill_above_bytes` they
// live in anonymous memory; above it, in a temporary file in `spill_dir` mapped MAP_SHARED and
// unlinked as soon as it is created, so the kernel can write the pages back and drop them
// under memory pressure (page cache, not anonymous memory) and nothing is left behind by a
// crash. Contents and results are identical either way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qt::calib {

struct HiddenSpill {
  std::string dir;                        // where the temporary file goes; empty: never spill
  uint64_t above_bytes = UINT64_MAX;      // spill when the states need more than this
};

class HiddenStore {
 public:
  // Throws qt::InputError(Io) naming `spill.dir` when the file cannot be created or sized
  // (e.g. no space).
  HiddenStore(const std::vector<int64_t>& tokens_per_sample, int64_t hidden, const HiddenSpill& spill);
  ~HiddenStore();
  HiddenStore(const HiddenStore&) = delete;
  HiddenStore& operator=(const HiddenStore&) = delete;

  // The [tokens_s, hidden] block of sample s (uninitialised until written).
  float* sample(size_t s) { return base_ + offset_[s]; }
  bool spilled() const { return spilled_; }
  uint64_t bytes() const { return bytes_; }

 private:
  std::vector<uint64_t> offset_;  // in floats
  uint64_t bytes_ = 0;
  bool spilled_ = false;
  float* base_ = nullptr;
  std::vector<float> ram_;
};

}  // namespace qt::calib
