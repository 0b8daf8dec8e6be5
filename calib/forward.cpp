#include "calib/forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <new>
#include <stdexcept>
#include <cstring>
#include <limits>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "libquant/gemm.h"
#include "libquant/parallel.h"
#include "calib/hidden_store.h"
#include "libquant/vmath.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"

namespace qt::calib {
namespace {

using Kind = InputError::Kind;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Queries per attention task. Results do not depend on it (each score and output is one FMA
// chain, gemm.h) nor on the thread count.
constexpr int64_t kQueryBlock = 64;
// Below these amounts of work a parallel region costs more than it saves (and on a busy machine
// far more: waking threads that spin at a barrier). Only whether to fork depends on them, never
// the partition, so results are unaffected.
constexpr int64_t kMinParallelFlops = int64_t{1} << 20;
constexpr int64_t kMinParallelElems = int64_t{1} << 15;

std::string shape_str(const std::vector<int64_t>& s) { return shape_string(s); }

// ---- kernels -------------------------------------------------------------------------------

// Over `rows` rows of `n` values with row stride n, from src to dst (may be the same buffer):
//   y = w * (x * (1 / sqrt(var + eps))),  var = f32(sum(x^2) / n) with the sum in double.
// transformers: x.pow(2).mean() in f32, rsqrt(var + eps), x * r, then weight * that.
void rms_norm_to(const float* src, float* dst, int64_t rows, int64_t n, const float* w, float eps,
                 int threads) {
  (void)threads;
  // Four rows per task: their sums of squares (each its own chain, i ascending) run side by side.
  const int64_t groups = (rows + 3) / 4;
#pragma omp parallel for schedule(static) num_threads(threads) if (rows * n >= kMinParallelElems)
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t r0 = gi * 4, nr = std::min<int64_t>(4, rows - r0);
    double ss[4] = {0.0, 0.0, 0.0, 0.0};
    if (nr == 4) {
      const float *x0 = src + r0 * n, *x1 = x0 + n, *x2 = x1 + n, *x3 = x2 + n;
      double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
      for (int64_t i = 0; i < n; ++i) {  // f32 squares, as torch's pow(2)
        const float q0 = x0[i] * x0[i], q1 = x1[i] * x1[i], q2 = x2[i] * x2[i], q3 = x3[i] * x3[i];
        s0 += q0, s1 += q1, s2 += q2, s3 += q3;
      }
      ss[0] = s0, ss[1] = s1, ss[2] = s2, ss[3] = s3;
    } else {
      for (int64_t a = 0; a < nr; ++a) {
        const float* xr = src + (r0 + a) * n;
        double s = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const float sq = xr[i] * xr[i];
          s += sq;
        }
        ss[a] = s;
      }
    }
    for (int64_t a = 0; a < nr; ++a) {
      const float* xr = src + (r0 + a) * n;
      float* yr = dst + (r0 + a) * n;
      const float var = static_cast<float>(ss[a] / static_cast<double>(n));
      const float inv = 1.0f / std::sqrt(var + eps);
      for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
    }
  }
}

void rms_norm(float* x, int64_t rows, int64_t n, const float* w, float eps, int threads) {
  rms_norm_to(x, x, rows, n, w, eps, threads);
}

// rotate_half RoPE in place on q[T, nH*D] and k[T, nKV*D] (one parallel loop for both); cos/sin
// tables [maxT, D/2] (already multiplied by the attention scaling). out[d] = x1*c - x2*s,
// out[d+D/2] = x2*c + x1*s.
void rope(float* q, int64_t nH, float* k, int64_t nKV, int64_t T, int64_t D, const std::vector<float>& cos_t,
          const std::vector<float>& sin_t, int threads) {
  const int64_t half = D / 2;
  (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (T * (nH + nKV) * D >= kMinParallelElems)
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos_t.data() + t * half;
    const float* s = sin_t.data() + t * half;
    for (int64_t h = 0; h < nH + nKV; ++h) {
      float* xh = h < nH ? q + (t * nH + h) * D : k + (t * nKV + h - nH) * D;
      for (int64_t d = 0; d < half; ++d) {
        const float x1 = xh[d], x2 = xh[d + half];
        xh[d] = x1 * c[d] - x2 * s[d];
        xh[d + half] = x2 * c[d] + x1 * s[d];
      }
    }
  }
}

int64_t round_up16(int64_t n) { return (n + kTileCols - 1) / kTileCols * kTileCols; }

// K and V of one sample packed as gemm_tile B operands, per kv head g (attention below):
//   k[g]:  that head's keys as a PackedLinear (panels of 16 keys, each [D][16])  -> S = Q K^T
//   vp[g]: panels of 16 head dims, each [Tp][16] (dims past D are 0)            -> O = P V
// Tp = T rounded up to 16, Dp = D rounded up to 16. O(T * kvd) work, once per layer and sample.
// bf16 precision: the same panels as gemm_tile_bf16 operands (values rounded to bf16, k pairs
// side by side; D is even, model_config.cpp refuses an odd head_dim):
//   kb: per g, Tp / 16 key panels, each [D/2][16][2]  (K[key][2p + e] at p*32 + (key % 16)*2 + e)
//   vb: per g, Dp / 16 dim panels, each [Tp/2][16][2] (V[key][d] at (key/2)*32 + (d % 16)*2 + key % 2)
struct PackedKV {
  bool bf16 = false;
  int64_t Tp = 0, Dp = 0, D = 0;
  std::vector<PackedLinear> k;
  std::vector<float> vp;       // nKV * Dp * Tp floats
  std::vector<uint16_t> kb, vb;  // bf16: nKV * Tp * D and nKV * Dp * Tp values
  const float* k_panel(int64_t g, int64_t key_panel) const {
    const PackedLinear& p = k[static_cast<size_t>(g)];
    return p.panels.data() + key_panel * p.in * kTileCols;
  }
  const float* v_panel(int64_t g, int64_t dim_panel, int64_t key0) const {
    return vp.data() + (g * Dp + dim_panel * kTileCols) * Tp + key0 * kTileCols;
  }
  const uint16_t* k_panel16(int64_t g, int64_t key_panel) const {
    return kb.data() + (g * Tp + key_panel * kTileCols) * D;
  }
  // key0 even (a multiple of 16 in attention()).
  const uint16_t* v_panel16(int64_t g, int64_t dim_panel, int64_t key0) const {
    return vb.data() + (g * Dp + dim_panel * kTileCols) * Tp + key0 * kTileCols;
  }
};

void pack_kv(const float* k, const float* v, int64_t T, int64_t nKV, int64_t D, bool bf16, PackedKV& p,
             int threads) {
  const int64_t kvd = nKV * D;
  p.bf16 = bf16, p.D = D;
  p.Tp = round_up16(T), p.Dp = round_up16(D);
  const int64_t vpanels = p.Dp / kTileCols;
  (void)threads;
  if (bf16) {
    QT_ASSERT(D % 2 == 0);
    p.kb.resize(static_cast<size_t>(nKV * p.Tp * D));
    p.vb.resize(static_cast<size_t>(nKV * p.Dp * p.Tp));
    // One task per kv head; each key's row of D values is rounded once (bf16_round_row), then
    // its values are scattered into the key panel (k pairs as 32-bit words) and the dim panels.
#pragma omp parallel for schedule(static) num_threads(threads) if (T * kvd >= kMinParallelElems)
    for (int64_t g = 0; g < nKV; ++g) {
      std::vector<uint16_t> kr(static_cast<size_t>(D)), vr(static_cast<size_t>(D));
      uint16_t* vdst = p.vb.data() + g * p.Dp * p.Tp;
      std::fill(vdst, vdst + p.Dp * p.Tp, uint16_t{0});  // dims past D and keys past T
      for (int64_t key = 0; key < p.Tp; ++key) {
        uint16_t* kpanel = p.kb.data() + (g * p.Tp + key / kTileCols * kTileCols) * D;
        const int64_t j = key % kTileCols;
        if (key >= T) {
          for (int64_t pr = 0; pr < D / 2; ++pr) kpanel[(pr * kTileCols + j) * 2] = kpanel[(pr * kTileCols + j) * 2 + 1] = 0;
          continue;
        }
        bf16_round_row(k + key * kvd + g * D, kr.data(), D);
        bf16_round_row(v + key * kvd + g * D, vr.data(), D);
        for (int64_t pr = 0; pr < D / 2; ++pr) {
          kpanel[(pr * kTileCols + j) * 2] = kr[static_cast<size_t>(2 * pr)];
          kpanel[(pr * kTileCols + j) * 2 + 1] = kr[static_cast<size_t>(2 * pr + 1)];
        }
        uint16_t* vkey = vdst + (key / 2) * 2 * kTileCols + key % 2;
        for (int64_t d = 0; d < D; ++d) vkey[(d / kTileCols) * p.Tp * kTileCols + (d % kTileCols) * 2] = vr[static_cast<size_t>(d)];
      }
    }
    return;
  }
  p.k.resize(static_cast<size_t>(nKV));
  p.vp.resize(static_cast<size_t>(nKV * p.Dp * p.Tp));
  // One task per kv head: its keys and its values (the buffers are reused across samples).
#pragma omp parallel for schedule(static) num_threads(threads) if (T * kvd >= kMinParallelElems)
  for (int64_t g = 0; g < nKV; ++g) {
    pack_linear_into(p.k[static_cast<size_t>(g)], {{k + g * D, T, kvd}}, D, 1);
    for (int64_t pd = 0; pd < vpanels; ++pd) {
      float* dst = p.vp.data() + (g * p.Dp + pd * kTileCols) * p.Tp;
      const int64_t d0 = pd * kTileCols, nd = std::min<int64_t>(kTileCols, D - d0);
      for (int64_t key = 0; key < p.Tp; ++key) {
        float* row = dst + key * kTileCols;
        for (int64_t c = 0; c < kTileCols; ++c) row[c] = (key < T && c < nd) ? v[key * kvd + g * D + d0 + c] : 0.0f;
      }
    }
  }
}

// dst[i] = bf16(src[i]) for i < n, in fixed chunks (the queries of bf16 attention).
void round_bf16(const float* src, uint16_t* dst, int64_t n, int threads) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (n >= kMinParallelElems)
  for (int64_t c = 0; c < chunks; ++c) bf16_round_row(src + c * kChunk, dst + c * kChunk, std::min(kChunk, n - c * kChunk));
}

