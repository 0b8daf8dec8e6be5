// Error metrics between a reference tensor and its approximation (all in float64).
#pragma once

#include <cstdint>

namespace qt {

struct ErrorMetrics {
  double sqnr_db = 0;   // 10 log10(sum ref^2 / sum (ref - x)^2); +inf when identical
  double cosine = 1;    // <ref, x> / (|ref| |x|); 1 when both are zero
  double max_abs = 0;   // max |ref - x|
  double max_rel = 0;   // max |ref - x| / max |ref| (relative to the tensor's range)
  double rel_l2 = 0;    // |ref - x| / |ref|
};

ErrorMetrics compare(const float* ref, const float* x, int64_t n);
ErrorMetrics compare(const double* ref, const float* x, int64_t n);

}  // namespace qt
