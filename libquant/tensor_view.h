// A tensor as it lies on disk: name, element type, shape and a read-only span of its bytes.
//
// Ownership: a TensorView does not own its bytes; they belong to the memory map of the file
// that produced it (SafetensorsFile / Checkpoint), which must outlive the view. Views are cheap
// to copy. Bytes are little-endian, row-major (C order), exactly as stored.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "libquant/dtype.h"

namespace qt {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;      // [] for a 0-rank scalar
  std::span<const uint8_t> bytes;  // exactly dtype_nbytes(dtype, numel()) bytes
  std::string file;                // the file the bytes come from (for error messages)

  uint64_t numel() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
  }
};

// "[4096,4096]"
std::string shape_string(const std::vector<int64_t>& shape);
// A byte count for people, in binary units: "512 B", "32.0 MiB", "1.5 GiB".
std::string human_bytes(uint64_t b);

// The whole tensor decoded to f32 (a new vector, exactly as decode_to_f32 converts each dtype).
// Throws InputError(Unsupported) naming the file and tensor for a dtype it cannot decode.
std::vector<float> decode_tensor_f32(const TensorView& t);

}  // namespace qt