// Causal GQA attention. q[T, nH*D], k/v[T, nKV*D] (head-major columns), kv = pack_kv(k, v);
// out[T, nH*D]. Window W > 0: key j visible from query i iff i - W < j <= i.
// Task = (head, block of kQueryBlock queries), largest blocks first (causal: later queries see
// more keys) so the dynamic schedule ends balanced. Per task:
//   S = Q K^T over the 16-key panels any query of the block can see (6-row x 16-key tiles past
//     a tile's last query are skipped; one FMA chain over D per score, gemm.h);
//   per row: s *= D^-0.5 (after the product, as transformers' eager path), m = max over the
//     visible keys, p = exp_f32(s - m), sum in double (keys ascending; four rows' sums are
//     interleaved, each in its own order), rounded to f32, p /= sum (the elementwise steps:
//     vmath.h softmax_exp_f32, div_f32); masked keys are exactly 0;
//   O = P V over the keys up to the tile's last query (masked p = 0 add nothing).
// bf16 (kv.bf16; q16 = q rounded to bf16, round_bf16): S from gemm_tile_bf16 over q16 and kv.kb,
// the softmax as above in f32, P rounded to bf16 row by row, O from gemm_tile_bf16 over P and
// kv.vb (an odd key count's pair partner is a 0 of P's padding).
void attention(const float* q, const uint16_t* q16, const PackedKV& kv, float* out, int64_t T, int64_t nH,
               int64_t nKV, int64_t D, int64_t W, float scale, int threads) {
  const int64_t qd = nH * D, rep = nH / nKV;
  const int64_t nqb = (T + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = nH * nqb;
  const int64_t lds_max = kv.Tp + kTileCols;
  (void)threads;
#pragma omp parallel num_threads(threads) if (tasks > 1 && T * T * qd >= kMinParallelFlops)
  {
    std::vector<float> S(static_cast<size_t>(kQueryBlock * lds_max));
    std::vector<uint16_t> P(kv.bf16 ? static_cast<size_t>(kQueryBlock * lds_max) : 0);
    float tile[kTileRows * kTileCols];
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t qb = nqb - 1 - task / nH, h = task % nH, g = h / rep;
      const int64_t i0 = qb * kQueryBlock, i1 = std::min(T, i0 + kQueryBlock), bq = i1 - i0;
      const int64_t j_lo = W > 0 ? std::max<int64_t>(0, i0 - W + 1) : 0;
      const int64_t kb = j_lo / kTileCols * kTileCols;  // first key of the first panel
      const int64_t ncols = i1 - kb, lds = round_up16(ncols);
      // S = Q K^T
      for (int64_t r0 = 0; r0 < bq; r0 += kTileRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kTileRows, bq - r0));
        const int64_t last_key = i0 + r0 + rows - 1;
        for (int64_t pk = kb / kTileCols; pk <= last_key / kTileCols; ++pk) {
          if (kv.bf16) gemm_tile_bf16(rows, q16 + (i0 + r0) * qd + h * D, qd, kv.k_panel16(g, pk), D / 2, tile, false);
          else gemm_tile(rows, q + (i0 + r0) * qd + h * D, qd, kv.k_panel(g, pk), D, tile, false);
          for (int r = 0; r < rows; ++r)
            std::memcpy(S.data() + (r0 + r) * lds + (pk * kTileCols - kb), tile + r * kTileCols,
                        sizeof(float) * kTileCols);
        }
      }
      // masked softmax per row, four rows at a time: their double sums (each j ascending, one
      // dependent chain per row) run side by side over the keys all four see.
      for (int64_t r0 = 0; r0 < bq; r0 += 4) {
        const int nr = static_cast<int>(std::min<int64_t>(4, bq - r0));
        int64_t lo[4], hi[4], pos[4];
        double sum[4];
        float* s[4];
        for (int a = 0; a < nr; ++a) {
          const int64_t i = i0 + r0 + a;
          lo[a] = (W > 0 ? std::max<int64_t>(j_lo, i - W + 1) : 0) - kb;
          hi[a] = i - kb;  // inclusive
          s[a] = S.data() + (r0 + a) * lds;
          softmax_exp_f32(s[a] + lo[a], hi[a] - lo[a] + 1, scale);  // exp(s * scale - max), vmath.h
          sum[a] = 0.0, pos[a] = lo[a];
        }
        int64_t L = lo[0], Hm = hi[0];
        for (int a = 1; a < nr; ++a) L = std::max(L, lo[a]), Hm = std::min(Hm, hi[a]);
        for (int a = 0; a < nr; ++a)  // up to the keys all rows see
          for (; pos[a] < L && pos[a] <= hi[a]; ++pos[a]) sum[a] += s[a][pos[a]];
        if (nr == 4 && L <= Hm) {  // every row is at L now
          const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
          double a0 = sum[0], a1 = sum[1], a2 = sum[2], a3 = sum[3];
          for (int64_t j = L; j <= Hm; ++j) a0 += s0[j], a1 += s1[j], a2 += s2[j], a3 += s3[j];
          sum[0] = a0, sum[1] = a1, sum[2] = a2, sum[3] = a3;
          for (int a = 0; a < 4; ++a) pos[a] = Hm + 1;
        }
        for (int a = 0; a < nr; ++a) {
          for (; pos[a] <= hi[a]; ++pos[a]) sum[a] += s[a][pos[a]];
          const float fsum = static_cast<float>(sum[a]);
          float* sr = s[a];
          div_f32(sr + lo[a], hi[a] - lo[a] + 1, fsum);
          std::fill(sr, sr + lo[a], 0.0f);
          std::fill(sr + hi[a] + 1, sr + ncols, 0.0f);
          if (kv.bf16) {
            uint16_t* pr = P.data() + (r0 + a) * lds;
            bf16_round_row(sr, pr, ncols);
            std::fill(pr + ncols, pr + lds, uint16_t{0});
          }
        }
      }
      // O = P V
      for (int64_t r0 = 0; r0 < bq; r0 += kTileRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kTileRows, bq - r0));
        const int64_t kn = i0 + r0 + rows - kb;  // keys up to the tile's last query
        for (int64_t pd = 0; pd < kv.Dp / kTileCols; ++pd) {
          if (kv.bf16) gemm_tile_bf16(rows, P.data() + r0 * lds, lds, kv.v_panel16(g, pd, kb), (kn + 1) / 2, tile, false);
          else gemm_tile(rows, S.data() + r0 * lds, lds, kv.v_panel(g, pd, kb), kn, tile, false);
          const int64_t d0 = pd * kTileCols, nd = std::min<int64_t>(kTileCols, D - d0);
          for (int r = 0; r < rows; ++r)
            if (nd == kTileCols) std::memcpy(out + (i0 + r0 + r) * qd + h * D + d0, tile + r * kTileCols, sizeof(float) * kTileCols);
            else std::copy_n(tile + r * kTileCols, nd, out + (i0 + r0 + r) * qd + h * D + d0);
        }
      }
    }
  }
}

