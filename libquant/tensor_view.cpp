#include "libquant/tensor_view.h"

#include <cstdio>

#include "libquant/error.h"
#include "libquant/float_formats.h"

namespace qt {
std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024.0 && u < 4) { v /= 1024.0; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::vector<float> decode_tensor_f32(const TensorView& t) {
  std::vector<float> out(t.numel());
  if (!decode_to_f32(t.dtype, t.bytes.data(), t.numel(), out.data()))
    throw InputError(InputError::Kind::Unsupported, t.file, t.name, "tensor dtype cannot be decoded",
                     "F32, F16, BF16, F64, F8 or an integer dtype", std::string(dtype_name(t.dtype)));
  return out;
}
}  // namespace qt
