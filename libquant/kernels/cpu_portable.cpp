// cpu_portable: plain blocked C++ (no intrinsics, baseline x86-64 / any ISA), the fallback when
// the CPU lacks AVX2. OpenMP over blocks of 32 output columns; each thread owns whole outputs.
//
// Arithmetic per output element, fixed regardless of blocking and thread count:
//   * W8A8 INT8: int32 dot product of the codes (exact: |sum| <= 128*128*segment < 2^31).
//   * everything else: f32 dot product of decoded values with 8 interleaved partial sums
//     (lane = k mod 8; each step one f32 multiply then one f32 add -- the build uses
//     -ffp-contract=off, so no FMA), lanes combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
//   * per segment the f64 epilogue of cpu_common.h, segments summed in order, one final f32
//     rounding.
#include <algorithm>
#include <cstring>

#include "libquant/error.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/cpu_common.h"
#include "libquant/kernels/registry.h"

namespace qt::kernels {
namespace {

constexpr int64_t kBlockN = 32;
// Largest segment whose int32 INT8 dot product cannot overflow: 128 * 128 * L <= 2^31 - 1.
constexpr int64_t kMaxInt32Segment = 131071;

float dot8(const float* a, const float* b, int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) {
      const float p = a[k + j] * b[k + j];  // rounded to f32
      lane[j] = lane[j] + p;                // rounded to f32
    }
  for (int j = 0; k < n; ++k, ++j) {
    const float p = a[k] * b[k];
    lane[j] = lane[j] + p;
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

int32_t dot_i8(const int8_t* a, const int8_t* b, int64_t n) {
  int32_t s = 0;  // integer addition is associative: the compiler may vectorize freely
  for (int64_t k = 0; k < n; ++k) s += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
  return s;
}

class CpuPortableKernel final : public Kernel {
 public:
  std::string_view name() const override { return "cpu_portable"; }
  std::string_view summary() const override {
    return "blocked plain C++ (any CPU): int32 INT8 dot products, f32 for FP8 and weight-only, "
           "f64 epilogue";
  }
  int priority() const override { return 100; }

  std::string can_implement(const LinearDescriptor& d) const override {
    if (std::string why = detail::check_common(d); !why.empty()) return why;
    if (d.act_type == ActType::Int8 && d.k_segment() > kMaxInt32Segment)
      return "K-segment of " + std::to_string(d.k_segment()) +
             " could overflow the int32 INT8 accumulator (limit 131071)";
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
    const float* lut = detail::e4m3_table();
    const bool int_path = d.act_type == ActType::Int8;

    QuantizedActivations qa;
    if (!d.weight_only()) qa = quantize_activations(d, X, M, p.input_scale);
    // f32 path: activations as f32 values (FP8 codes decoded exactly; weight-only: X itself).
    std::vector<float> adec;
    const float* A = X;
    if (d.act_type == ActType::Float8E4M3) {
      adec.resize(static_cast<size_t>(M * K));
      for (size_t i = 0; i < adec.size(); ++i) adec[i] = lut[qa.codes[i]];
      A = adec.data();
    }

    const int64_t nblocks = (N + kBlockN - 1) / kBlockN;
    const bool par = M * N * K >= detail::kParallelMinWork;
#pragma omp parallel if (par)
    {
      std::vector<float> wdec(int_path ? 0 : static_cast<size_t>(kBlockN * seg));
      std::vector<double> C(static_cast<size_t>(M * kBlockN));
#pragma omp for schedule(dynamic, 1)
      for (int64_t nb = 0; nb < nblocks; ++nb) {
        const int64_t n0 = nb * kBlockN, nn = std::min(kBlockN, N - n0);
        std::fill(C.begin(), C.end(), 0.0);
        for (int64_t s = 0; s < nseg; ++s) {
          const int64_t k0 = s * seg, len = std::min(K, k0 + seg) - k0;
          if (!int_path) {  // decode this block of weights once, reuse for every row of X
            for (int64_t j = 0; j < nn; ++j) {
              const uint8_t* c = p.codes.data() + (n0 + j) * K + k0;
              float* o = wdec.data() + j * len;
              if (d.weight_type == QuantType::Float8E4M3)
                for (int64_t k = 0; k < len; ++k) o[k] = lut[c[k]];
              else
                for (int64_t k = 0; k < len; ++k) o[k] = static_cast<float>(static_cast<int8_t>(c[k]));
            }
          }
          for (int64_t m = 0; m < M; ++m) {
            const float sx = d.weight_only() ? 1.0f : qa.scale(m, k0);
            for (int64_t j = 0; j < nn; ++j) {
              double dot;
              if (int_path)
                dot = dot_i8(reinterpret_cast<const int8_t*>(qa.codes.data()) + m * K + k0,
                             reinterpret_cast<const int8_t*>(p.codes.data()) + (n0 + j) * K + k0,
                             len);
              else
                dot = dot8(A + m * K + k0, wdec.data() + j * len, len);
              C[static_cast<size_t>(m * kBlockN + j)] +=
                  detail::epilogue_term(dot, sx, p.wscale[static_cast<size_t>((n0 + j) * nseg + s)]);
            }
          }
        }
        for (int64_t m = 0; m < M; ++m)
          for (int64_t j = 0; j < nn; ++j)
            Y[m * N + n0 + j] = static_cast<float>(C[static_cast<size_t>(m * kBlockN + j)]);
      }
    }
  }
};

}  // namespace

const Kernel& cpu_portable_kernel() {
  static const CpuPortableKernel k;
  return k;
}

}  // namespace qt::kernels