// m = silu(g) * u (vmath.h silu_mul_f32), in place into g.
void silu_mul(float* g, const float* u, int64_t n, int threads) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (n >= kMinParallelElems)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * kChunk;
    silu_mul_f32(g + b, u + b, g + b, std::min(kChunk, n - b));
  }
}

// ---- weights -------------------------------------------------------------------------------

void check_shape(const std::string& source, const std::string& name, const std::vector<int64_t>& expected,
                 const std::vector<int64_t>& shape) {
  if (shape != expected)
    throw InputError(Kind::BadFile, source, name, "tensor shape does not match config.json", shape_str(expected),
                     shape_str(shape));
}

struct Loader {
  const WeightProvider& provider;
  const std::string& source;
  const std::vector<WeightSpec>& order;  // forward_weights(): what is loaded, in this order
  double seconds = 0.0;
  size_t next = 0;

  std::vector<float> load(const std::string& name, const std::vector<int64_t>& expected) {
    std::vector<float> out;
    load_into(name, expected, out);
    return out;
  }
  // The same into `out`, whose memory the provider may reuse (the view provider resizes it).
  void load_into(const std::string& name, const std::vector<int64_t>& expected, std::vector<float>& out) {
    QT_ASSERT(next < order.size() && order[next].name == name && order[next].shape == expected);
    ++next;
    const auto t0 = Clock::now();
    std::vector<int64_t> shape;
    provider(name, out, shape);
    seconds += since(t0);
    check_shape(source, name, expected, shape);
    uint64_t n = 1;
    for (int64_t d : expected) n *= static_cast<uint64_t>(d);
    QT_ASSERT(out.size() == n);
  }
};

// One layer's weights, the Linears packed for linear_packed (gemm.h). Fused (no
// ActivationTransform): q/k/v are one GEMM with output columns [q | k | v], and gate/up one GLU
// pair (pack_glu) whose GEMM writes silu(gate) * up directly, biases concatenated the same way --
// the input is read once instead of three (two) times and gate/up never reach memory. Unfused (the transform may rewrite q/k/v's inputs differently): one
// PackedLinear per projection. Each output element is the same FMA chain either way (gemm.h),
// so fusing does not change a single bit.
struct LayerWeights {
  std::vector<float> in_norm, post_norm, q_norm, k_norm;
  bool fused = true;
  PackedLinear qkv, gu;                 // fused
  std::vector<float> qkv_b, gu_b;
  PackedLinear q, k, v, gate, up;       // unfused
  std::vector<float> qb, kb, vb, gb, ub;
  PackedLinear o, down;
  std::vector<float> ob, db;
  GemmPrecision prec = GemmPrecision::F32;  // how the Linears are packed (f32 or bf16, gemm.h)
  // Sparse (mixture-of-experts) layers: the router and every expert of this layer instead of
  // gate/up/down; Qwen2-MoE also the shared expert and its sigmoid gate.
  bool sparse = false;
  PackedLinear router;
  struct Expert {
    PackedLinear gu, gate, up, down;  // gu when fused, gate/up when not
  };
  std::vector<Expert> experts;
  bool shared = false;
  Expert shared_expert;
  PackedLinear shared_gate;  // [1, H]
};

std::vector<float> concat(const std::vector<float>& a, const std::vector<float>& b,
                          const std::vector<float>& c = {}) {
  std::vector<float> r(a);
  r.insert(r.end(), b.begin(), b.end());
  r.insert(r.end(), c.begin(), c.end());
  return r;
}

// The row-major f32 Linear weights of one layer (kept only when the layer is rewritten).
struct LayerLinears {
  std::vector<float> q, k, v, o, gate, up, down;
};

void pack_qkv(LayerWeights& w, const LayerLinears& r, const ModelConfig& c, int threads) {
  const int64_t H = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  if (w.fused) {
    pack_linear_into(w.qkv, {{r.q.data(), qd}, {r.k.data(), kvd}, {r.v.data(), kvd}}, H, threads, w.prec);
  } else {
    pack_linear_into(w.q, {{r.q.data(), qd}}, H, threads, w.prec);
    pack_linear_into(w.k, {{r.k.data(), kvd}}, H, threads, w.prec);
    pack_linear_into(w.v, {{r.v.data(), kvd}}, H, threads, w.prec);
  }
}
void pack_o(LayerWeights& w, const LayerLinears& r, const ModelConfig& c, int threads) {
  pack_linear_into(w.o, {{r.o.data(), c.hidden_size}}, c.q_dim(), threads, w.prec);
}
void pack_gate_up(LayerWeights& w, const LayerLinears& r, const ModelConfig& c, int threads) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  if (w.fused) {
    pack_glu_into(w.gu, r.gate.data(), r.up.data(), I, H, threads, w.prec);
  } else {
    pack_linear_into(w.gate, {{r.gate.data(), I}}, H, threads, w.prec);
    pack_linear_into(w.up, {{r.up.data(), I}}, H, threads, w.prec);
  }
}
void pack_down(LayerWeights& w, const LayerLinears& r, const ModelConfig& c, int threads) {
  pack_linear_into(w.down, {{r.down.data(), c.hidden_size}}, c.intermediate_size, threads, w.prec);
}

