// Packed f32 GEMM of the forward pass (gemm.h). BLIS-style loop nest around a micro-kernel picked
// at run time (libquant/cpu_isa.h): AVX-512 12 x 16 (kernels/gemm_avx512.h), AVX2 6 x 16 (the one
// cpu_fast already has, libquant/kernels/cpu_fast_avx2.h), or the scalar twin; all three compute
// the same FMA chains. W is packed once per layer (gemm.h layout); each task runs every (K block,
// 16-column panel, row tile) of its block through the micro-kernel, which reads x's rows in place,
// so one panel's K block is reused by all tiles of the task while the task's x block stays in L2.
// bf16 precision: the same loop nest over bf16 panels and a bf16 copy of x, with the AVX512-BF16
// kernel or its scalar emulation. Why not Eigen: its per-call packing of both operands cost ~10 %
// of the forward pass, while the weight is the same for every calibration sample (bench/RESULTS.md).
#include "libquant/gemm.h"
#include "libquant/parallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <memory>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "libquant/cpu_isa.h"
#include "libquant/vmath.h"
#include "libquant/error.h"
#include "libquant/kernels/cpu_fast_avx2.h"
#include "libquant/kernels/gemm_avx512.h"
#include "libquant/kernels/gemm_onednn.h"

namespace qt {
namespace {

namespace avx2 = qt::kernels::avx2;
namespace avx512 = qt::kernels::avx512;
constexpr int64_t kNR = avx2::kNR;  // 16 columns per panel
static_assert(avx512::kNR == kNR, "one panel layout for every ISA");
constexpr int64_t kMaxMR = avx512::kMR;  // the largest row tile (12); AVX2 and scalar use 6

// Task and cache blocking (measured on the 2-core Zen 3 machine, bench/RESULTS.md). Results do
// not depend on them (see the numerics in gemm.h).
constexpr int64_t kTaskRows = 96;     // x rows per task (16 AVX2 / 8 AVX-512 micro-tiles)
constexpr int64_t kTaskPanels = 8;    // 16-column panels per task (128 outputs)
static_assert(kTaskRows % 12 == 0 && kTaskRows % 6 == 0, "whole tiles per task");
// K per micro-kernel call. Blocking K for L1 (256: a 16 KB panel block) measured no better
// than streaming the panel from L2 (hardware prefetch keeps up), so only very long K is cut.
// Even, so that a bf16 k pair never straddles two blocks.
constexpr int64_t kKBlock = 1024;
constexpr int64_t kMinParallelFlops = int64_t{1} << 20;

}  // namespace

const char* precision_name(GemmPrecision p) { return p == GemmPrecision::BF16 ? "bf16" : "f32"; }

bool parse_precision(const std::string& name, GemmPrecision& out) {
  if (name == "f32") return out = GemmPrecision::F32, true;
  if (name == "bf16") return out = GemmPrecision::BF16, true;
  return false;
}

uint16_t bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);  // zero, subnormal
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even (overflow to inf is correct)
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

