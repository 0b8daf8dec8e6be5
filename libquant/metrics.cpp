#include "libquant/metrics.h"

#include <cmath>
#include <limits>

namespace qt {
namespace {
template <typename R>
ErrorMetrics compare_impl(const R* ref, const float* x, int64_t n) {
  double s_ref = 0, s_x = 0, s_err = 0, dot = 0, max_abs = 0, max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double r = static_cast<double>(ref[i]), v = static_cast<double>(x[i]), e = r - v;
    s_ref += r * r; s_x += v * v; s_err += e * e; dot += r * v;
    max_abs = std::max(max_abs, std::fabs(e));
    max_ref = std::max(max_ref, std::fabs(r));
  }
  ErrorMetrics m;
  m.sqnr_db = s_err == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(s_ref / s_err);
  m.cosine = (s_ref == 0 && s_x == 0) ? 1.0 : (s_ref == 0 || s_x == 0) ? 0.0 : dot / std::sqrt(s_ref * s_x);
  m.max_abs = max_abs;
  m.max_rel = max_ref == 0 ? (max_abs == 0 ? 0 : std::numeric_limits<double>::infinity()) : max_abs / max_ref;
  m.rel_l2 = s_ref == 0 ? (s_err == 0 ? 0 : std::numeric_limits<double>::infinity()) : std::sqrt(s_err / s_ref);
  return m;
}
}  // namespace

ErrorMetrics compare(const float* ref, const float* x, int64_t n) { return compare_impl(ref, x, n); }
ErrorMetrics compare(const double* ref, const float* x, int64_t n) { return compare_impl(ref, x, n); }

}  // namespace qt