// Loads layer l's tensors (checking shapes) and packs the Linears into `w`, reusing the memory
// that `w` and `scratch` hold from the previous layer (freshly mapped pages cost more than the
// copy into them, so every buffer is touched once per run, not once per layer). The row-major
// copies go through three scratch buffers (q, k, v; then o; gate, up; down): peak ~ one layer's
// packed Linears + its largest fused group row-major. With `keep`, the row-major Linear weights
// are kept there instead (for ForwardOptions::rewrite_layer). `prec`: f32 or bf16 packing (gemm.h).
void load_layer(Loader& ld, const ModelConfig& c, int64_t l, bool fused, int threads, GemmPrecision prec,
                LayerWeights& w, LayerLinears& scratch, LayerLinears* keep = nullptr) {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  const int64_t H = c.hidden_size, I = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
  LayerLinears& r = keep ? *keep : scratch;
  w.fused = fused;
  w.prec = prec;
  w.sparse = w.shared = false;
  for (auto* b : {&w.qkv_b, &w.gu_b, &w.qb, &w.kb, &w.vb, &w.gb, &w.ub, &w.ob, &w.db, &w.q_norm, &w.k_norm}) b->clear();
  ld.load_into(p + "input_layernorm.weight", {H}, w.in_norm);
  ld.load_into(p + "post_attention_layernorm.weight", {H}, w.post_norm);
  ld.load_into(p + "self_attn.q_proj.weight", {qd, H}, r.q);
  ld.load_into(p + "self_attn.k_proj.weight", {kvd, H}, r.k);
  ld.load_into(p + "self_attn.v_proj.weight", {kvd, H}, r.v);
  pack_qkv(w, r, c, threads);
  if (!keep) r.o.swap(r.q);  // o reuses q's buffer
  ld.load_into(p + "self_attn.o_proj.weight", {H, qd}, r.o);
  pack_o(w, r, c, threads);
  if (c.qkv_bias) {
    w.qb = ld.load(p + "self_attn.q_proj.bias", {qd});
    w.kb = ld.load(p + "self_attn.k_proj.bias", {kvd});
    w.vb = ld.load(p + "self_attn.v_proj.bias", {kvd});
    if (fused) w.qkv_b = concat(w.qb, w.kb, w.vb);
  }
  if (c.o_bias) w.ob = ld.load(p + "self_attn.o_proj.bias", {H});
  if (c.qk_norm) {
    w.q_norm = ld.load(p + "self_attn.q_norm.weight", {c.head_dim});
    w.k_norm = ld.load(p + "self_attn.k_norm.weight", {c.head_dim});
  }
  // Without `keep`, the buffers of q (now o's) and k are free once o is packed: the remaining
  // row-major weights go through them.
  std::vector<float> keep_a, keep_b;
  std::vector<float>& buf_a = keep ? keep_a : r.o;
  std::vector<float>& buf_b = keep ? keep_b : r.k;
  if (c.layer_is_sparse(l)) {
    const MoeConfig& m = c.moe;
    const int64_t E = m.num_experts, EI = m.expert_intermediate;
    w.sparse = true;
    const std::string blk = c.moe_block(l) + ".";
    ld.load_into(blk + "gate.weight", {E, H}, buf_a);
    pack_linear_into(w.router, {{buf_a.data(), E}}, H, threads);
    // One expert at a time through the same two buffers.
    auto load_mlp = [&](const std::string& mp, const std::string& gn, const std::string& un,
                        const std::string& dn, int64_t inter, LayerWeights::Expert& ex) {
      ld.load_into(mp + gn + ".weight", {inter, H}, buf_a);
      ld.load_into(mp + un + ".weight", {inter, H}, buf_b);
      if (fused) {
        pack_glu_into(ex.gu, buf_a.data(), buf_b.data(), inter, H, threads, w.prec);
      } else {
        pack_linear_into(ex.gate, {{buf_a.data(), inter}}, H, threads, w.prec);
        pack_linear_into(ex.up, {{buf_b.data(), inter}}, H, threads, w.prec);
      }
      ld.load_into(mp + dn + ".weight", {H, inter}, buf_a);
      pack_linear_into(ex.down, {{buf_a.data(), H}}, inter, threads, w.prec);
    };
    w.experts.resize(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e)
      load_mlp(c.expert_module(l, e) + ".", m.gate_proj, m.up_proj, m.down_proj, EI, w.experts[static_cast<size_t>(e)]);
    if (m.shared_intermediate > 0) {
      w.shared = true;
      load_mlp(blk + "shared_expert.", "gate_proj", "up_proj", "down_proj", m.shared_intermediate, w.shared_expert);
      ld.load_into(blk + "shared_expert_gate.weight", {1, H}, buf_a);
      pack_linear_into(w.shared_gate, {{buf_a.data(), 1}}, H, threads);
    }
    if (!keep) r.q.swap(r.o);  // q's buffer back where the next layer looks for it
    return;
  }
  if (!keep) r.gate.swap(r.o), r.up.swap(r.k);
  ld.load_into(p + "mlp.gate_proj.weight", {I, H}, r.gate);
  ld.load_into(p + "mlp.up_proj.weight", {I, H}, r.up);
  pack_gate_up(w, r, c, threads);
  if (!keep) r.down.swap(r.gate);
  ld.load_into(p + "mlp.down_proj.weight", {H, I}, r.down);
  pack_down(w, r, c, threads);
  if (!keep) r.q.swap(r.down), r.k.swap(r.up);  // back where the next layer looks for them
  if (c.mlp_bias) {
    w.gb = ld.load(p + "mlp.gate_proj.bias", {I});
    w.ub = ld.load(p + "mlp.up_proj.bias", {I});
    w.db = ld.load(p + "mlp.down_proj.bias", {H});
    if (fused) w.gu_b = concat(w.gb, w.ub);
  }
}

// Packs the (rewritten) Linears of `r` into `w` again, replacing the old packed copies.
void repack_layer(LayerWeights& w, const LayerLinears& r, const ModelConfig& c, int threads) {
  pack_qkv(w, r, c, threads);
  pack_o(w, r, c, threads);
  pack_gate_up(w, r, c, threads);
  pack_down(w, r, c, threads);
}

const float* ptr_or_null(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

// Calls the observer and the transform for one Linear input, then the GEMM.
struct LinearRunner {
  const ForwardOptions& opts;
  int threads;
  std::vector<float> scratch;  // transformed copy of the input
  bool needs_output = true;    // false for the last layer's MLP when no logits are asked for

  void observe(const std::string& module, const float* x, int64_t T, int64_t in) {
    if (opts.observer) opts.observer->on_linear_input(module, x, T, in);
  }
  void observe(const std::string& producer, const std::vector<std::string>& modules, const float* x,
               int64_t T, int64_t in) {
    if (opts.observer) opts.observer->on_shared_linear_input(producer, modules, x, T, in);
  }
  // x W^T + b into `outs` (gemm.h; added to them when add_to_output), x transformed first if a
  // transform is set.
  void run(const std::string& module, const float* x, int64_t T, const PackedLinear& W,
           const std::vector<float>& b, const std::vector<OutputColumns>& outs, bool add_to_output = false) {
    const float* src = x;
    if (opts.transform) {
      scratch.assign(x, x + T * W.in);
      opts.transform(module, scratch.data(), T, W.in);
      src = scratch.data();
    }
    linear_packed(src, T, W, ptr_or_null(b), outs, add_to_output, threads);
  }
};


// Names of one sparse layer's modules (built once per layer).
struct MoeNames {
  std::string block, router;
  std::vector<std::string> gate, up, down;            // per expert
  std::string sh_gate, sh_up, sh_down, sh_gate_proj;  // Qwen2-MoE shared expert
  std::vector<std::string> observed_by_norm;          // every gate/up reading the norm output
};

MoeNames moe_names(const ModelConfig& c, int64_t l, bool shared) {
  MoeNames n;
  n.block = c.moe_block(l);
  n.router = n.block + ".gate";
  for (int64_t e = 0; e < c.moe.num_experts; ++e) {
    const std::string ex = c.expert_module(l, e) + ".";
    n.gate.push_back(ex + c.moe.gate_proj);
    n.up.push_back(ex + c.moe.up_proj);
    n.down.push_back(ex + c.moe.down_proj);
  }
  if (shared) {
    n.sh_gate = n.block + ".shared_expert.gate_proj";
    n.sh_up = n.block + ".shared_expert.up_proj";
    n.sh_down = n.block + ".shared_expert.down_proj";
    n.sh_gate_proj = n.block + ".shared_expert_gate";
  }
  return n;
}

// Router: softmax over the experts (f32, max subtracted, sum in double rounded to f32), the
// top_k largest probabilities (ties: lower expert index first), renormalised to sum 1 when
// norm_topk_prob (Mixtral always). idx/wt [T, k].
void route(const float* logits, int64_t T, int64_t E, int64_t k, bool renorm, std::vector<int32_t>& idx,
           std::vector<float>& wt) {
  idx.resize(static_cast<size_t>(T * k));
  wt.resize(static_cast<size_t>(T * k));
  std::vector<float> p(static_cast<size_t>(E));
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* lg = logits + t * E;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t e = 0; e < E; ++e) m = std::max(m, lg[e]);
    for (int64_t e = 0; e < E; ++e) p[static_cast<size_t>(e)] = lg[e] - m;
    exp_f32(p.data(), p.data(), E);
    double sum = 0.0;
    for (int64_t e = 0; e < E; ++e) sum += p[static_cast<size_t>(e)];
    const float fsum = static_cast<float>(sum);
    for (int64_t e = 0; e < E; ++e) p[static_cast<size_t>(e)] /= fsum;
    for (int64_t e = 0; e < E; ++e) order[static_cast<size_t>(e)] = static_cast<int32_t>(e);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      const float pa = p[static_cast<size_t>(a)], pb = p[static_cast<size_t>(b)];
      return pa > pb || (pa == pb && a < b);
    });
    double ksum = 0.0;
    for (int64_t j = 0; j < k; ++j) ksum += p[static_cast<size_t>(order[static_cast<size_t>(j)])];
    const float fk = static_cast<float>(ksum);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = order[static_cast<size_t>(j)];
      idx[static_cast<size_t>(t * k + j)] = e;
      wt[static_cast<size_t>(t * k + j)] = renorm ? p[static_cast<size_t>(e)] / fk : p[static_cast<size_t>(e)];
    }
  }
}