namespace {

// The f32 value with subnormals flushed to (signed) zero: vdpbf16ps's inputs and outputs.
inline float ftz(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// One vdpbf16ps lane step: acc + a[1] b[1], then + a[0] b[0]; the products of two bf16 are exact
// in f32, so each step is one fma rounded to nearest even, flushed to zero.
inline float dp_pair(float acc, const uint16_t* a, const uint16_t* b) {
  acc = ftz(std::fma(ftz(bf16_to_f32(a[1])), ftz(bf16_to_f32(b[1])), acc));
  return ftz(std::fma(ftz(bf16_to_f32(a[0])), ftz(bf16_to_f32(b[0])), acc));
}

// Scalar twin of avx2::f32_tile_rows / avx512::f32_tile_rows: C[r][j] (=|+=) sum_k A[r * lda + k]
// * B[k][j], one std::fma chain per output in increasing k, hence bit-identical to both.
void f32_tile_scalar(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C, bool acc) {
  for (int r = 0; r < rows; ++r)
    for (int64_t j = 0; j < kNR; ++j) {
      float s = acc ? C[r * kNR + j] : 0.0f;
      for (int64_t k = 0; k < kn; ++k) s = std::fma(A[r * lda + k], B[k * kNR + j], s);
      C[r * kNR + j] = s;
    }
}

// Scalar emulation of avx512::bf16_tile_rows (same bits).
void bf16_tile_scalar(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C,
                      bool acc) {
  for (int r = 0; r < rows; ++r)
    for (int64_t j = 0; j < kNR; ++j) {
      float s = acc ? C[r * kNR + j] : 0.0f;
      for (int64_t p = 0; p < kpn; ++p) s = dp_pair(s, A + r * lda + 2 * p, B + (p * kNR + j) * 2);
      C[r * kNR + j] = s;
    }
}

// Copies n <= 16 floats (a panel row) inline: a full row is a fixed-size copy the compiler
// expands, where a memcpy call per 64 bytes cost more than the copy.
inline void copy_upto16(float* dst, const float* src, int64_t n) {
  if (n == kNR) std::memcpy(dst, src, sizeof(float) * kNR);
  else for (int64_t j = 0; j < n; ++j) dst[j] = src[j];
}

std::atomic<bool> g_force_scalar{false};
// AVX-512 (f32) and AVX512-BF16: two panels per micro-kernel call (avx512::f32_tile2_rows,
// bf16_tile2_rows) unless QTOOL_GEMM_TILE=12x16 asks for the one-panel kernels -- a benchmark
// switch for before/after timings in one binary; both give the same bits.
const bool g_two_panels = [] {
  const char* v = std::getenv("QTOOL_GEMM_TILE");
  return !(v && std::string(v) == "12x16");
}();

Isa gemm_isa() { return g_force_scalar.load(std::memory_order_relaxed) ? Isa::Scalar : active_isa(); }
bool bf16_hw() { return !g_force_scalar.load(std::memory_order_relaxed) && bf16_hardware(); }

}  // namespace

// The own bf16 chain on the best path this CPU has: AVX512-BF16 (rows 1..12), else the AVX2 + FMA
// emulation (six rows per call), else the scalar emulation -- the same bits on all three.
static void bf16_tile_own(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C, bool acc) {
  if (bf16_hw()) {
    avx512::bf16_tile_rows(rows, A, lda, B, kpn, C, acc);
  } else if (gemm_isa() != Isa::Scalar) {
    for (int r0 = 0; r0 < rows; r0 += avx2::kMR)
      avx2::bf16_tile_rows(std::min(avx2::kMR, rows - r0), A + r0 * lda, lda, B, kpn, C + r0 * kNR, acc);
  } else {
    bf16_tile_scalar(rows, A, lda, B, kpn, C, acc);
  }
}

bool linear_uses_avx2() { return gemm_isa() != Isa::Scalar; }

void bf16_round_row(const float* src, uint16_t* dst, int64_t n) {
  if (bf16_hw()) avx512::f32_to_bf16(src, dst, n);
  else for (int64_t k = 0; k < n; ++k) dst[k] = bf16_round(src[k]);
}
void gemm_tile(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C, bool accumulate) {
  QT_ASSERT(rows >= 1 && rows <= kTileRows);
  switch (gemm_isa()) {
    case Isa::Avx512: avx512::f32_tile_rows(rows, A, lda, B, kn, C, accumulate); break;
    case Isa::Avx2: avx2::f32_tile_rows(rows, A, lda, B, kn, C, accumulate); break;
    default: f32_tile_scalar(rows, A, lda, B, kn, C, accumulate); break;
  }
}

void gemm_tile_bf16(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C,
                    bool accumulate) {
  QT_ASSERT(rows >= 1 && rows <= kTileRows && lda % 2 == 0);
  bf16_tile_own(rows, A, lda, B, kpn, C, accumulate);
}

void linear_force_scalar(bool on) { g_force_scalar.store(on, std::memory_order_relaxed); }

// Panels from row pointers: slot (panel pi, column j) holds row[pi * 16 + j] (nullptr: zeros).
// f32: [k][16] per panel; bf16: [k/2][16][2] per panel, K padded to even with zeros.
// Every slot is written (zeros included), so reused memory needs no clearing first. K is walked in
// blocks (kPackK values) so that the block's panel rows stay in L1 while the 16 source rows are
// transposed into them; bf16 rows are rounded a block at a time (AVX512-BF16's conversion where
// present: the same bits as bf16_round, test_gemm), then moved as k pairs (32-bit words).
void pack_rows(const std::vector<const float*>& row, int64_t in, int threads, PackedLinear& p) {
  constexpr int64_t kPackK = 256;  // even: a bf16 k pair never straddles two blocks
  const int64_t npanels = static_cast<int64_t>(row.size()) / kNR;
  const bool bf16 = p.precision == GemmPrecision::BF16;
  const int64_t kp = (in + 1) / 2;
  if (bf16 && !g_force_scalar.load(std::memory_order_relaxed) && bf16_backend() == Bf16Backend::Onednn) {
    // oneDNN's layout, one block per task's columns (linear_packed); p.onednn keeps its memory.
    kernels::onednn::pack(p.onednn, row, in, kTaskPanels * kNR, threads);
    std::vector<float>().swap(p.panels);
    std::vector<uint16_t>().swap(p.panels_bf16);
    return;
  }
  p.onednn.reset();
  // resize keeps the vector's memory when it is large enough (pack_linear_into reuse).
  if (bf16) {
    p.panels_bf16.resize(static_cast<size_t>(npanels * kp * kNR * 2));
    std::vector<float>().swap(p.panels);
  } else {
    p.panels.resize(static_cast<size_t>(npanels * in * kNR));
    std::vector<uint16_t>().swap(p.panels_bf16);
  }
  const int nth = resolve_threads(threads);
  (void)nth;
#pragma omp parallel for schedule(static) num_threads(nth) if (npanels * kNR * in >= (int64_t{1} << 18))
  for (int64_t pi = 0; pi < npanels; ++pi) {
    uint16_t tmp[kPackK];
    for (int64_t k0 = 0; k0 < in; k0 += kPackK) {
      const int64_t kn = std::min(kPackK, in - k0);
      if (bf16) {
        // [kp][16] 32-bit words (one k pair each) from k pair k0 / 2 on.
        uint16_t* dst = p.panels_bf16.data() + (pi * kp + k0 / 2) * kNR * 2;
        const int64_t pairs = (kn + 1) / 2;
        for (int64_t j = 0; j < kNR; ++j) {
          const float* src = row[static_cast<size_t>(pi * kNR + j)];
          if (!src) {
            std::fill(tmp, tmp + 2 * pairs, uint16_t{0});
          } else {
            bf16_round_row(src + k0, tmp, kn);
            if (kn % 2) tmp[kn] = 0;  // an odd K's pair partner
          }
          for (int64_t q = 0; q < pairs; ++q) std::memcpy(dst + (q * kNR + j) * 2, tmp + 2 * q, 4);
        }
      } else {
        float* dst = p.panels.data() + (pi * in + k0) * kNR;
        for (int64_t j = 0; j < kNR; ++j) {
          const float* src = row[static_cast<size_t>(pi * kNR + j)];
          if (!src) for (int64_t k = 0; k < kn; ++k) dst[k * kNR + j] = 0.0f;
          else for (int64_t k = 0; k < kn; ++k) dst[k * kNR + j] = src[k0 + k];
        }
      }
    }
  }
}

PackedLinear pack_linear(const std::vector<WeightPart>& parts, int64_t in, int threads, GemmPrecision precision) {
  PackedLinear p;
  pack_linear_into(p, parts, in, threads, precision);
  return p;
}

void pack_linear_into(PackedLinear& p, const std::vector<WeightPart>& parts, int64_t in, int threads,
                      GemmPrecision precision) {
  p.precision = precision;
  p.in = in;
  p.out = 0;
  p.glu = false;
  for (const auto& part : parts) p.out += part.rows;
  QT_ASSERT(in > 0 && p.out > 0);
  // Row n of the concatenation -> (part, row within part); slots past N stay null (zeros).
  std::vector<const float*> row(static_cast<size_t>((p.out + kNR - 1) / kNR * kNR), nullptr);
  int64_t n = 0;
  for (const auto& part : parts)
    for (int64_t r = 0; r < part.rows; ++r) row[static_cast<size_t>(n++)] = part.w + r * (part.ld ? part.ld : in);
  pack_rows(row, in, threads, p);
}

PackedLinear pack_glu(const float* gate, const float* up, int64_t I, int64_t in, int threads, GemmPrecision precision) {
  PackedLinear p;
  pack_glu_into(p, gate, up, I, in, threads, precision);
  return p;
}

void pack_glu_into(PackedLinear& p, const float* gate, const float* up, int64_t I, int64_t in, int threads,
                   GemmPrecision precision) {
  p.precision = precision;
  p.in = in, p.out = I, p.glu = true;
  QT_ASSERT(in > 0 && I > 0);
  const int64_t pairs = (I + kNR - 1) / kNR;
  std::vector<const float*> row(static_cast<size_t>(2 * pairs * kNR), nullptr);
  for (int64_t i = 0; i < I; ++i) {
    const int64_t pair = i / kNR, j = i % kNR;
    row[static_cast<size_t>((2 * pair) * kNR + j)] = gate + i * in;
    row[static_cast<size_t>((2 * pair + 1) * kNR + j)] = up + i * in;
  }
  pack_rows(row, in, threads, p);
}

void linear_packed(const float* x, int64_t T, const PackedLinear& W, const float* bias,
                   const std::vector<OutputColumns>& outs, bool add_to_output, int threads) {
  const int64_t K = W.in, N = W.out;
  const bool bf16 = W.precision == GemmPrecision::BF16;
  {
    int64_t cols = 0;
    for (const auto& o : outs) QT_ASSERT(o.cols > 0 && o.ldy >= o.cols), cols += o.cols;
    QT_ASSERT(cols == N);
    QT_ASSERT(!W.glu || (outs.size() == 1 && !add_to_output));
  }
  if (T <= 0) return;
  // Output column n -> (segment, column within it), looked up per 16-column panel.
  std::vector<int32_t> seg_of(static_cast<size_t>(N));
  std::vector<int64_t> seg_c0(outs.size());
  {
    int64_t n = 0;
    for (size_t s = 0; s < outs.size(); ++s) {
      seg_c0[s] = n;
      for (int64_t j = 0; j < outs[s].cols; ++j) seg_of[static_cast<size_t>(n++)] = static_cast<int32_t>(s);
    }
  }
  const int64_t Kp = (K + 1) / 2;  // bf16 k pairs
  const int64_t npanels = (W.glu ? 2 : 1) * ((N + kNR - 1) / kNR);
  const bool dnn = bf16 && W.onednn;  // oneDNN computes each task's block (gemm_onednn.h)
  QT_ASSERT(dnn || npanels == (bf16 ? static_cast<int64_t>(W.panels_bf16.size()) / (Kp * kNR * 2)
                                    : static_cast<int64_t>(W.panels.size()) / (K * kNR)));
  static_assert(kTaskPanels % 2 == 0, "GLU pairs must not straddle tasks");
  const int64_t row_tasks = (T + kTaskRows - 1) / kTaskRows;
  const int64_t col_tasks = (npanels + kTaskPanels - 1) / kTaskPanels;
  const int64_t tasks = row_tasks * col_tasks;
  const Isa isa = gemm_isa();
  const bool hw16 = bf16 && bf16_hw();
  // Rows per micro-tile: 12 where 32 vector registers hold 12 accumulators, else 6.
  const int64_t mr = bf16 || isa == Isa::Avx512 ? kMaxMR : 6;
  // A task's accumulators: [panel][tile][mr][16] for the micro-kernels (panel q's row r at
  // q * acc_q + r * 16), [row][128] for oneDNN (at q * 16 + r * 128).
  const int64_t acc_row = dnn ? kTaskPanels * kNR : kNR;
  // oneDNN's row counts are whole multiples of 16 (zero rows of x past T), so that samples of
  // every length share a few primitives (each is JIT-compiled code) instead of one per T % 96.
  auto dnn_rows = [](int64_t rows) { return (rows + 15) / 16 * 16; };
  const int64_t x_rows = dnn ? dnn_rows(T) : T;
  if (dnn) {
    kernels::onednn::prepare(*W.onednn, dnn_rows(std::min(kTaskRows, T)), 2 * Kp, acc_row);
    if (T > kTaskRows && T % kTaskRows) kernels::onednn::prepare(*W.onednn, dnn_rows(T % kTaskRows), 2 * Kp, acc_row);
  }
  const int nth = resolve_threads(threads);
  (void)nth;
  const bool par = tasks > 1 && T * K * N >= kMinParallelFlops;
  // bf16: x rounded to bf16 once per call, rows of 2 Kp (an odd K's pair partner is 0).
  // (In the same parallel region as the product: one fork per call.)
  std::unique_ptr<uint16_t[]> xb;
  if (bf16) xb.reset(new uint16_t[static_cast<size_t>(x_rows * 2 * Kp)]);
  if (x_rows > T) std::memset(xb.get() + T * 2 * Kp, 0, sizeof(uint16_t) * static_cast<size_t>((x_rows - T) * 2 * Kp));
#pragma omp parallel num_threads(nth) if (par)
  {
    if (bf16) {
#pragma omp for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        uint16_t* dst = xb.get() + t * 2 * Kp;
        bf16_round_row(x + t * K, dst, K);
        if (K % 2) dst[K] = 0;
      }  // implicit barrier: every row is converted before any task reads it
    }
    // Per-thread accumulators of a task, [panel][tile][mr][16], reused across tasks (no
    // zero-fill: the first K block writes before anything reads). x is read in place by the
    // micro-kernel (mr row streams), so no packing of x.
    std::unique_ptr<float[]> acc(new float[static_cast<size_t>(kTaskPanels * kTaskRows * kNR)]);
    // A GLU task's products m, [pair][row][16], and the up values of one panel pair.
    std::unique_ptr<float[]> glu_g, glu_u;
    if (W.glu) glu_g.reset(new float[static_cast<size_t>(kTaskPanels / 2 * kTaskRows * kNR)]), glu_u.reset(new float[static_cast<size_t>(kTaskRows * kNR)]);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t t0 = (task / col_tasks) * kTaskRows, p0 = (task % col_tasks) * kTaskPanels;
      const int64_t mt = std::min(kTaskRows, T - t0), np = std::min(kTaskPanels, npanels - p0);
      const int64_t tiles = (mt + mr - 1) / mr;
      const int64_t tile_floats = mr * kNR;
      const int64_t acc_q = dnn ? kNR : tiles * tile_floats;
      if (dnn)
        kernels::onednn::block_product(*W.onednn, task % col_tasks, xb.get() + t0 * 2 * Kp, 2 * Kp, dnn_rows(mt), acc.get(),
                                       acc_row);
      for (int64_t k0 = 0; k0 < K && !dnn; k0 += kKBlock) {
        const int64_t kn = std::min(kKBlock, K - k0);
        for (int64_t q = 0; q < np; ++q) {
          if (!bf16 && isa == Isa::Avx512 && g_two_panels && q + 1 < np) {
            // Panels q and q + 1 together, six rows at a time (the same chains, same bits).
            const float* p0f = W.panels.data() + ((p0 + q) * K + k0) * kNR;
            const float* p1f = W.panels.data() + ((p0 + q + 1) * K + k0) * kNR;
            for (int64_t i = 0; i < tiles; ++i) {
              const int64_t rows = std::min(mr, mt - i * mr);
              float* c0 = acc.get() + (q * tiles + i) * tile_floats;
              float* c1 = acc.get() + ((q + 1) * tiles + i) * tile_floats;
              for (int64_t r0 = 0; r0 < rows; r0 += 6)
                avx512::f32_tile2_rows(static_cast<int>(std::min<int64_t>(6, rows - r0)), x + (t0 + i * mr + r0) * K + k0,
                                       K, p0f, p1f, kn, c0 + r0 * kNR, c1 + r0 * kNR, k0 > 0);
            }
            ++q;
            continue;
          }
          if (bf16 && hw16 && g_two_panels && q + 1 < np) {
            // Panels q and q + 1 together, six rows at a time (the same chains, same bits).
            const uint16_t* p0b = W.panels_bf16.data() + ((p0 + q) * Kp + k0 / 2) * kNR * 2;
            const uint16_t* p1b = W.panels_bf16.data() + ((p0 + q + 1) * Kp + k0 / 2) * kNR * 2;
            for (int64_t i = 0; i < tiles; ++i) {
              const int64_t rows = std::min(mr, mt - i * mr);
              float* c0 = acc.get() + (q * tiles + i) * tile_floats;
              float* c1 = acc.get() + ((q + 1) * tiles + i) * tile_floats;
              for (int64_t r0 = 0; r0 < rows; r0 += 6) {
                const uint16_t* a = xb.get() + (t0 + i * mr + r0) * 2 * Kp + k0;
                avx512::bf16_tile2_rows(static_cast<int>(std::min<int64_t>(6, rows - r0)), a, 2 * Kp, p0b, p1b,
                                        (kn + 1) / 2, c0 + r0 * kNR, c1 + r0 * kNR, k0 > 0);
              }
            }
            ++q;
            continue;
          }
          for (int64_t i = 0; i < tiles; ++i) {
            const int rows = static_cast<int>(std::min(mr, mt - i * mr));
            float* c = acc.get() + (q * tiles + i) * tile_floats;
            if (bf16) {
              const uint16_t* panel = W.panels_bf16.data() + ((p0 + q) * Kp + k0 / 2) * kNR * 2;
              const uint16_t* a = xb.get() + (t0 + i * mr) * 2 * Kp + k0;
              bf16_tile_own(rows, a, 2 * Kp, panel, (kn + 1) / 2, c, k0 > 0);  // same bits on every path
              continue;
            }
            const float* panel = W.panels.data() + ((p0 + q) * K + k0) * kNR;
            const float* a = x + (t0 + i * mr) * K + k0;
            switch (isa) {  // same bits on every path
              case Isa::Avx512: avx512::f32_tile_rows(rows, a, K, panel, kn, c, k0 > 0); break;
              case Isa::Avx2: avx2::f32_tile_rows(rows, a, K, panel, kn, c, k0 > 0); break;
              default: f32_tile_scalar(rows, a, K, panel, kn, c, k0 > 0); break;
            }
          }
        }
      }
      if (W.glu) {
        // m = silu(gate + bg) * (up + bu), 16 columns per (gate, up) panel pair, through the
        // same silu_mul_f32 as the unfused path (same bits): one call per panel pair over all
        // the task's rows (an elementwise function: the same bits as per row), into g as
        // [pair][row][16], then written out row by row (each output row's block in one go).
        // The own kernels' accumulators of a full panel are already [row][16] in a row: without
        // a bias, silu_mul_f32 reads them in place.
        const OutputColumns& o = outs[0];
        float* g = glu_g.get();
        float* u = glu_u.get();
        const int64_t pairs = np / 2;  // np is even: GLU pairs never straddle tasks
        for (int64_t q = 0; q < np; q += 2) {
          const int64_t n0 = (p0 + q) / 2 * kNR, nn = std::min(kNR, N - n0);
          float* gq = g + q / 2 * mt * kNR;
          if (!bias && nn == kNR && acc_row == kNR) {
            silu_mul_f32(acc.get() + q * acc_q, acc.get() + (q + 1) * acc_q, gq, mt * kNR);
            continue;
          }
          for (int64_t r = 0; r < mt; ++r) {
            const float* cg = acc.get() + q * acc_q + r * acc_row;
            const float* cu = acc.get() + (q + 1) * acc_q + r * acc_row;
            float* gr = gq + r * nn;
            float* ur = u + r * nn;
            for (int64_t j = 0; j < nn; ++j) {
              gr[j] = bias ? cg[j] + bias[n0 + j] : cg[j];
              ur[j] = bias ? cu[j] + bias[N + n0 + j] : cu[j];
            }
          }
          silu_mul_f32(gq, u, gq, mt * nn);
        }
        for (int64_t r = 0; r < mt; ++r) {
          float* yr = o.y + (t0 + r) * o.ldy + p0 / 2 * kNR;
          for (int64_t pq = 0; pq < pairs; ++pq) {
            const int64_t nn = std::min(kNR, N - (p0 / 2 + pq) * kNR);
            copy_upto16(yr + pq * kNR, g + pq * mt * kNR + r * nn, nn);
          }
        }
        continue;
      }
      // Scatter; the bias is one f32 addition after the chain (addmm's beta * C term), then the
      // optional residual addition. The task's columns as runs within one output segment, then
      // row by row (each output row's block in one go: outputs rows apart are pages apart).
      struct Run {
        float* y;           // the segment's first output, this run's column
        int64_t ldy;
        const float* b;     // its bias, or null
        int64_t acc_off;    // the run's first accumulator of row 0
        int64_t n;          // columns
      };
      Run runs[kTaskPanels * kNR];
      int nruns = 0;
      for (int64_t q = 0; q < np; ++q) {
        const int64_t n0 = (p0 + q) * kNR, nn = std::min(kNR, N - n0);
        for (int64_t j0 = 0; j0 < nn;) {
          const int32_t sg = seg_of[static_cast<size_t>(n0 + j0)];
          const OutputColumns& o = outs[static_cast<size_t>(sg)];
          const int64_t run = std::min(nn - j0, seg_c0[static_cast<size_t>(sg)] + o.cols - (n0 + j0));
          const int64_t oc = n0 + j0 - seg_c0[static_cast<size_t>(sg)];
          runs[nruns++] = {o.y + oc, o.ldy, bias ? bias + n0 + j0 : nullptr, q * acc_q + j0, run};
          j0 += run;
        }
      }
      for (int64_t r = 0; r < mt; ++r)
        for (int i = 0; i < nruns; ++i) {
          const Run& rn = runs[i];
          float* yr = rn.y + (t0 + r) * rn.ldy;
          const float* cr = acc.get() + rn.acc_off + r * acc_row;
          const float* b = rn.b;
          if (add_to_output) {
            if (b) for (int64_t j = 0; j < rn.n; ++j) yr[j] = yr[j] + (cr[j] + b[j]);
            else for (int64_t j = 0; j < rn.n; ++j) yr[j] = yr[j] + cr[j];
          } else {
            if (b) for (int64_t j = 0; j < rn.n; ++j) yr[j] = cr[j] + b[j];
            else copy_upto16(yr, cr, rn.n);
          }
        }
    }
  }
}

void linear_packed(const float* x, int64_t T, const PackedLinear& W, const float* bias, float* y,
                   int64_t ldy, int threads) {
  linear_packed(x, T, W, bias, {OutputColumns{y, ldy, W.out}}, false, threads);
}

void linear_ref(const float* x, int64_t T, const float* w, int64_t N, int64_t K, const float* bias,
                float* y, int64_t ldy) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s = std::fma(x[t * K + k], w[n * K + k], s);
      y[t * ldy + n] = bias ? s + bias[n] : s;
    }
}

void linear_ref_bf16(const float* x, int64_t T, const float* w, int64_t N, int64_t K, const float* bias,
                     float* y, int64_t ldy) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; k += 2) {
        const uint16_t a[2] = {bf16_round(x[t * K + k]), k + 1 < K ? bf16_round(x[t * K + k + 1]) : uint16_t{0}};
        const uint16_t b[2] = {bf16_round(w[n * K + k]), k + 1 < K ? bf16_round(w[n * K + k + 1]) : uint16_t{0}};
        s = dp_pair(s, a, b);
      }
      y[t * ldy + n] = bias ? s + bias[n] : s;
    }
}

}  // namespace qt
