// Pieces shared by the CPU kernels (internal to libquant/kernels; tests may use them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "libquant/kernels/kernel.h"

namespace qt::kernels::detail {

// Below this many multiply-adds (M*N*K; 2^21 is ~50 us on one AVX2 core) a run stays on the
// calling thread: on a busy shared machine, waking an OpenMP team can cost milliseconds (a
// descheduled worker holds up the join; see bench/RESULTS.md). Results do not depend on it
// (every output's arithmetic is fixed).
inline constexpr int64_t kParallelMinWork = int64_t{1} << 21;

// Reasons every CPU kernel rejects a descriptor for ("" = none): inconsistent fields, zero
// points, W4A8, mixed FP8/INT8 operands, INT8 per-group or dynamic per-tensor activations,
// groups that do not divide K, non-nested scale grids, non-float scale dtypes.
std::string check_common(const LinearDescriptor& d);

// Exact f32 value of every E4M3 byte (NaN codes 0x7F/0xFF hold NaN; pack() rejects them).
const float* e4m3_table();

// Validates w against d (see Kernel::pack) and returns the weight scale of every
// (row n, segment s) as f32 -- the value vLLM holds after copying the checkpoint's scale into an
// f32 parameter -- in a [N, num_segments] row-major table.
std::vector<float> segment_weight_scales(const LinearDescriptor& d, const QuantizedWeightRef& w);
// Throws for NaN FP8 codes and out-of-range INT4 codes (InputError BadValue, names w.tensor).
void check_codes(const LinearDescriptor& d, const QuantizedWeightRef& w);

// The f64 epilogue every CPU kernel applies per segment, in this exact order so that exact
// integer accumulators give bit-identical outputs in every kernel:
//   acc_total += (double(dot_s) * double(sx)) * double(sw);   acc_total starts at +0.0
inline double epilogue_term(double dot, float sx, float sw) {
  return (dot * static_cast<double>(sx)) * static_cast<double>(sw);
}

// A copy of the codes plus the per-segment scale table: the packed form of cpu_ref and
// cpu_portable (they read codes in checkpoint order).
class SimplePacked final : public PackedWeights {
 public:
  SimplePacked(std::string_view kernel, const LinearDescriptor& d, const QuantizedWeightRef& w);
  size_t bytes() const override { return codes.size() + wscale.size() * sizeof(float); }

  std::vector<uint8_t> codes;   // [N, K] as given
  std::vector<float> wscale;    // [N, num_segments]
  float input_scale = 0.0f;     // StaticTensor only
};

}  // namespace qt::kernels::detail