// Scratch buffers of the MoE block, reused across samples and layers.
struct MoeScratch {
  std::vector<float> logits, xe, g, u, y, out, all_g, shared_y, shared_g;
  std::vector<int32_t> idx;
  std::vector<float> wt;
  std::vector<std::vector<int32_t>> tok;  // per expert: routed token rows
  std::vector<std::vector<float>> tw;     // per expert: their routing weights
  std::vector<int64_t> counts;
};

// The sparse MLP block of one sample, as transformers computes it: xn [T, H] is the
// post_attention_layernorm output; h [T, H] gets h = h + moe(xn), where
//   moe(x) = sum over experts e in increasing index of w[t, e] * down_e(silu(gate_e(x)) * up_e(x))
//            (+ sigmoid(shared_expert_gate(x)) * shared_expert(x) for Qwen2-MoE).
// Each expert runs one GEMM over the tokens routed to it (gathered rows). With an observer and
// all_experts (calibration policy `all`), every expert's gate/up also runs over every token so
// that its down_proj input statistic covers all of them; only the routed rows continue.
void moe_block(const ModelConfig& c, const LayerWeights& w, const MoeNames& n, const std::string& post_norm_name,
               const float* xn, float* h, int64_t T, bool fused, bool all_experts, LinearRunner& lin,
               MoeScratch& sc, int threads) {
  const int64_t H = c.hidden_size, E = c.moe.num_experts, k = c.moe.top_k, EI = c.moe.expert_intermediate;
  Observer* obs = lin.opts.observer;
  const bool observe_all = obs && all_experts;
  // Router logits (the router is never quantized, so never observed).
  sc.logits.resize(static_cast<size_t>(T * E));
  lin.run(n.router, xn, T, w.router, {}, {{sc.logits.data(), E, E}});
  route(sc.logits.data(), T, E, k, c.moe.norm_topk_prob, sc.idx, sc.wt);
  sc.tok.assign(static_cast<size_t>(E), {});
  sc.tw.assign(static_cast<size_t>(E), {});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const size_t e = static_cast<size_t>(sc.idx[static_cast<size_t>(t * k + j)]);
      sc.tok[e].push_back(static_cast<int32_t>(t));
      sc.tw[e].push_back(sc.wt[static_cast<size_t>(t * k + j)]);
    }
  sc.counts.assign(static_cast<size_t>(E), 0);
  for (int64_t e = 0; e < E; ++e) sc.counts[static_cast<size_t>(e)] = static_cast<int64_t>(sc.tok[static_cast<size_t>(e)].size());
  if (obs) obs->on_moe_routing(n.block, sc.counts.data(), E, T);

  // The norm output feeds every gate/up it reaches: all experts' (policy all) or only the shared
  // expert's (routed; each expert then observes its own gathered rows below). Recorded once
  // either way, which also gives SmoothQuant the norm's channel range.
  if (obs) {
    std::vector<std::string> mods;
    if (observe_all) {
      mods.reserve(static_cast<size_t>(2 * E + 2));
      for (int64_t e = 0; e < E; ++e) mods.push_back(n.gate[static_cast<size_t>(e)]), mods.push_back(n.up[static_cast<size_t>(e)]);
    }
    if (w.shared) mods.push_back(n.sh_gate), mods.push_back(n.sh_up);
    lin.observe(post_norm_name, mods, xn, T, H);
  }

  sc.out.assign(static_cast<size_t>(T * H), 0.0f);
  // silu(gate(x)) * up(x) of `rows` rows into g.
  auto glu = [&](const LayerWeights::Expert& ex, const std::string& gname, const std::string& uname,
                 const float* x, int64_t rows, int64_t inter, std::vector<float>& g) {
    g.resize(static_cast<size_t>(rows * inter));
    if (fused) {
      lin.run(gname, x, rows, ex.gu, {}, {{g.data(), inter, inter}});
    } else {
      sc.u.resize(static_cast<size_t>(rows * inter));
      lin.run(gname, x, rows, ex.gate, {}, {{g.data(), inter, inter}});
      lin.run(uname, x, rows, ex.up, {}, {{sc.u.data(), inter, inter}});
      silu_mul(g.data(), sc.u.data(), rows * inter, threads);
    }
  };
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = sc.tok[static_cast<size_t>(e)];
    const auto& wts = sc.tw[static_cast<size_t>(e)];
    const int64_t nr = static_cast<int64_t>(rows.size());
    const LayerWeights::Expert& ex = w.experts[static_cast<size_t>(e)];
    const std::string& gn = n.gate[static_cast<size_t>(e)];
    const std::string& un = n.up[static_cast<size_t>(e)];
    const std::string& dn = n.down[static_cast<size_t>(e)];
    if (observe_all) {
      // Every token through this expert's gate/up, for the down_proj statistic.
      glu(ex, gn, un, xn, T, EI, sc.all_g);
      lin.observe(dn, sc.all_g.data(), T, EI);
      if (nr == 0) continue;
      sc.g.resize(static_cast<size_t>(nr * EI));
      for (int64_t r = 0; r < nr; ++r)
        std::memcpy(sc.g.data() + r * EI, sc.all_g.data() + static_cast<int64_t>(rows[static_cast<size_t>(r)]) * EI,
                    sizeof(float) * EI);
    } else {
      if (nr == 0) continue;
      sc.xe.resize(static_cast<size_t>(nr * H));
      for (int64_t r = 0; r < nr; ++r)
        std::memcpy(sc.xe.data() + r * H, xn + static_cast<int64_t>(rows[static_cast<size_t>(r)]) * H, sizeof(float) * H);
      if (obs) {
        lin.observe(gn, sc.xe.data(), nr, H);
        lin.observe(un, sc.xe.data(), nr, H);
      }
      glu(ex, gn, un, sc.xe.data(), nr, EI, sc.g);
      if (obs) lin.observe(dn, sc.g.data(), nr, EI);
    }
    // Experts that never reach the residual stream: the last layer without logits.
    if (!lin.needs_output) continue;
    sc.y.resize(static_cast<size_t>(nr * H));
    lin.run(dn, sc.g.data(), nr, ex.down, {}, {{sc.y.data(), H, H}});
    for (int64_t r = 0; r < nr; ++r) {
      float* o = sc.out.data() + static_cast<int64_t>(rows[static_cast<size_t>(r)]) * H;
      const float* y = sc.y.data() + r * H;
      const float wr = wts[static_cast<size_t>(r)];
      for (int64_t i = 0; i < H; ++i) o[i] = o[i] + y[i] * wr;
    }
  }
  if (w.shared) {
    const int64_t SI = c.moe.shared_intermediate;
    glu(w.shared_expert, n.sh_gate, n.sh_up, xn, T, SI, sc.shared_g);
    if (obs) lin.observe(n.sh_down, sc.shared_g.data(), T, SI);
    if (lin.needs_output) {
      sc.shared_y.resize(static_cast<size_t>(T * H));
      lin.run(n.sh_down, sc.shared_g.data(), T, w.shared_expert.down, {}, {{sc.shared_y.data(), H, H}});
      std::vector<float> sg(static_cast<size_t>(T));
      lin.run(n.sh_gate_proj, xn, T, w.shared_gate, {}, {{sg.data(), 1, 1}});
      for (int64_t t = 0; t < T; ++t) {
        // sigmoid in f32 as torch: 1 / (1 + exp(-z))
        float z = -sg[static_cast<size_t>(t)];
        exp_f32(&z, &z, 1);
        const float s = 1.0f / (1.0f + z);
        float* o = sc.out.data() + t * H;
        const float* y = sc.shared_y.data() + t * H;
        for (int64_t i = 0; i < H; ++i) o[i] = o[i] + s * y[i];
      }
    }
  }
  if (lin.needs_output)
    for (int64_t i = 0; i < T * H; ++i) h[i] = h[i] + sc.out[static_cast<size_t>(i)];
}

}  // namespace

