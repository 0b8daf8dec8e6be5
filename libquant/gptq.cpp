#include "libquant/gptq.h"

// Eigen runs single-threaded here: its GEMM splits work by thread count, which would make the
// factorization (and so the codes) depend on it.
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/gemm.h"
#include "libquant/parallel.h"

namespace qt {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Rows per task of the column loop: rows are independent, tasks fixed, so any thread count
// gives the same bits.
constexpr int64_t kRowChunk = 16;
// Columns per block of the Hessian's lower-triangle product.
constexpr int64_t kHessianBlock = 256;

}  // namespace

std::optional<ActOrder> parse_actorder(std::string_view s) {
  if (s == "static") return ActOrder::Static;
  if (s == "weight") return ActOrder::Weight;
  if (s == "none") return ActOrder::None;
  return std::nullopt;
}

const char* actorder_name(ActOrder a) {
  switch (a) {
    case ActOrder::None: return "none";
    case ActOrder::Static: return "static";
    case ActOrder::Weight: return "weight";
  }
  return "?";
}

Hessian::Hessian(int64_t columns) : n_(columns), sum_(static_cast<size_t>(columns * columns), 0.0) {}

void Hessian::add_sample(const float* x, int64_t tokens, int threads) {
  if (tokens <= 0) return;
  // X^T X as one packed GEMM: A = X^T [n, T], B^T = X^T (n rows of T) -> [n, n].
  xt_.resize(static_cast<size_t>(n_ * tokens));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < n_; ++i) xt_[static_cast<size_t>(i * tokens + t)] = x[t * n_ + i];
  // X^T X is symmetric: only the lower triangle is computed, one column block of kHessianBlock
  // at a time (rows j0..n-1 of that block's columns). Each element is the same FMA chain over the
  // tokens as in the full product, so this is the full product's lower half, bit for bit.
  g_.resize(static_cast<size_t>(n_ * n_));
  for (int64_t j0 = 0; j0 < n_; j0 += kHessianBlock) {
    const int64_t jb = std::min(kHessianBlock, n_ - j0);
    const PackedLinear p = pack_linear({{xt_.data() + j0 * tokens, jb, tokens}}, tokens, threads);
    linear_packed(xt_.data() + j0 * tokens, n_ - j0, p, nullptr, g_.data() + j0 * n_ + j0, n_, threads);
  }
  const int nt = resolve_threads(threads);
  (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n_; ++i)
    for (int64_t j = 0; j <= i; ++j) sum_[i * n_ + j] += static_cast<double>(g_[i * n_ + j]);
  ++samples_;
}

namespace {
// The full symmetric matrix from the lower triangle of `sum`, times f.
void symmetric_scaled(const std::vector<double>& sum, int64_t n, double f, double* h) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) h[i * n + j] = h[j * n + i] = sum[i * n + j] * f;
}
}  // namespace

std::vector<double> Hessian::normalized() const {
  std::vector<double> h(sum_.size());
  const double f = samples_ > 0 ? 2.0 / static_cast<double>(samples_) : 0.0;
  symmetric_scaled(sum_, n_, f, h.data());
  return h;
}

std::vector<double> Hessian::release_normalized() {
  const double f = samples_ > 0 ? 2.0 / static_cast<double>(samples_) : 0.0;
  symmetric_scaled(sum_, n_, f, sum_.data());  // in place: (i, j <= i) is read before (j, i) is written
  std::vector<double> h = std::move(sum_);
  sum_ = {};
  xt_ = {};
  g_ = {};
  return h;
}

namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// Tile of the blocked factorizations: fixed, so the arithmetic of every tile (and the result)
// does not depend on the thread count.
constexpr int64_t kTile = 128;

}  // namespace

