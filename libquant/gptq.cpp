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
  const PackedLinear p = pack_linear({{xt_.data(), n_, tokens}}, tokens, threads);
  g_.resize(static_cast<size_t>(n_ * n_));
  linear_packed(xt_.data(), n_, p, nullptr, g_.data(), n_, threads);
  for (size_t k = 0; k < sum_.size(); ++k) sum_[k] += static_cast<double>(g_[k]);
  ++samples_;
}

std::vector<double> Hessian::normalized() const {
  std::vector<double> h(sum_.size());
  const double f = samples_ > 0 ? 2.0 / static_cast<double>(samples_) : 0.0;
  for (size_t k = 0; k < h.size(); ++k) h[k] = sum_[k] * f;
  return h;
}

GptqResult gptq_quantize(const TensorView& w, const QuantArgs& args, const Hessian& hess,
                         const GptqOptions& opts, int threads) {
  if (args.type == QuantType::Float8E4M3 || !(args.strategy == Strategy::Channel || args.strategy == Strategy::Group))
    throw InputError(InputError::Kind::Unsupported, w.file, w.name,
                     "GPTQ is implemented for integer weights with per-channel or per-group scales, not " +
                         describe_args(args));
  GptqResult r;
  // Scales (and the NaN/Inf and shape checks) are round-to-nearest's, on the stored weight.
  r.q = quantize_weight(w, args);
  const int64_t out = w.shape[0], n = w.shape[1];
  if (hess.columns() != n)
    throw InputError(InputError::Kind::BadValue, w.file, w.name, "GPTQ Hessian does not match the weight's input dimension",
                     std::to_string(n), std::to_string(hess.columns()));
  const DType M = w.dtype;
  const int64_t gs = args.strategy == Strategy::Group ? args.group_size : n;
  const int64_t ngroups = n / gs;
  std::vector<float> scales(static_cast<size_t>(out * ngroups));
  QT_ASSERT(decode_to_f32(M, r.q.scale_bytes.data(), scales.size(), scales.data()));
  const float qmin = code_min(args.type), qmax = code_max(args.type);

  const auto t_solve = Clock::now();
  std::vector<double> H = hess.normalized();
  // Activation order: columns by descending diag(H), ties in column order (stable).
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (opts.actorder != ActOrder::None) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return H[a * n + a] > H[b * n + b]; });
    std::vector<double> P(H.size());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) P[i * n + j] = H[perm[i] * n + perm[j]];
    H.swap(P);
  }
  // W in f32, columns permuted.
  const std::vector<float> w0 = decode_tensor_f32(w);
  std::vector<float> W(static_cast<size_t>(out * n));
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < n; ++j) W[i * n + j] = w0[i * n + perm[j]];
  // Dead columns: no calibration input ever reached them.
  for (int64_t j = 0; j < n; ++j)
    if (H[j * n + j] == 0.0) {
      ++r.dead_columns;
      H[j * n + j] = 1.0;
      for (int64_t i = 0; i < out; ++i) W[i * n + j] = 0.0f;
    }
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) mean += H[j * n + j];
  mean /= static_cast<double>(n);
  const double damp = opts.dampening_frac * mean;
  for (int64_t j = 0; j < n; ++j) H[j * n + j] += damp;

  // Hinv = upper Cholesky factor of H^-1 (f64), rounded to f32 for the loop.
  std::vector<float> Hinv(static_cast<size_t>(n * n), 0.0f);
  {
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> Hm(H.data(), n, n);
    Eigen::LLT<Eigen::MatrixXd> l1(Hm);
    bool ok = l1.info() == Eigen::Success;
    Eigen::MatrixXd U;
    if (ok) {
      Eigen::MatrixXd Hi = l1.solve(Eigen::MatrixXd::Identity(n, n));
      Hi = (Hi + Hi.transpose()) * 0.5;  // exact symmetry for the second factorization
      Eigen::LLT<Eigen::MatrixXd> l2(Hi);
      ok = l2.info() == Eigen::Success;
      if (ok) U = l2.matrixU();
    }
    if (ok) {
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j) Hinv[i * n + j] = static_cast<float>(U(i, j));
    } else {
      r.rtn_fallback = true;  // llm-compressor: identity factor, i.e. round-to-nearest column by column
      for (int64_t i = 0; i < n; ++i) Hinv[i * n + i] = 1.0f;
    }
  }
  std::vector<double>().swap(H);
  r.solve_seconds = since(t_solve);

  const auto t_upd = Clock::now();
  const int64_t B = std::max<int64_t>(1, opts.block_size);
  std::vector<float> err(static_cast<size_t>(out * B));
  std::vector<uint8_t> codes(static_cast<size_t>(out * n));  // original column order
  r.dequant.assign(static_cast<size_t>(out * n), 0.0f);
  std::vector<double> row_loss(static_cast<size_t>(out), 0.0);
  std::vector<float> ht;
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
      ht.resize(static_cast<size_t>(rest * bw));
      for (int64_t j = 0; j < rest; ++j)
        for (int64_t k = 0; k < bw; ++k) ht[static_cast<size_t>(j * bw + k)] = Hinv[(i1 + k) * n + i2 + j];
      const PackedLinear p = pack_linear({{ht.data(), rest, bw}}, bw, threads);
      std::vector<float> negerr(static_cast<size_t>(out * bw));
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