// ---- providers -----------------------------------------------------------------------------

std::vector<WeightSpec> forward_weights(const ModelConfig& c, bool logits, bool lm_head_tied) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
  std::vector<WeightSpec> w;
  auto add = [&w](std::string name, std::vector<int64_t> shape) { w.push_back({std::move(name), std::move(shape)}); };
  add("model.embed_tokens.weight", {c.vocab_size, H});
  for (int64_t l = 0; l < c.num_layers; ++l) {  // load_layer's order
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H});
    add(p + "post_attention_layernorm.weight", {H});
    add(p + "self_attn.q_proj.weight", {qd, H});
    add(p + "self_attn.k_proj.weight", {kvd, H});
    add(p + "self_attn.v_proj.weight", {kvd, H});
    add(p + "self_attn.o_proj.weight", {H, qd});
    if (c.qkv_bias) {
      add(p + "self_attn.q_proj.bias", {qd});
      add(p + "self_attn.k_proj.bias", {kvd});
      add(p + "self_attn.v_proj.bias", {kvd});
    }
    if (c.o_bias) add(p + "self_attn.o_proj.bias", {H});
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {c.head_dim});
      add(p + "self_attn.k_norm.weight", {c.head_dim});
    }
    auto mlp = [&](const std::string& mp, const std::string& gn, const std::string& un, const std::string& dn,
                   int64_t inter) {
      add(mp + gn + ".weight", {inter, H});
      add(mp + un + ".weight", {inter, H});
      add(mp + dn + ".weight", {H, inter});
    };
    if (c.layer_is_sparse(l)) {
      const MoeConfig& m = c.moe;
      const std::string blk = c.moe_block(l) + ".";
      add(blk + "gate.weight", {m.num_experts, H});
      for (int64_t e = 0; e < m.num_experts; ++e)
        mlp(c.expert_module(l, e) + ".", m.gate_proj, m.up_proj, m.down_proj, m.expert_intermediate);
      if (m.shared_intermediate > 0) {
        mlp(blk + "shared_expert.", "gate_proj", "up_proj", "down_proj", m.shared_intermediate);
        add(blk + "shared_expert_gate.weight", {1, H});
      }
      continue;
    }
    mlp(p + "mlp.", "gate_proj", "up_proj", "down_proj", I);
    if (c.mlp_bias) {
      add(p + "mlp.gate_proj.bias", {I});
      add(p + "mlp.up_proj.bias", {I});
      add(p + "mlp.down_proj.bias", {H});
    }
  }
  if (logits) {
    add("model.norm.weight", {H});
    add(lm_head_tied ? "model.embed_tokens.weight" : "lm_head.weight", {c.vocab_size, H});
  }
  return w;
}

void check_weight_view(const TensorView* tv, const std::string& name, const std::string& source,
                       const std::vector<int64_t>& expected) {
  if (!tv) throw InputError(Kind::Missing, source, name, "tensor is missing from the checkpoint");
  const auto nbytes = dtype_nbytes(tv->dtype, tv->numel());
  if (!nbytes || *nbytes != tv->bytes.size())
    throw InputError(Kind::BadFile, tv->file, name, "tensor byte size does not match its dtype and shape",
                     nbytes ? std::to_string(*nbytes) + " bytes" : "a whole number of bytes",
                     std::to_string(tv->bytes.size()) + " bytes");
  float probe;  // decoding zero elements says whether the dtype can be decoded at all
  if (!decode_to_f32(tv->dtype, nullptr, 0, &probe))
    throw InputError(Kind::Unsupported, tv->file, name, "tensor dtype cannot be decoded for the forward pass",
                     "F32, F16, BF16, F64, F8_E4M3 or F8_E5M2", std::string(dtype_name(tv->dtype)));
  if (!expected.empty()) check_shape(source, name, expected, tv->shape);
}

WeightProvider make_view_weight_provider(std::function<const TensorView*(const std::string&)> find,
                                         std::string source) {
  return [find = std::move(find), source = std::move(source)](
             const std::string& name, std::vector<float>& out, std::vector<int64_t>& shape) {
    const TensorView* tv = find(name);
    check_weight_view(tv, name, source);
    const uint64_t n = tv->numel();
    out.resize(n);
    shape = tv->shape;
    if (n == 0) return;
    const uint64_t elem = tv->bytes.size() / n;  // whole bytes per element for every decodable dtype
    // Chunks small enough that every Linear of a layer decodes on all threads (the values do not
    // depend on the split).
    constexpr uint64_t kChunk = 1u << 16;
    const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const uint64_t b = static_cast<uint64_t>(c) * kChunk, m = std::min<uint64_t>(kChunk, n - b);
      decode_to_f32(tv->dtype, tv->bytes.data() + b * elem, m, out.data() + b);
    }
  };
}

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}
}  // namespace

WeightProvider synthetic_weight_provider(const ModelConfig& cfg, uint64_t seed) {
  return [cfg, seed](const std::string& name, std::vector<float>& out, std::vector<int64_t>& shape) {
    const int64_t H = cfg.hidden_size, I = cfg.intermediate_size, qd = cfg.q_dim(), kvd = cfg.kv_dim();
    auto mod = [&](const std::string& m) {
      return name.find(m) != std::string::npos;
    };
    const bool bias = name.ends_with(".bias");
    int64_t rows = 0, cols = 0;  // cols = 0 -> 1-D
    const int64_t EI = cfg.moe.expert_intermediate, SI = cfg.moe.shared_intermediate;
    const bool expert = mod(".experts."), shared = mod(".shared_expert.");
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") rows = cfg.vocab_size, cols = H;
    else if (mod("shared_expert_gate")) rows = 1, cols = H;
    else if (name.ends_with("." + cfg.moe.block + ".gate.weight") && cfg.is_moe()) rows = cfg.moe.num_experts, cols = H;
    else if (expert && (mod(".w1") || mod(".w3") || mod("gate_proj") || mod("up_proj"))) rows = EI, cols = H;
    else if (expert && (mod(".w2") || mod("down_proj"))) rows = H, cols = EI;
    else if (shared && (mod("gate_proj") || mod("up_proj"))) rows = SI, cols = H;
    else if (shared && mod("down_proj")) rows = H, cols = SI;
    else if (mod("q_norm") || mod("k_norm")) rows = cfg.head_dim;
    else if (mod("layernorm") || name == "model.norm.weight") rows = H;
    else if (mod("q_proj")) rows = qd, cols = H;
    else if (mod("k_proj") || mod("v_proj")) rows = kvd, cols = H;
    else if (mod("o_proj")) rows = H, cols = qd;
    else if (mod("gate_proj") || mod("up_proj")) rows = I, cols = H;
    else if (mod("down_proj")) rows = H, cols = I;
    else throw InputError(Kind::Missing, "<synthetic>", name, "tensor is not part of the synthetic model");
    if (bias) cols = 0;
    shape = cols ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows};
    const int64_t n = rows * (cols ? cols : 1);
    out.resize(static_cast<size_t>(n));
    const bool norm = !bias && cols == 0;
    const bool embed = name == "model.embed_tokens.weight";
    const float bound = norm ? 0.1f : bias ? 0.1f : embed ? 1.0f : 1.0f / std::sqrt(static_cast<float>(cols));
    const float offset = norm ? 1.0f : 0.0f;
    const uint64_t key = splitmix64(seed ^ fnv1a(name));
#pragma omp parallel for schedule(static) if (n >= kMinParallelElems)
    for (int64_t i = 0; i < n; ++i) {
      // 24 random bits -> uniform in [-1, 1).
      const uint64_t r = splitmix64(key + static_cast<uint64_t>(i));
      const float u = static_cast<float>(r >> 40) * (2.0f / 16777216.0f) - 1.0f;
      out[static_cast<size_t>(i)] = offset + bound * u;
    }
  };
}

// ---- the forward pass ----------------------------------------------------------------------

