// cpu_fast: BLIS-style packed GEMM with AVX2 micro-kernels, and AVX-512 ones for the f32 path
// where the CPU has AVX-512 F (libquant/kernels/KERNELS.md §6.2).
//
// pack():  weight codes are regrouped into panels of 16 output columns (cpu_fast_avx2.h) and
//          stay one byte per element -- never a full f32 copy of the weight; scales become an
//          f64 table [segment][column].
// run():   activations are quantized (act_quant.h) and packed into tiles of 6 rows; OpenMP
//          hands out chunks of 8 panels (each thread owns whole output columns, so the thread
//          count cannot change any result). Per panel and K-segment:
//   * f32 path (FP8 W8A8 and every weight-only layer): blocks of up to 256 k are decoded into
//     an L1-resident f32 panel (FP8 via the F16C trick, values * 2^-8, the 2^8 folded into the
//     scale table; int codes exactly), then 6x16 f32 FMA micro-kernels run over all row tiles;
//     each output's dot product is one FMA chain in increasing k. A single row (M = 1, decode)
//     skips the f32 panel: codes are decoded in registers, four panels at a time, with the same
//     FMA chain per output -- so a token's result does not depend on the batch it came in.
//   * INT8 path (INT8 W8A8): int32 dot products with vpmovsxbw + vpmaddwd (exact, -128 is fine),
//     bit-identical to cpu_ref.
//   * after each segment the f64 epilogue of cpu_common.h; one f32 rounding at the end.
// Chunks are handed out dynamically (a thread that loses its core to another process does not
// hold the others up); which thread computes a chunk never changes its arithmetic.
#include <algorithm>
#include <cstring>

#include "libquant/error.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/cpu_common.h"
#include "libquant/cpu_isa.h"
#include "libquant/kernels/cpu_fast_avx2.h"
#include "libquant/kernels/cpu_fast_avx512.h"
#include "libquant/kernels/registry.h"

namespace qt::kernels {
namespace {

using avx2::kMR;
using avx2::kNR;
constexpr int64_t kKC = 256;    // k per decoded f32 panel block: 256 x 16 x 4 B = 16 KiB
constexpr int64_t kChunk = 8;   // panels (x16 columns) per unit of OpenMP work
constexpr int64_t kMaxInt32Segment = 131071;  // 128 * 128 * L < 2^31

class FastPacked final : public PackedWeights {
 public:
  using PackedWeights::PackedWeights;
  size_t bytes() const override { return b.size() + sw.size() * sizeof(double); }

  bool int_path = false;   // INT8 x INT8
  bool fp8_w = false;      // f32 path with E4M3 weights (F16C decode)
  int64_t panels = 0;      // ceil(N / 16)
  int64_t kpairs = 0;      // INT8 path: ceil(K / 2)
  std::vector<uint8_t> b;  // panels (see cpu_fast_avx2.h)
  std::vector<double> sw;  // [segment][panels * 16], 0 for padding columns
  float input_scale = 0.0f;
};

class CpuFastKernel final : public Kernel {
 public:
  std::string_view name() const override { return "cpu_fast"; }
  std::string_view summary() const override {
    return "AVX2+FMA+F16C (f32 micro-kernels on AVX-512 F where present) + OpenMP: FP8 decoded into f32 "
           "panels with f32 FMA micro-kernels, INT8 exact via vpmaddwd, f64 epilogue";
  }
  int priority() const override { return 200; }

  std::string can_implement(const LinearDescriptor& d) const override {
    if (!avx2::cpu_ok()) return "this CPU lacks AVX2, FMA or F16C";
    if (std::string why = detail::check_common(d); !why.empty()) return why;
    if (d.act_type == ActType::Int8) {
      if (d.k_segment() > kMaxInt32Segment)
        return "K-segment of " + std::to_string(d.k_segment()) +
               " could overflow the int32 INT8 accumulator (limit 131071)";
      if (d.num_segments() > 1 && d.k_segment() % 2 != 0)
        return "INT8 scale segments of odd length " + std::to_string(d.k_segment()) +
               " cannot be split into the k-pairs vpmaddwd consumes";
    }
    return "";
  }

  std::unique_ptr<PackedWeights> pack(const LinearDescriptor& d,
                                      const QuantizedWeightRef& w) const override {
    QT_ASSERT(can_implement(d).empty());
    detail::check_codes(d, w);
    auto p = std::make_unique<FastPacked>(name(), d);
    const int64_t N = d.N, K = d.K, nseg = d.num_segments();
    p->int_path = d.act_type == ActType::Int8;
    p->fp8_w = !p->int_path && d.weight_type == QuantType::Float8E4M3;
    p->panels = (N + kNR - 1) / kNR;
    p->input_scale = static_input_scale(d, w);

    const std::vector<float> ws = detail::segment_weight_scales(d, w);
    const int64_t npad = p->panels * kNR;
    p->sw.assign(static_cast<size_t>(nseg * npad), 0.0);
    // F16C-decoded FP8 values carry 2^-8; multiplying the scale by 2^8 is exact in f64.
    const double fold = p->fp8_w ? 256.0 : 1.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < nseg; ++s)
        p->sw[static_cast<size_t>(s * npad + n)] = static_cast<double>(ws[static_cast<size_t>(n * nseg + s)]) * fold;

