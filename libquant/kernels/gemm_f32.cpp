// Packed f32 GEMM of the forward pass (gemm.h). BLIS-style loop nest around the 6x16 f32
// micro-kernel that cpu_fast already has (libquant/kernels/cpu_fast_avx2.h): W is packed once
// per layer (gemm.h layout); each task runs every (K block, 16-column panel, 6-row tile) of its
// block through the micro-kernel, which reads x's rows in place (6 streams), so one panel's K
// block is reused by all tiles of the task while the task's x block stays in L2. Why not Eigen:
// its per-call packing of both operands cost ~10 % of the forward pass, while the weight is the
// same for every calibration sample (bench/RESULTS.md).
#include "libquant/gemm.h"
#include "libquant/parallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "libquant/vmath.h"
#include "libquant/error.h"
#include "libquant/kernels/cpu_fast_avx2.h"

namespace qt {
namespace {

namespace avx2 = qt::kernels::avx2;
constexpr int64_t kMR = avx2::kMR;  // 6 rows per micro-tile
constexpr int64_t kNR = avx2::kNR;  // 16 columns per panel

// Task and cache blocking (measured on the 2-core Zen 3 machine, bench/RESULTS.md). Results do
// not depend on them (see the numerics in gemm.h).
constexpr int64_t kTaskRows = 96;     // x rows per task (16 micro-tiles)
constexpr int64_t kTaskPanels = 8;    // 16-column panels per task (128 outputs)
// K per micro-kernel call. Blocking K for L1 (256: a 16 KB panel block) measured no better
// than streaming the panel from L2 (hardware prefetch keeps up), so only very long K is cut.
constexpr int64_t kKBlock = 1024;
constexpr int64_t kMinParallelFlops = int64_t{1} << 20;

}  // namespace

namespace {

// Scalar twin of avx2::f32_tile_rows: C[r][j] (=|+=) sum_k A[r * lda + k] * B[k][j], one
// std::fma chain per output in increasing k, hence bit-identical to the AVX2 kernel.
void f32_tile_scalar(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C, bool acc) {
  for (int r = 0; r < rows; ++r)
    for (int64_t j = 0; j < kNR; ++j) {
      float s = acc ? C[r * kNR + j] : 0.0f;
      for (int64_t k = 0; k < kn; ++k) s = std::fma(A[r * lda + k], B[k * kNR + j], s);
      C[r * kNR + j] = s;
    }
}

std::atomic<bool> g_force_scalar{false};

bool use_avx2() {
  static const bool ok = avx2::cpu_ok();
  return ok && !g_force_scalar.load(std::memory_order_relaxed);
}

}  // namespace

bool linear_uses_avx2() { return use_avx2(); }
void gemm_tile(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C, bool accumulate) {
  QT_ASSERT(rows >= 1 && rows <= kMR);
  if (use_avx2()) avx2::f32_tile_rows(rows, A, lda, B, kn, C, accumulate);
  else f32_tile_scalar(rows, A, lda, B, kn, C, accumulate);
}

void linear_force_scalar(bool on) { g_force_scalar.store(on, std::memory_order_relaxed); }

// Panels from row pointers: slot (panel pi, column j) holds row[pi * 16 + j] (nullptr: zeros).
std::vector<float> pack_rows(const std::vector<const float*>& row, int64_t in, int threads) {
  const int64_t npanels = static_cast<int64_t>(row.size()) / kNR;
  std::vector<float> panels(static_cast<size_t>(npanels * in * kNR), 0.0f);
  const int nth = resolve_threads(threads);
  (void)nth;
#pragma omp parallel for schedule(static) num_threads(nth) if (npanels * kNR * in >= (int64_t{1} << 18))
  for (int64_t pi = 0; pi < npanels; ++pi) {
    float* dst = panels.data() + pi * in * kNR;
    for (int64_t j = 0; j < kNR; ++j) {
      const float* src = row[static_cast<size_t>(pi * kNR + j)];
      if (src)
        for (int64_t k = 0; k < in; ++k) dst[k * kNR + j] = src[k];
    }
  }
  return panels;
}

PackedLinear pack_linear(const std::vector<WeightPart>& parts, int64_t in, int threads) {
  PackedLinear p;
  p.in = in;
  for (const auto& part : parts) p.out += part.rows;
  QT_ASSERT(in > 0 && p.out > 0);
  // Row n of the concatenation -> (part, row within part); slots past N stay null (zeros).
  std::vector<const float*> row(static_cast<size_t>((p.out + kNR - 1) / kNR * kNR), nullptr);
  int64_t n = 0;
  for (const auto& part : parts)
    for (int64_t r = 0; r < part.rows; ++r) row[static_cast<size_t>(n++)] = part.w + r * (part.ld ? part.ld : in);
  p.panels = pack_rows(row, in, threads);
  return p;
}

PackedLinear pack_glu(const float* gate, const float* up, int64_t I, int64_t in, int threads) {
  PackedLinear p;
  p.in = in, p.out = I, p.glu = true;
  QT_ASSERT(in > 0 && I > 0);
  const int64_t pairs = (I + kNR - 1) / kNR;
  std::vector<const float*> row(static_cast<size_t>(2 * pairs * kNR), nullptr);
  for (int64_t i = 0; i < I; ++i) {
    const int64_t pair = i / kNR, j = i % kNR;
    row[static_cast<size_t>((2 * pair) * kNR + j)] = gate + i * in;
    row[static_cast<size_t>((2 * pair + 1) * kNR + j)] = up + i * in;
  }
  p.panels = pack_rows(row, in, threads);
  return p;
}

void linear_packed(const float* x, int64_t T, const PackedLinear& W, const float* bias,
                   const std::vector<OutputColumns>& outs, bool add_to_output, int threads) {
  const int64_t K = W.in, N = W.out;
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
  const int64_t npanels = static_cast<int64_t>(W.panels.size()) / (K * kNR);
  static_assert(kTaskPanels % 2 == 0, "GLU pairs must not straddle tasks");
  const int64_t row_tasks = (T + kTaskRows - 1) / kTaskRows;
  const int64_t col_tasks = (npanels + kTaskPanels - 1) / kTaskPanels;
  const int64_t tasks = row_tasks * col_tasks;
  const bool avx = use_avx2();
  const int nth = resolve_threads(threads);
  (void)nth;
#pragma omp parallel num_threads(nth) if (tasks > 1 && T * K * N >= kMinParallelFlops)
  {
    // Per-thread accumulators of a task, [panel][tile][6][16], reused across tasks (no
    // zero-fill: the first K block writes before anything reads). x is read in place by the
    // micro-kernel (6 row streams), so no packing of x.
    const int64_t tiles_max = (kTaskRows + kMR - 1) / kMR;
    std::unique_ptr<float[]> acc(new float[static_cast<size_t>(kTaskPanels * tiles_max * kMR * kNR)]);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t t0 = (task / col_tasks) * kTaskRows, p0 = (task % col_tasks) * kTaskPanels;
      const int64_t mt = std::min(kTaskRows, T - t0), np = std::min(kTaskPanels, npanels - p0);
      const int64_t tiles = (mt + kMR - 1) / kMR;
      const int64_t tile_floats = kMR * kNR;
      for (int64_t k0 = 0; k0 < K; k0 += kKBlock) {
        const int64_t kn = std::min(kKBlock, K - k0);
        for (int64_t q = 0; q < np; ++q) {
          const float* panel = W.panels.data() + ((p0 + q) * K + k0) * kNR;
          for (int64_t i = 0; i < tiles; ++i) {
            const int rows = static_cast<int>(std::min(kMR, mt - i * kMR));
            const float* a = x + (t0 + i * kMR) * K + k0;
            float* c = acc.get() + (q * tiles + i) * tile_floats;
            if (avx) avx2::f32_tile_rows(rows, a, K, panel, kn, c, k0 > 0);
            else f32_tile_scalar(rows, a, K, panel, kn, c, k0 > 0);  // same bits
          }
        }
      }
      if (W.glu) {
        // m = silu(gate + bg) * (up + bu), 16 columns per (gate, up) panel pair, through the
        // same silu_mul_f32 as the unfused path (same bits).
        const OutputColumns& o = outs[0];
        float g[kNR], u[kNR];
        for (int64_t q = 0; q < np; q += 2) {
          const int64_t n0 = (p0 + q) / 2 * kNR, nn = std::min(kNR, N - n0);
          for (int64_t i = 0; i < tiles; ++i) {
            const int64_t rows = std::min(kMR, mt - i * kMR);
            const float* cg = acc.get() + (q * tiles + i) * tile_floats;
            const float* cu = acc.get() + ((q + 1) * tiles + i) * tile_floats;
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t j = 0; j < nn; ++j) {
                g[j] = bias ? cg[r * kNR + j] + bias[n0 + j] : cg[r * kNR + j];
                u[j] = bias ? cu[r * kNR + j] + bias[N + n0 + j] : cu[r * kNR + j];
              }
              silu_mul_f32(g, u, o.y + (t0 + i * kMR + r) * o.ldy + n0, nn);
            }
          }
        }
        continue;
      }
      // Scatter; the bias is one f32 addition after the chain (addmm's beta * C term), then the
      // optional residual addition.
      for (int64_t q = 0; q < np; ++q) {
        const int64_t n0 = (p0 + q) * kNR, nn = std::min(kNR, N - n0);
        for (int64_t j0 = 0; j0 < nn;) {  // runs of columns within one output segment
          const int32_t sg = seg_of[static_cast<size_t>(n0 + j0)];
          const OutputColumns& o = outs[static_cast<size_t>(sg)];
          const int64_t run = std::min(nn - j0, seg_c0[static_cast<size_t>(sg)] + o.cols - (n0 + j0));
          const int64_t oc = n0 + j0 - seg_c0[static_cast<size_t>(sg)];
          const float* b = bias ? bias + n0 + j0 : nullptr;
          for (int64_t i = 0; i < tiles; ++i) {
            const int64_t rows = std::min(kMR, mt - i * kMR);
            const float* c = acc.get() + (q * tiles + i) * tile_floats + j0;
            for (int64_t r = 0; r < rows; ++r) {
              float* yr = o.y + (t0 + i * kMR + r) * o.ldy + oc;
              const float* cr = c + r * kNR;
              if (add_to_output) {
                if (b) for (int64_t j = 0; j < run; ++j) yr[j] = yr[j] + (cr[j] + b[j]);
                else for (int64_t j = 0; j < run; ++j) yr[j] = yr[j] + cr[j];
              } else {
                if (b) for (int64_t j = 0; j < run; ++j) yr[j] = cr[j] + b[j];
                else std::memcpy(yr, cr, sizeof(float) * static_cast<size_t>(run));
              }
            }
          }
          j0 += run;
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

}  // namespace qt
