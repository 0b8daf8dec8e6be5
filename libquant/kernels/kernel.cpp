#include "libquant/kernels/kernel.h"

namespace qt::kernels {

QuantizedWeightRef weight_ref(const QuantizedWeight& w, const LinearDescriptor& d,
                              const uint8_t* input_scale) {
  QuantizedWeightRef r;
  r.code_dtype = w.code_dtype;
  r.codes = w.codes.data();
  r.scales = w.scale_bytes.data();
  r.scale_dtype = w.scale_dtype;
  r.grid = d.weight_grid();
  r.input_scale = input_scale;
  r.input_scale_dtype = d.input_scale_dtype;
  return r;
}

}  // namespace qt::kernels
