// cpu_ref: the accuracy oracle (libquant/kernels/KERNELS.md §6.1). Deliberately scalar and
// simple: no SIMD, no blocking, no reassociation.
//
// Exactness. Every E4M3 value is an integer multiple of 2^-9 with magnitude <= 448, so a product
// of two is a multiple of 2^-18 below 448^2 = 200704 < 2^18, and any partial sum of K products is
// a multiple of 2^-18 below K * 2^18; float64 holds all of those exactly while K * 2^18 <= 2^35
// (53 significand bits), i.e. for K <= 2^17 = 131072, in any order. INT8 products (<= 2^14) are
// exact in float64 for K < 2^39. So for W8A8 layers every segment's dot product is exact and
// the only roundings are the f64 epilogue and the final f64 -> f32 conversion. Weight-only layers
// multiply f32 X by codes (exact in f64, 24 + 8 significant bits) and sum in f64 (not exact, but
// ~2^-53 relative per addition).
#include <algorithm>
#include <cmath>

#include "libquant/error.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/cpu_common.h"
#include "libquant/kernels/registry.h"

namespace qt::kernels {
namespace {

constexpr int64_t kMaxExactFp8K = int64_t{1} << 17;

class CpuRefKernel final : public Kernel {
 public:
  std::string_view name() const override { return "cpu_ref"; }
  std::string_view summary() const override {
    return "scalar oracle: exact float64 dot products of decoded codes, scales applied per "
           "K-segment in float64";
  }
  int priority() const override { return 10; }

  std::string can_implement(const LinearDescriptor& d) const override {
    if (std::string why = detail::check_common(d); !why.empty()) return why;
    if (d.act_type == ActType::Float8E4M3 && d.k_segment() > kMaxExactFp8K)
      return "K-segment of " + std::to_string(d.k_segment()) +
             " exceeds 131072 = 2^17, the longest FP8 dot product float64 sums exactly";
    return "";
  }

  std::unique_ptr<PackedWeights> pack(const LinearDescriptor& d,
                                      const QuantizedWeightRef& w) const override {
    QT_ASSERT(can_implement(d).empty());
    return std::make_unique<detail::SimplePacked>(name(), d, w);
  }

  void run(const PackedWeights& pw, const float* X, int64_t M, float* Y) const override {
    QT_ASSERT(pw.kernel() == name());
    const auto& p = static_cast<const detail::SimplePacked&>(pw);
    const LinearDescriptor& d = p.descriptor();
    const int64_t N = d.N, K = d.K, seg = d.k_segment(), nseg = d.num_segments();
    QT_ASSERT(d.act_type != ActType::Float8E4M3 || seg <= kMaxExactFp8K);
    const float* lut = detail::e4m3_table();
    const bool wfp8 = d.weight_type == QuantType::Float8E4M3;

    QuantizedActivations qa;
    if (!d.weight_only()) qa = quantize_activations(d, X, M, p.input_scale);
    const bool afp8 = d.act_type == ActType::Float8E4M3;

    auto wval = [&](int64_t n, int64_t k) -> double {
      const uint8_t c = p.codes[static_cast<size_t>(n * K + k)];
      return wfp8 ? static_cast<double>(lut[c]) : static_cast<double>(static_cast<int8_t>(c));
    };
    auto aval = [&](int64_t m, int64_t k) -> double {
      if (d.weight_only()) return static_cast<double>(X[m * K + k]);
      const uint8_t c = qa.codes[static_cast<size_t>(m * K + k)];
      return afp8 ? static_cast<double>(lut[c]) : static_cast<double>(static_cast<int8_t>(c));
    };

    // Rows are independent; each element's arithmetic is fixed, so threads cannot change it.
    const bool par = M * N * K >= detail::kParallelMinWork;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0.0;
        for (int64_t s = 0; s < nseg; ++s) {
          const int64_t k0 = s * seg, k1 = std::min(K, k0 + seg);
          double dot = 0.0;
          for (int64_t k = k0; k < k1; ++k) dot += aval(m, k) * wval(n, k);  // exact (see top)
          const float sx = d.weight_only() ? 1.0f : qa.scale(m, k0);
          acc += detail::epilogue_term(dot, sx, p.wscale[static_cast<size_t>(n * nseg + s)]);
        }
        Y[m * N + n] = static_cast<float>(acc);  // one RNE rounding to f32
      }
  }
};

}  // namespace

const Kernel& cpu_ref_kernel() {
  static const CpuRefKernel k;
  return k;
}

}  // namespace qt::kernels