bool upper_cholesky_of_inverse(std::vector<double>& h, int64_t n, float* out, int threads) {
  QT_ASSERT(static_cast<int64_t>(h.size()) == n * n);
  const int nt = resolve_threads(threads);
  (void)nt;
  // A = J H J: element (i, j) moves to (n-1-i, n-1-j), i.e. flat index k to n*n-1-k.
  std::reverse(h.begin(), h.end());
  Eigen::Map<RowMat> A(h.data(), n, n);
  const int64_t nblk = (n + kTile - 1) / kTile;
  // 1. A = L L^T, L (lower) in place: right-looking, by tiles.
  for (int64_t kbi = 0; kbi < nblk; ++kbi) {
    const int64_t k0 = kbi * kTile, kb = std::min(kTile, n - k0);
    const Eigen::MatrixXd D = A.block(k0, k0, kb, kb);
    const Eigen::LLT<Eigen::MatrixXd> llt(D);  // reads the lower triangle
    if (llt.info() != Eigen::Success) return false;
    const Eigen::MatrixXd L = llt.matrixL();
    if (!L.allFinite()) return false;
    A.block(k0, k0, kb, kb).triangularView<Eigen::Lower>() = L;
    const int64_t r0 = k0 + kb;
    if (r0 >= n) break;
    const int64_t tiles = nblk - kbi - 1;
    // Panel: A[r0:, k] = A[r0:, k] L^-T, one row tile per task.
#pragma omp parallel for schedule(dynamic) num_threads(nt)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t ri = r0 + t * kTile, rb = std::min(kTile, n - ri);
      auto P = A.block(ri, k0, rb, kb);
      L.transpose().triangularView<Eigen::Upper>().solveInPlace<Eigen::OnTheRight>(P);
    }
    // Trailing update of the lower tiles: A[i, j] -= P_i P_j^T.
    const int64_t pairs = tiles * (tiles + 1) / 2;
#pragma omp parallel for schedule(dynamic) num_threads(nt)
    for (int64_t p = 0; p < pairs; ++p) {
      int64_t i = static_cast<int64_t>((std::sqrt(8.0 * static_cast<double>(p) + 1.0) - 1.0) / 2.0);
      while (i * (i + 1) / 2 > p) --i;
      while ((i + 1) * (i + 2) / 2 <= p) ++i;
      const int64_t j = p - i * (i + 1) / 2;
      const int64_t ri = r0 + i * kTile, rb = std::min(kTile, n - ri);
      const int64_t cj = r0 + j * kTile, cb = std::min(kTile, n - cj);
      A.block(ri, cj, rb, cb).noalias() -= A.block(ri, k0, rb, kb) * A.block(cj, k0, cb, kb).transpose();
    }
  }
  // 2. X = L^-1 in place, column tiles right to left: X[r:, j] = -X[r:, r:] L[r:, j] X[j, j] with
  //    X[r:, r:] (already inverted) and L[r:, j] (still L) both in A.
  RowMat tmp;
  for (int64_t jbi = nblk - 1; jbi >= 0; --jbi) {
    const int64_t j0 = jbi * kTile, jb = std::min(kTile, n - j0);
    const Eigen::MatrixXd Ljj = A.block(j0, j0, jb, jb).triangularView<Eigen::Lower>();
    const Eigen::MatrixXd Xjj = Ljj.triangularView<Eigen::Lower>().solve(Eigen::MatrixXd::Identity(jb, jb));
    const int64_t r0 = j0 + jb;
    if (r0 < n) {
      const int64_t tiles = nblk - jbi - 1;
      tmp.resize(n - r0, jb);
#pragma omp parallel for schedule(dynamic) num_threads(nt)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t ri = r0 + t * kTile, rb = std::min(kTile, n - ri);
        auto T = tmp.block(ri - r0, 0, rb, jb);
        T.noalias() = A.block(ri, ri, rb, rb).triangularView<Eigen::Lower>() * A.block(ri, j0, rb, jb);
        for (int64_t k = 0; k < t; ++k) {
          const int64_t rk = r0 + k * kTile;
          T.noalias() += A.block(ri, rk, rb, kTile) * A.block(rk, j0, kTile, jb);
        }
        T = -(T * Xjj.triangularView<Eigen::Lower>());
      }
      A.block(r0, j0, n - r0, jb) = tmp;
    }
    A.block(j0, j0, jb, jb).triangularView<Eigen::Lower>() = Xjj;
  }
  // 3. U = J X J: U[i][j] = X[n-1-i][n-1-j], stored at flat index n*n-1-(i*n+j); lower for j >= i.
  const int64_t nn = n * n;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < i; ++j) out[i * n + j] = 0.0f;
    for (int64_t j = i; j < n; ++j) out[i * n + j] = static_cast<float>(h[static_cast<size_t>(nn - 1 - (i * n + j))]);
  }
  return true;
}

