// Scalar reference and run-time dispatch of libquant/drift_rows.h.
#include "libquant/drift_rows.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/drift_rows_isa.h"

namespace qt {

DriftGroup drift_group_ref(const float* a, const float* c, int64_t n, float s, float lim_s) {
  float d2[16] = {}, r2[16] = {};
  DriftGroup g;
  for (int64_t j = 0; j < n; ++j) {
    const float deq = c[j] * s, d = a[j] - deq, aa = std::fabs(a[j]);
    const float dd = d * d, rr = deq * deq;
    d2[j % 16] += dd;
    r2[j % 16] += rr;
    const float ad = std::fabs(d), aq = std::fabs(deq);
    g.max_d = ad > g.max_d ? ad : g.max_d;
    g.amax_new = aa > g.amax_new ? aa : g.amax_new;
    g.amax_quant = aq > g.amax_quant ? aq : g.amax_quant;
    g.clipped += aa > lim_s ? 1 : 0;
  }
  for (int h = 8; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) d2[l] += d2[l + h], r2[l] += r2[l + h];
  g.d2 = d2[0], g.r2 = r2[0];
  return g;
}

DriftGroup drift_group_bf16(const uint8_t* w, const uint8_t* codes, DType code_dtype, int64_t n, float s,
                            float lim_s) {
  QT_ASSERT(code_dtype == DType::F8_E4M3 || code_dtype == DType::I8);
  const bool fp8 = code_dtype == DType::F8_E4M3;
  switch (active_isa()) {
    case Isa::Avx512: return drift_rows_avx512::drift_group_bf16(w, codes, fp8, n, s, lim_s);
    case Isa::Avx2: return drift_rows_avx2::drift_group_bf16(w, codes, fp8, n, s, lim_s);
    default: break;
  }
  std::vector<float> a(static_cast<size_t>(n)), c(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    uint16_t b;
    std::memcpy(&b, w + 2 * j, 2);
    a[static_cast<size_t>(j)] = f32_from_bf16(b);
    c[static_cast<size_t>(j)] = fp8 ? f32_from_e4m3fn(codes[j]) : static_cast<float>(static_cast<int8_t>(codes[j]));
  }
  return drift_group_ref(a.data(), c.data(), n, s, lim_s);
}

}  // namespace qt