namespace {
ForwardStats run_forward_impl(const ModelConfig& c, const WeightProvider& weights,
                              const std::vector<std::vector<int32_t>>& samples, const ForwardOptions& opts);
}  // namespace

ForwardStats run_forward(const ModelConfig& c, const WeightProvider& weights,
                         const std::vector<std::vector<int32_t>>& samples, const ForwardOptions& opts) {
  try {
    return run_forward_impl(c, weights, samples, opts);
  } catch (const std::bad_alloc&) {
  } catch (const std::length_error&) {
  }
  // Buffers are sized from config.json: name the values they came from, not a bare "out of memory".
  int64_t max_t = 0;
  for (const auto& ids : samples) max_t = std::max<int64_t>(max_t, static_cast<int64_t>(ids.size()));
  throw InputError(Kind::Io, c.file, "",
                   "out of memory in the forward pass, whose buffers are sized from hidden_size " +
                       std::to_string(c.hidden_size) + ", intermediate_size " + std::to_string(c.intermediate_size) +
                       ", vocab_size " + std::to_string(c.vocab_size) + ", num_attention_heads " +
                       std::to_string(c.num_heads) + " x head_dim " + std::to_string(c.head_dim) + " and " +
                       std::to_string(samples.size()) + " samples of up to " + std::to_string(max_t) +
                       " tokens; check those config values, or lower --num-samples / --seq-len / --calib-memory");
}

namespace {
ForwardStats run_forward_impl(const ModelConfig& c, const WeightProvider& weights,
                              const std::vector<std::vector<int32_t>>& samples, const ForwardOptions& opts) {
  const auto t_start = Clock::now();
  const int threads = resolve_threads(opts.num_threads);
  const std::string& source = opts.source.empty() ? c.file : opts.source;
  const int64_t H = c.hidden_size, I = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t D = c.head_dim;
  const float eps = static_cast<float>(c.rms_norm_eps);

  ForwardStats st;
  st.samples = static_cast<int64_t>(samples.size());
  int64_t max_t = 0;
  for (size_t s = 0; s < samples.size(); ++s) {
    const auto& ids = samples[s];
    if (ids.empty())
      throw InputError(Kind::BadValue, source, "", "calibration sample " + std::to_string(s) + " has no tokens",
                       "at least one token", "0");
    for (int32_t id : ids)
      if (id < 0 || id >= c.vocab_size)
        throw InputError(Kind::BadValue, source, "",
                         "token id in calibration sample " + std::to_string(s) + " is outside the embedding",
                         "0 <= id < " + std::to_string(c.vocab_size), std::to_string(id));
    st.tokens += static_cast<int64_t>(ids.size());
    max_t = std::max<int64_t>(max_t, static_cast<int64_t>(ids.size()));
  }
  if (c.rope.type == "dynamic" && max_t > c.max_position_embeddings)
    throw InputError(Kind::Unsupported, source, "",
                     "dynamic rope scaling beyond max_position_embeddings is not supported",
                     "samples of at most " + std::to_string(c.max_position_embeddings) + " tokens",
                     std::to_string(max_t) + " tokens");

  const std::vector<WeightSpec> order =
      forward_weights(c, static_cast<bool>(opts.on_logits), opts.lm_head_tied.value_or(c.tie_word_embeddings));
  Loader ld{weights, source, order};
  LinearRunner lin{opts, threads, {}};

  // The embedding is loaded before anything is allocated from config.json's sizes: its shape
  // check names a wrong hidden_size / vocab_size instead of a failed allocation.
  std::vector<float> emb = ld.load("model.embed_tokens.weight", {c.vocab_size, H});

  // RoPE tables for positions 0..max_t-1: ang = f32(p) * inv_freq[i] (one f32 product, as
  // transformers' f32 matmul of [D/2,1] x [1,T]); cos/sin in f32, then * attention scaling.
  const RopeTables rt = rope_tables(c);
  const int64_t half = D / 2;
  std::vector<float> cos_t(static_cast<size_t>(max_t * half)), sin_t(cos_t.size());
  for (int64_t p = 0; p < max_t; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float ang = static_cast<float>(p) * rt.inv_freq[static_cast<size_t>(i)];
      cos_t[static_cast<size_t>(p * half + i)] = std::cos(ang) * rt.attention_scaling;
      sin_t[static_cast<size_t>(p * half + i)] = std::sin(ang) * rt.attention_scaling;
    }

  // 1. embeddings
  std::vector<int64_t> lengths;
  for (const auto& ids : samples) lengths.push_back(static_cast<int64_t>(ids.size()));
  HiddenStore hidden(lengths, H, opts.hidden_spill);
  st.hidden_bytes = hidden.bytes();
  st.hidden_spilled = hidden.spilled();
  {
    const auto t0 = Clock::now();
    for (size_t s = 0; s < samples.size(); ++s) {
      const auto& ids = samples[s];
      for (size_t t = 0; t < ids.size(); ++t)
        std::memcpy(hidden.sample(s) + t * H, emb.data() + static_cast<int64_t>(ids[t]) * H, sizeof(float) * H);
    }
    st.embed_seconds = since(t0);
    std::vector<float>().swap(emb);
  }

  // 2. decoder layers
  std::vector<float> xn, q, k, v, attn, g, u;
  const bool fused = !opts.transform;
  PackedKV kvp;
  const bool bf16 = opts.precision == GemmPrecision::BF16;  // attention's products too
  std::vector<uint16_t> qb;  // bf16: q rounded
  MoeScratch moe_sc;
  const float scale = static_cast<float>(std::pow(static_cast<double>(D), -0.5));  // head_dim**-0.5
  const bool rewrite = static_cast<bool>(opts.rewrite_layer);
  std::vector<float> hcopy;  // observation pass of a rewritten layer: the hidden state it must not change
  LayerWeights w;           // every layer's weights, packed into the same buffers
  LayerLinears raw_scratch;  // row-major weights on their way to being packed (load_layer)
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerLinears raw;
    load_layer(ld, c, l, fused, threads, opts.precision, w, raw_scratch, rewrite ? &raw : nullptr);
    const auto t0 = Clock::now();
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string attn_name = p + "self_attn";
    const std::string nq = p + "self_attn.q_proj", nk = p + "self_attn.k_proj", nv = p + "self_attn.v_proj",
                      no = p + "self_attn.o_proj", ng = p + "mlp.gate_proj", nu = p + "mlp.up_proj",
                      nd = p + "mlp.down_proj";
    const std::vector<std::string> qkv_names{nq, nk, nv}, gu_names{ng, nu};
    const std::string in_norm_name = p + "input_layernorm", post_norm_name = p + "post_attention_layernorm";
    const int64_t W = c.sliding_window[static_cast<size_t>(l)];
    const MoeNames moe_n = w.sparse ? moe_names(c, l, w.shared) : MoeNames{};
    // One sample through the layer, h updated in place. observe: call the observer (and, when
    // the outputs are discarded anyway, skip the last GEMM). run_down: compute down_proj.
    auto run_sample = [&](size_t s, float* h, bool observe, bool run_down) {
      Observer* const obs = observe ? opts.observer : nullptr;
      const int64_t T = static_cast<int64_t>(samples[s].size());
      xn.resize(static_cast<size_t>(T * H));
      q.resize(static_cast<size_t>(T * qd));
      k.resize(static_cast<size_t>(T * kvd));
      v.resize(static_cast<size_t>(T * kvd));
      attn.resize(static_cast<size_t>(T * qd));
      if (!w.sparse) {
        g.resize(static_cast<size_t>(T * I));
        if (!fused) u.resize(static_cast<size_t>(T * I));
      }

      // attention block
      rms_norm_to(h, xn.data(), T, H, w.in_norm.data(), eps, threads);
      if (obs) lin.observe(in_norm_name, qkv_names, xn.data(), T, H);
      if (fused) {
        lin.run(nq, xn.data(), T, w.qkv, w.qkv_b, {{q.data(), qd, qd}, {k.data(), kvd, kvd}, {v.data(), kvd, kvd}});
      } else {
        lin.run(nq, xn.data(), T, w.q, w.qb, {{q.data(), qd, qd}});
        lin.run(nk, xn.data(), T, w.k, w.kb, {{k.data(), kvd, kvd}});
        lin.run(nv, xn.data(), T, w.v, w.vb, {{v.data(), kvd, kvd}});
      }
      if (c.qk_norm) {  // Qwen3: per-head RMSNorm over D, before RoPE
        rms_norm(q.data(), T * c.num_heads, D, w.q_norm.data(), eps, threads);
        rms_norm(k.data(), T * c.num_kv_heads, D, w.k_norm.data(), eps, threads);
      }
      rope(q.data(), c.num_heads, k.data(), c.num_kv_heads, T, D, cos_t, sin_t, threads);
      if (obs) obs->on_kv(attn_name, k.data(), v.data(), T, kvd);
      pack_kv(k.data(), v.data(), T, c.num_kv_heads, D, bf16, kvp, threads);
      if (bf16) qb.resize(q.size()), round_bf16(q.data(), qb.data(), T * qd, threads);
      attention(q.data(), qb.data(), kvp, attn.data(), T, c.num_heads, c.num_kv_heads, D, W, scale, threads);
      if (obs) lin.observe(no, attn.data(), T, qd);
      lin.run(no, attn.data(), T, w.o, w.ob, {{h, H, H}}, /*add_to_output=*/true);  // h += o_proj(attn)

      // MLP block
      rms_norm_to(h, xn.data(), T, H, w.post_norm.data(), eps, threads);
      if (w.sparse) {  // router + experts (+ shared expert); no dense MLP in this layer
        lin.needs_output = run_down;
        moe_block(c, w, moe_n, post_norm_name, xn.data(), h, T, fused, opts.moe_all_experts, lin, moe_sc, threads);
        lin.needs_output = true;
        return;
      }
      if (obs) lin.observe(post_norm_name, gu_names, xn.data(), T, H);
      if (fused) {
        lin.run(ng, xn.data(), T, w.gu, w.gu_b, {{g.data(), I, I}});  // g = silu(gate) * up
      } else {
        lin.run(ng, xn.data(), T, w.gate, w.gb, {{g.data(), I, I}});
        lin.run(nu, xn.data(), T, w.up, w.ub, {{u.data(), I, I}});
        silu_mul(g.data(), u.data(), T * I, threads);
      }
      if (obs) lin.observe(nd, g.data(), T, I);
      if (run_down) lin.run(nd, g.data(), T, w.down, w.db, {{h, H, H}}, /*add_to_output=*/true);  // h += down(m)
      if (opts.check_finite) {
        const auto bad_h = std::find_if(h, h + T * H, [](float x) { return !std::isfinite(x); });
        const auto bad_g = std::find_if(g.begin(), g.begin() + T * I, [](float x) { return !std::isfinite(x); });
        if (bad_h != h + T * H || bad_g != g.begin() + T * I) {
          const bool in_h = bad_h != h + T * H;
          const int64_t at = in_h ? (bad_h - h) : (bad_g - g.begin());
          const float val = in_h ? *bad_h : *bad_g;
          std::string why = "the calibration forward pass is not finite in this layer (" +
                            std::string(in_h ? "hidden state" : "MLP activation") + " = " +
                            (std::isnan(val) ? std::string("nan") : std::string(val > 0 ? "inf" : "-inf")) +
                            " at sample " + std::to_string(s) + ", token " + std::to_string(at / (in_h ? H : I)) + ")";
          if (opts.explain_overflow) why += opts.explain_overflow(l);
          throw InputError(Kind::BadValue, source, "", p.substr(0, p.size() - 1) + ": " + why);
        }
      }
    };
    // The last layer's output feeds only the final norm and lm_head: without logits nobody
    // reads it, so its down_proj (a third of the layer's MLP) is skipped -- its input has been
    // observed, which is all calibration needs.
    const bool need_output = opts.on_logits || l + 1 < c.num_layers;
    if (!rewrite) {
      for (size_t s = 0; s < samples.size(); ++s) run_sample(s, hidden.sample(s), true, need_output);
    } else {
      // 1. observation pass on a copy of each hidden state (its outputs are not used);
      for (size_t s = 0; s < samples.size(); ++s) {
        const size_t n = samples[s].size() * static_cast<size_t>(H);
        hcopy.assign(hidden.sample(s), hidden.sample(s) + n);
        run_sample(s, hcopy.data(), true, false);
      }
      std::vector<float>().swap(hcopy);
      // 2. the caller rewrites the weights; 3. propagation pass with them.
      const auto tr = Clock::now();
      const std::vector<LayerLinear> linears{
          {nq, qd, H, &raw.q},   {nk, kvd, H, &raw.k}, {nv, kvd, H, &raw.v},   {no, H, qd, &raw.o},
          {ng, I, H, &raw.gate}, {nu, I, H, &raw.up},  {nd, H, I, &raw.down}};
      const std::vector<LayerNorm> norms{{in_norm_name, &w.in_norm}, {post_norm_name, &w.post_norm}};
      opts.rewrite_layer(l, linears, norms);
      st.rewrite_seconds += since(tr);
      if (need_output) {
        repack_layer(w, raw, c, threads);
        raw = LayerLinears{};
        for (size_t s = 0; s < samples.size(); ++s) run_sample(s, hidden.sample(s), false, true);
      }
    }
    st.layer_seconds += since(t0);
    if (opts.on_layer_done) opts.on_layer_done(l, c.num_layers);
  }
  w = LayerWeights{}, raw_scratch = LayerLinears{};
  std::vector<float>().swap(q), std::vector<float>().swap(k), std::vector<float>().swap(v);
  std::vector<float>().swap(attn), std::vector<float>().swap(g), std::vector<float>().swap(u);