GptqFactor gptq_factor(std::vector<double> H, int64_t n, const GptqOptions& opts, int threads) {
  QT_ASSERT(static_cast<int64_t>(H.size()) == n * n);
  const auto t0 = Clock::now();
  GptqFactor f;
  f.columns = n;
  // Activation order: columns by descending diag(H), ties in column order (stable).
  f.perm.resize(static_cast<size_t>(n));
  std::iota(f.perm.begin(), f.perm.end(), 0);
  if (opts.actorder != ActOrder::None) {
    std::stable_sort(f.perm.begin(), f.perm.end(), [&](int64_t a, int64_t b) { return H[a * n + a] > H[b * n + b]; });
    // H[i][j] <- H[perm[i]][perm[j]] in place: columns row by row, then rows along their cycles.
    std::vector<double> row(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      double* r = H.data() + i * n;
      for (int64_t j = 0; j < n; ++j) row[j] = r[f.perm[j]];
      std::copy(row.begin(), row.end(), r);
    }
    std::vector<uint8_t> done(static_cast<size_t>(n), 0);
    for (int64_t s = 0; s < n; ++s) {
      if (done[s] || f.perm[s] == s) continue;
      std::copy(H.begin() + s * n, H.begin() + (s + 1) * n, row.begin());
      int64_t i = s;
      while (f.perm[i] != s) {
        std::copy(H.begin() + f.perm[i] * n, H.begin() + (f.perm[i] + 1) * n, H.begin() + i * n);
        done[i] = 1;
        i = f.perm[i];
      }
      std::copy(row.begin(), row.end(), H.begin() + i * n);
      done[i] = 1;
    }
  }
  // Dead columns: no calibration input ever reached them.
  f.dead.assign(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < n; ++j)
    if (H[j * n + j] == 0.0) {
      ++f.dead_columns;
      f.dead[j] = 1;
      H[j * n + j] = 1.0;
    }
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) mean += H[j * n + j];
  mean /= static_cast<double>(n);
  const double damp = opts.dampening_frac * mean;
  for (int64_t j = 0; j < n; ++j) H[j * n + j] += damp;
  f.hinv.assign(static_cast<size_t>(n * n), 0.0f);
  if (!upper_cholesky_of_inverse(H, n, f.hinv.data(), threads)) {
    f.rtn_fallback = true;  // llm-compressor: identity factor, i.e. round-to-nearest column by column
    std::fill(f.hinv.begin(), f.hinv.end(), 0.0f);
    for (int64_t i = 0; i < n; ++i) f.hinv[i * n + i] = 1.0f;
  }
  f.seconds = since(t0);
  return f;
}

GptqResult gptq_quantize(const TensorView& w, const QuantArgs& args, const Hessian& hess,
                         const GptqOptions& opts, int threads) {
  if (args.type == QuantType::Float8E4M3 || !(args.strategy == Strategy::Channel || args.strategy == Strategy::Group))
    throw InputError(InputError::Kind::Unsupported, w.file, w.name,
                     "GPTQ is implemented for integer weights with per-channel or per-group scales, not " +
                         describe_args(args));
  if (w.shape.size() == 2 && hess.columns() != w.shape[1])
    throw InputError(InputError::Kind::BadValue, w.file, w.name, "GPTQ Hessian does not match the weight's input dimension",
                     std::to_string(w.shape[1]), std::to_string(hess.columns()));
  const GptqFactor f = gptq_factor(hess.normalized(), hess.columns(), opts, threads);
  GptqResult r = gptq_quantize(w, args, f, opts, threads);
  r.solve_seconds = f.seconds;
  return r;
}

