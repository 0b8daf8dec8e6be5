// A generated quantized Linear for kernel tests (test_kernels, test_gpu_cuda): codes, BF16 weight
// scales on the descriptor's grid (also kept as floats where a test needs them for an error
// bound) and an optional F32 static input scale. The generators stay with their tests (each draws
// its own distribution); this is the shared shape, its view for the kernels and element lookups.
#pragma once

#include <cstdint>
#include <vector>

#include "libquant/float_formats.h"
#include "libquant/kernels/kernel.h"

namespace qt::test {

struct QuantizedLayer {
  kernels::LinearDescriptor d;
  std::vector<uint8_t> codes;          // FP8 E4M3 or INT8 codes, [N, K] row-major
  std::vector<float> scales;           // grid values (optional; exactly representable in bf16)
  std::vector<uint16_t> scale_bits;    // the weight scales as BF16
  float input_scale = 0.0f;            // StaticTensor activations only

  // The view kernels take. Errors name the tensor and file below.
  kernels::QuantizedWeightRef ref() const {
    kernels::QuantizedWeightRef r;
    r.code_dtype = d.weight_type == QuantType::Float8E4M3 ? DType::F8_E4M3 : DType::I8;
    r.codes = codes.data();
    r.scales = reinterpret_cast<const uint8_t*>(scale_bits.data());
    r.scale_dtype = DType::BF16;
    r.grid = d.weight_grid();
    if (d.act_scheme == kernels::ActScheme::StaticTensor) {
      r.input_scale = reinterpret_cast<const uint8_t*>(&input_scale);
      r.input_scale_dtype = DType::F32;
    }
    r.tensor = "layers.0.mlp.down_proj.weight";
    r.file = "model.safetensors";
    return r;
  }
  // Weight scale of element (n, k), looked up on the grid directly (independent of segments);
  // needs `scales`.
  float sw(int64_t n, int64_t k) const {
    const ScaleGrid g = d.weight_grid();
    return scales[static_cast<size_t>((n / g.rows_per) * d.weight_scale_cols() + k / g.cols_per)];
  }
  // The code of element (n, k) as a number.
  float wval(int64_t n, int64_t k) const {
    const uint8_t c = codes[static_cast<size_t>(n * d.K + k)];
    return d.weight_type == QuantType::Float8E4M3 ? f32_from_e4m3fn(c) : static_cast<float>(static_cast<int8_t>(c));
  }
};

}  // namespace qt::test
