#include "verify/layer_numerics.h"

#include <Eigen/Core>

#include <cmath>
#include <cstdio>

#include "formats/checkpoint.h"
#include "libquant/error.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/quantize.h"
#include "libquant/tensor_view.h"

namespace qt::verify {

using kernels::ActType;
using kernels::LinearDescriptor;

namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Uniform in (0, 1): the top 53 bits, offset by half a step so that log() never sees 0.
double uniform_open(uint64_t& s) { return (static_cast<double>(splitmix64(s) >> 11) + 0.5) * 0x1p-53; }

}  // namespace

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string read_input_scale(const Checkpoint& ck, const QuantizedLinearEntry& e, float& out) {
  const TensorView* t = ck.find(e.input_scale_tensor);
  if (!t) return "missing";
  if (t->numel() != 1) return "has " + std::to_string(t->numel()) + " elements, a static per-tensor scale has 1";
  std::vector<float> v = decode_tensor_f32(*t);
  out = v[0];
  if (!std::isfinite(out) || !(out > 0.0f)) return "is " + fmt("%g", out) + "; it must be finite and > 0";
  return "";
}

using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
std::vector<double> oracle_gemm(const std::vector<double>& X, int64_t M, int64_t K, int64_t N,
                                const std::function<void(int64_t n0, int64_t r, double* out)>& rows) {
  constexpr int64_t kBlock = 64;
  std::vector<double> Y(static_cast<size_t>(M * N));
  const int64_t blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1 && M * N * K >= (int64_t{1} << 20))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = b * kBlock, r = std::min(kBlock, N - n0);
    RowMatD W(r, K);
    rows(n0, r, W.data());
    Eigen::Map<const RowMatD> Xm(X.data(), M, K);
    Eigen::Map<RowMatD, 0, Eigen::OuterStride<>> Ym(Y.data() + n0, M, r, Eigen::OuterStride<>(N));
    Ym.noalias() = Xm * W.transpose();
  }
  return Y;
}

void ExactWeight::rows(int64_t n0, int64_t r, double* out, bool absolute) const {
  const auto& g = l->ref.grid;
  for (int64_t i = 0; i < r; ++i) {
    const int64_t n = n0 + i;
    const uint8_t* c = l->ref.codes + n * K;
    const float* srow = scales.data() + (n / g.rows_per) * scale_cols;
    for (int64_t k = 0; k < K; ++k) {
      const double v = static_cast<double>(code_value(l->ref.code_dtype, c[k])) * static_cast<double>(srow[k / g.cols_per]);
      out[i * K + k] = absolute ? std::fabs(v) : v;
    }
  }
}

ExactWeight exact_weight(const LoadedLinear& l, const LinearDescriptor& d) {
  ExactWeight w;
  w.l = &l;
  w.N = d.N;
  w.K = d.K;
  w.scale_cols = d.weight_scale_cols();
  const int64_t ns = d.weight_scale_rows() * w.scale_cols;
  w.scales.resize(static_cast<size_t>(ns));
  QT_ASSERT(decode_to_f32(l.ref.scale_dtype, l.ref.scales, static_cast<uint64_t>(ns), w.scales.data()));
  return w;
}

std::vector<float> dequantize_f32(const LoadedLinear& l, const LinearDescriptor& d) {
  std::vector<float> w(static_cast<size_t>(d.N * d.K));
  dequantize(l.ref.codes, l.ref.code_dtype, {d.N, d.K}, l.ref.scales, l.ref.scale_dtype, l.ref.grid, w.data());
  return w;
}

std::vector<double> consumed_activations(const LinearDescriptor& d, const float* X, int64_t M, float static_scale) {
  std::vector<double> out(static_cast<size_t>(M * d.K));
  if (d.weight_only()) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = X[i];
    return out;
  }
  const kernels::QuantizedActivations q = kernels::quantize_activations(d, X, M, static_scale);
  const DType cd = d.act_type == ActType::Float8E4M3 ? DType::F8_E4M3 : DType::I8;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < d.K; ++k)
      out[static_cast<size_t>(m * d.K + k)] =
          static_cast<double>(code_value(cd, q.codes[static_cast<size_t>(m * d.K + k)])) * static_cast<double>(q.scale(m, k));
  return out;
}

using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
void eigen_gemm_f32(const float* X, int64_t M, int64_t K, const float* W, int64_t N, float* Y) {
  constexpr int64_t kBlock = 128;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1 && M * N * K >= (int64_t{1} << 21))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = b * kBlock, r = std::min(kBlock, N - n0);
    Eigen::Map<const RowMatF> Xm(X, M, K);
    Eigen::Map<const RowMatF> Wm(W + n0 * K, r, K);
    Eigen::Map<RowMatF, 0, Eigen::OuterStride<>> Ym(Y + n0, M, r, Eigen::OuterStride<>(N));
    Ym.noalias() = Xm * Wm.transpose();
  }
}

std::vector<float> synthetic_activations(int64_t M, int64_t K, uint64_t seed, int64_t outliers) {
  QT_ASSERT(M >= 0 && K >= 1);
  if (outliers < 0) outliers = std::clamp<int64_t>(K / 64, 1, 8);
  outliers = std::min(outliers, K);
  uint64_t s = seed ^ 0x6A09E667F3BCC908ull;
  // Outlier channels: the first `outliers` entries of a Fisher-Yates shuffle of [0, K).
  std::vector<int64_t> perm(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) perm[static_cast<size_t>(k)] = k;
  for (int64_t i = 0; i < outliers; ++i) {
    const int64_t j = i + static_cast<int64_t>(splitmix64(s) % static_cast<uint64_t>(K - i));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  std::vector<float> mult(static_cast<size_t>(K), 1.0f);
  for (int64_t i = 0; i < outliers; ++i) mult[static_cast<size_t>(perm[static_cast<size_t>(i)])] = 20.0f;
  // N(0, 1) by Box-Muller in f64 (one value per pair of uniforms), rounded once to f32.
  std::vector<float> x(static_cast<size_t>(M * K));
  for (size_t i = 0; i < x.size(); ++i) {
    const double u1 = uniform_open(s), u2 = uniform_open(s);
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    x[i] = static_cast<float>(z) * mult[i % static_cast<size_t>(K)];
  }
  return x;
}

double kernel_agreement_bound(double S, float y_ref, int64_t K) {
  return 2.0 * static_cast<double>(K + 2) * 0x1p-24 * S + 0x1p-23 * std::fabs(static_cast<double>(y_ref)) + 0x1p-149;
}

}  // namespace qt::verify