  // 3. final norm + lm_head, streamed per token chunk
  if (opts.on_logits) {
    const bool tied = opts.lm_head_tied.value_or(c.tie_word_embeddings);
    std::vector<float> norm_w = ld.load("model.norm.weight", {H});
    PackedLinear lm;
    {
      const auto lm_rows = ld.load(tied ? "model.embed_tokens.weight" : "lm_head.weight", {c.vocab_size, H});
      lm = pack_linear({{lm_rows.data(), c.vocab_size}}, H, threads, opts.precision);
    }
    const auto t0 = Clock::now();
    const int64_t chunk = opts.logits_chunk_tokens > 0 ? opts.logits_chunk_tokens : max_t;
    std::vector<float> logits;
    const std::vector<float> no_bias;
    for (size_t s = 0; s < samples.size(); ++s) {
      const int64_t T = static_cast<int64_t>(samples[s].size());
      xn.resize(static_cast<size_t>(T * H));
      rms_norm_to(hidden.sample(s), xn.data(), T, H, norm_w.data(), eps, threads);
      lin.observe("lm_head", xn.data(), T, H);
      for (int64_t t0c = 0; t0c < T; t0c += chunk) {
        const int64_t n = std::min(chunk, T - t0c);
        logits.resize(static_cast<size_t>(n * c.vocab_size));
        lin.run("lm_head", xn.data() + t0c * H, n, lm, no_bias, {{logits.data(), c.vocab_size, c.vocab_size}});
        opts.on_logits(s, t0c, logits.data(), n, c.vocab_size);
      }
    }
    st.head_seconds = since(t0);
  }
  QT_ASSERT(ld.next == order.size());
  st.weight_seconds = ld.seconds;
  st.seconds = since(t_start);
  return st;
}

}  // namespace

ForwardStats benchmark_forward(const ModelConfig& cfg, const WeightProvider& weights, int64_t num_samples,
                               int64_t seq_len, int num_threads, uint64_t seed) {
  std::vector<std::vector<int32_t>> samples(static_cast<size_t>(num_samples));
  uint64_t x = seed;
  for (auto& s : samples) {
    s.resize(static_cast<size_t>(seq_len));
    for (auto& id : s) id = static_cast<int32_t>(splitmix64(x++) % static_cast<uint64_t>(cfg.vocab_size));
  }
  ForwardOptions opts;
  opts.num_threads = num_threads;
  return run_forward(cfg, weights, samples, opts);
}

}  // namespace qt::calib