GptqResult gptq_quantize(const TensorView& w, const QuantArgs& args, const GptqFactor& f,
                         const GptqOptions& opts, int threads) {
  if (args.type == QuantType::Float8E4M3 || !(args.strategy == Strategy::Channel || args.strategy == Strategy::Group))
    throw InputError(InputError::Kind::Unsupported, w.file, w.name,
                     "GPTQ is implemented for integer weights with per-channel or per-group scales, not " +
                         describe_args(args));
  GptqResult r;
  // Scales (and the NaN/Inf and shape checks) are round-to-nearest's, on the stored weight.
  r.q = quantize_weight(w, args);
  const int64_t out = w.shape[0], n = w.shape[1];
  if (f.columns != n)
    throw InputError(InputError::Kind::BadValue, w.file, w.name, "GPTQ Hessian does not match the weight's input dimension",
                     std::to_string(n), std::to_string(f.columns));
  const DType M = w.dtype;
  const int64_t gs = args.strategy == Strategy::Group ? args.group_size : n;
  const int64_t ngroups = n / gs;
  std::vector<float> scales(static_cast<size_t>(out * ngroups));
  QT_ASSERT(decode_to_f32(M, r.q.scale_bytes.data(), scales.size(), scales.data()));
  const float qmin = code_min(args.type), qmax = code_max(args.type);

  const std::vector<int64_t>& perm = f.perm;
  const std::vector<float>& Hinv = f.hinv;
  r.dead_columns = f.dead_columns;
  r.rtn_fallback = f.rtn_fallback;
  // W in f32, columns permuted; dead columns zeroed.
  const std::vector<float> w0 = decode_tensor_f32(w);
  std::vector<float> W(static_cast<size_t>(out * n));
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < n; ++j) W[i * n + j] = f.dead[j] ? 0.0f : w0[i * n + perm[j]];

  const auto t_upd = Clock::now();
  const int64_t B = std::max<int64_t>(1, opts.block_size);
  std::vector<float> err(static_cast<size_t>(out * B));
  std::vector<uint8_t> codes(static_cast<size_t>(out * n));  // original column order
  r.dequant.assign(static_cast<size_t>(out * n), 0.0f);
  std::vector<double> row_loss(static_cast<size_t>(out), 0.0);
  std::vector<float> ht, negerr;  // reused by every block
  const int64_t chunks = (out + kRowChunk - 1) / kRowChunk;
  const int nthreads = resolve_threads(threads);
  (void)nthreads;
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(n, i1 + B), bw = i2 - i1;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t c = 0; c < chunks; ++c) {
      for (int64_t row = c * kRowChunk; row < std::min(out, (c + 1) * kRowChunk); ++row) {
        float* wr = W.data() + row * n;
        float* er = err.data() + row * B;
        for (int64_t i = i1; i < i2; ++i) {
          const int64_t col = perm[static_cast<size_t>(i)];
          const float s = scales[static_cast<size_t>(row * ngroups + col / gs)];
          const float x = wr[i];
          float t = x / s;  // f32: the working weight is f32, the scale is promoted
          t = t < qmin ? qmin : (t > qmax ? qmax : t);
          const float code = std::nearbyint(t);  // half to even
          const float q = round_to_dtype(M, code * s);  // dequantized in the scale's dtype
          const float d = Hinv[static_cast<size_t>(i * n + i)];
          const float e = (x - q) / d;
          er[i - i1] = e;
          row_loss[static_cast<size_t>(row)] += static_cast<double>(e) * e;
          const float* hrow = Hinv.data() + i * n;
          // Element-wise (a product, then a difference, each rounded; no contraction): SIMD
          // lanes give the same bits as the scalar loop.
#pragma omp simd
          for (int64_t j = i + 1; j < i2; ++j) {
            const float u = e * hrow[j];
            wr[j] = wr[j] - u;
          }
          wr[i] = q;
          // The checkpoint's code is what compressed-tensors' compression gives for the
          // dtype-rounded q (the same code except in pathological cases).
          codes[static_cast<size_t>(row * n + col)] = quantize_element(q, s, args.type, M);
          r.dequant[static_cast<size_t>(row * n + col)] = q;
        }
      }
    }
    if (i2 < n) {
      // W[:, i2:] -= Err . Hinv[i1:i2, i2:]  as  W = fl(W + fl(sum_k (-err_k) h_k))
      const int64_t rest = n - i2;
      // Hinv[i1:i2, i2:] transposed, in 16 x 16 tiles (reading Hinv's rows, not its columns).
      ht.resize(static_cast<size_t>(rest * bw));
      for (int64_t j0 = 0; j0 < rest; j0 += 16)
        for (int64_t k0 = 0; k0 < bw; k0 += 16)
          for (int64_t k = k0; k < std::min(bw, k0 + 16); ++k)
            for (int64_t j = j0; j < std::min(rest, j0 + 16); ++j)
              ht[static_cast<size_t>(j * bw + k)] = Hinv[(i1 + k) * n + i2 + j];
      const PackedLinear p = pack_linear({{ht.data(), rest, bw}}, bw, threads);
      negerr.resize(static_cast<size_t>(out * bw));
      for (int64_t row = 0; row < out; ++row)
        for (int64_t k = 0; k < bw; ++k) negerr[static_cast<size_t>(row * bw + k)] = -err[static_cast<size_t>(row * B + k)];
      linear_packed(negerr.data(), out, p, nullptr, {{W.data() + i2, n, rest}}, /*add_to_output=*/true, threads);
    }
  }
  for (double l : row_loss) r.loss += l / 2.0;
  r.q.codes = std::move(codes);
  r.update_seconds = since(t_upd);
  return r;
}

}  // namespace qt