    const uint8_t* c = w.codes;
    if (p->int_path) {
      p->kpairs = (K + 1) / 2;
      p->b.assign(static_cast<size_t>(p->panels * p->kpairs * 2 * kNR), 0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          const int64_t pn = n / kNR, j = n % kNR;
          p->b[static_cast<size_t>(((pn * p->kpairs + k / 2) * kNR + j) * 2 + (k % 2))] = c[n * K + k];
        }
    } else {
      p->b.assign(static_cast<size_t>(p->panels * K * kNR), 0);  // 0 decodes to +0.0 either way
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k)
          p->b[static_cast<size_t>(((n / kNR) * K + k) * kNR + n % kNR)] = c[n * K + k];
    }
    return p;
  }

  void run(const PackedWeights& pw, const float* X, int64_t M, float* Y) const override {
    QT_ASSERT(pw.kernel() == name());
    const auto& p = static_cast<const FastPacked&>(pw);
    const LinearDescriptor& d = p.descriptor();
    const int64_t N = d.N, K = d.K, seg = d.k_segment(), nseg = d.num_segments();
    if (M == 0) return;
    const bool par = M * N * K >= detail::kParallelMinWork;

    QuantizedActivations qa;
    if (!d.weight_only()) qa = quantize_activations(d, X, M, p.input_scale);
    // Activation scale per (row, segment) in f64; 1 for weight-only layers.
    std::vector<double> sx(static_cast<size_t>(M * nseg), 1.0);
    if (!d.weight_only())
      for (int64_t m = 0; m < M; ++m)
        for (int64_t s = 0; s < nseg; ++s) sx[static_cast<size_t>(m * nseg + s)] = qa.scale(m, s * seg);

    // Activation tiles of kMR rows (rows past M stay zero). Serial: O(M K) against the GEMM's
    // O(M N K), and one parallel region per run is all a busy 2-vCPU machine can afford.
    const int64_t mtiles = (M + kMR - 1) / kMR;
    std::vector<float> af;
    std::vector<int16_t> ai;
    if (p.int_path) {
      ai.assign(static_cast<size_t>(mtiles * p.kpairs * 2 * kMR), 0);
      for (int64_t m = 0; m < M; ++m) {
        const int64_t t = m / kMR, r = m % kMR;
        const int8_t* q = reinterpret_cast<const int8_t*>(qa.codes.data()) + m * K;
        for (int64_t k = 0; k < K; ++k)
          ai[static_cast<size_t>(((t * p.kpairs + k / 2) * kMR + r) * 2 + k % 2)] = q[k];
      }
    } else {
      af.assign(static_cast<size_t>(mtiles * K * kMR), 0.0f);
      const float* lut = detail::e4m3_table();
      const bool afp8 = d.act_type == ActType::Float8E4M3;
      for (int64_t m = 0; m < M; ++m) {
        const int64_t t = m / kMR, r = m % kMR;
        float* dst = af.data() + t * K * kMR + r;
        if (afp8)
          for (int64_t k = 0; k < K; ++k) dst[k * kMR] = lut[qa.codes[static_cast<size_t>(m * K + k)]];
        else
          for (int64_t k = 0; k < K; ++k) dst[k * kMR] = X[m * K + k];
      }
    }

    // The f32 micro-kernels: AVX-512 where the CPU has it (one zmm per panel row), else AVX2; the
    // same FMA chains, so the same bits (cpu_fast_avx512.h).
    const bool z = active_isa() == Isa::Avx512;
    const auto f32_tile = z ? avx512::fast_f32_tile : avx2::f32_tile;
    const auto gemv = z ? avx512::fast_gemv : avx2::gemv;
    const int64_t npad = p.panels * kNR;
    if (!p.int_path && M == 1) {  // decode GEMV: codes decoded in registers, 4 panels at a time
      const int64_t groups = (p.panels + avx2::kGemvPanels - 1) / avx2::kGemvPanels;
#pragma omp parallel if (par)
      {
        float acc[avx2::kGemvPanels * kNR];
        double Cd[avx2::kGemvPanels * kNR];
#pragma omp for schedule(dynamic, 1)
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t pn0 = g * avx2::kGemvPanels;
          const int np = static_cast<int>(std::min<int64_t>(avx2::kGemvPanels, p.panels - pn0));
          std::fill(Cd, Cd + avx2::kGemvPanels * kNR, 0.0);
          for (int64_t s = 0; s < nseg; ++s) {
            const int64_t k0 = s * seg, k1 = std::min(K, k0 + seg);
            gemv(np, p.fp8_w, af.data() + k0 * kMR, p.b.data() + (pn0 * K + k0) * kNR, K * kNR, k1 - k0, acc,
                 false);
            for (int q = 0; q < np; ++q)
              avx2::epilogue_f32(1, acc + q * kNR, sx.data() + s, nseg,
                                 p.sw.data() + s * npad + (pn0 + q) * kNR, Cd + q * kNR);
          }
          const int64_t n0 = pn0 * kNR, nn = std::min<int64_t>(np * kNR, N - n0);
          for (int64_t j = 0; j < nn; ++j) Y[n0 + j] = static_cast<float>(Cd[j]);
        }
      }
      return;
    }
    // Work unit: a chunk of up to kChunk panels. Inside it the f32 path runs k-blocks outermost,
    // so the activations' k-block (M x 256 floats) is reused from L2 by every panel of the chunk;
    // the INT8 path runs row tiles outermost, so a tile's activations stay in L1 across panels.
    const int64_t chunks = (p.panels + kChunk - 1) / kChunk;
    const int64_t tile = mtiles * kMR * kNR;  // accumulator elements per panel
#pragma omp parallel if (par)
    {
      std::vector<float> panel(p.int_path ? 0 : static_cast<size_t>(kKC * kNR));
      std::vector<float> accf(p.int_path ? 0 : static_cast<size_t>(kChunk * tile));
      std::vector<int32_t> acci(p.int_path ? static_cast<size_t>(kMR * kNR) : 0);
      std::vector<double> Cd(static_cast<size_t>(kChunk * tile));
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t pn0 = c * kChunk, np = std::min(kChunk, p.panels - pn0);
        std::fill(Cd.begin(), Cd.end(), 0.0);  // +0.0, as in detail::epilogue_term's contract
        for (int64_t s = 0; s < nseg; ++s) {
          const int64_t k0 = s * seg, k1 = std::min(K, k0 + seg);
          if (p.int_path) {
            const int64_t kp0 = k0 / 2, kp1 = (k1 + 1) / 2;  // k0 is even (can_implement)
            for (int64_t t = 0; t < mtiles; ++t) {
              const int rows = static_cast<int>(std::min<int64_t>(kMR, M - t * kMR));
              for (int64_t q = 0; q < np; ++q) {
                const int64_t pn = pn0 + q;
                const int8_t* B = reinterpret_cast<const int8_t*>(p.b.data()) + (pn * p.kpairs + kp0) * 2 * kNR;
                avx2::i8_tile(rows, ai.data() + (t * p.kpairs + kp0) * 2 * kMR, B, kp1 - kp0, acci.data());
                avx2::epilogue_i32(rows, acci.data(), sx.data() + t * kMR * nseg + s, nseg,
                                   p.sw.data() + s * npad + pn * kNR, Cd.data() + q * tile + t * kMR * kNR);
              }
            }
          } else {
            for (int64_t kc = k0; kc < k1; kc += kKC) {
              const int64_t kn = std::min(kKC, k1 - kc);
              for (int64_t q = 0; q < np; ++q) {
                const uint8_t* src = p.b.data() + ((pn0 + q) * K + kc) * kNR;
                if (p.fp8_w) avx2::decode_fp8_panel(src, kn, panel.data());
                else avx2::decode_int_panel(src, kn, panel.data());
                for (int64_t t = 0; t < mtiles; ++t) {
                  const int rows = static_cast<int>(std::min<int64_t>(kMR, M - t * kMR));
                  f32_tile(rows, af.data() + (t * K + kc) * kMR, panel.data(), kn,
                           accf.data() + q * tile + t * kMR * kNR, kc != k0);
                }
              }
            }
            for (int64_t q = 0; q < np; ++q)
              for (int64_t t = 0; t < mtiles; ++t) {
                const int rows = static_cast<int>(std::min<int64_t>(kMR, M - t * kMR));
                avx2::epilogue_f32(rows, accf.data() + q * tile + t * kMR * kNR,
                                   sx.data() + t * kMR * nseg + s, nseg,
                                   p.sw.data() + s * npad + (pn0 + q) * kNR,
                                   Cd.data() + q * tile + t * kMR * kNR);
              }
          }
        }
        for (int64_t q = 0; q < np; ++q) {
          const int64_t n0 = (pn0 + q) * kNR, nn = std::min<int64_t>(kNR, N - n0);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t j = 0; j < nn; ++j)
              Y[m * N + n0 + j] = static_cast<float>(Cd[static_cast<size_t>(q * tile + m * kNR + j)]);
        }
      }
    }
  }
};

}  // namespace

const Kernel& cpu_fast_kernel() {
  static const CpuFastKernel k;
  return k;
}

}  // namespace qt::kernels
