// The GPU kernels on a real GPU (libquant/kernels/cuda): every kernel of cuda_registry() against
// the CPU oracle cpu_ref on the same generated layers and activations -- INT8 int32 accumulators
// and outputs bit for bit, FP8 (fast accumulation off and on) within gpu::fp8_error_bound and the
// relative-L2 gate -- at sizes with remainders, M != N and non-uniform scales
// (libquant/kernels/KERNELS.md rule 2: swapped scale vectors only show then), plus a throughput
// smoke test.
//
// Every test skips (GTEST_SKIP, with the reason) when no usable CUDA device is found, which is
// the case in CI and on machines without a GPU. NOT YET RUN ON A GPU when written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>

#include "verify/verify_cuda.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/gpu.h"
#include "libquant/kernels/registry.h"
#include "tests/support/quantized_layer.h"

namespace qt::kernels::gpu {
namespace {

class CudaGemm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!device_info().usable) GTEST_SKIP() << "no usable CUDA device: " << device_info().error;
  }
};
using CudaBench = CudaGemm;

using Layer = test::QuantizedLayer;  // tests/support/quantized_layer.h

LinearDescriptor desc(QuantType w, Strategy ws, ActType a, ActScheme as, int64_t N, int64_t K) {
  LinearDescriptor d;
  d.N = N;
  d.K = K;
  d.weight_type = w;
  d.weight_strategy = ws;
  if (ws == Strategy::Block) d.block_rows = d.block_cols = 128;
  d.act_type = a;
  d.act_scheme = as;
  if (as == ActScheme::DynamicGroup) d.act_group = 128;
  d.weight_scale_dtype = DType::BF16;
  d.input_scale_dtype = DType::F32;
  return d;
}

Layer make_layer(const LinearDescriptor& d, uint32_t seed) {
  std::mt19937 rng(seed);
  Layer L;
  L.d = d;
  L.codes.resize(static_cast<size_t>(d.N * d.K));
  for (uint8_t& c : L.codes) {
    c = static_cast<uint8_t>(rng() & 0xFF);
    if (d.weight_type == QuantType::Float8E4M3 && (c & 0x7F) == 0x7F) c ^= 0x01;
  }
  std::uniform_real_distribution<float> u(-10.0f, -4.0f);
  for (int64_t i = 0; i < d.weight_scale_rows() * d.weight_scale_cols(); ++i) L.scale_bits.push_back(bf16_from_f32(std::exp2(u(rng))));
  L.input_scale = d.act_type == ActType::Int8 ? 0.05f : 0.01f;  // some activations saturate
  return L;
}

std::vector<float> make_x(int64_t M, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(M * K));
  for (auto& v : x) {
    v = nd(rng);
    if (rng() % 97 == 0) v *= 40.0f;
  }
  return x;
}

const CudaKernel& kernel(GemmKind k) {
  const Kernel* p = cuda_registry().find(kernel_name(k));
  EXPECT_NE(p, nullptr);
  return static_cast<const CudaKernel&>(*p);
}

// Runs kernel k and cpu_ref on (L, X) and returns the comparisons (one per accumulation mode).
std::vector<verify::CudaAccuracy> compare(GemmKind k, const Layer& L, const std::vector<float>& X, int64_t M) {
  const LinearDescriptor& d = L.d;
  const CudaKernel& g = kernel(k);
  EXPECT_EQ(g.can_implement(d), "");
  const Kernel& ref = cpu_ref_kernel();
  std::vector<float> yref(static_cast<size_t>(M * d.N)), S;
  ref.run(*ref.pack(d, L.ref()), X.data(), M, yref.data());
  if (d.act_type == ActType::Float8E4M3) {
    Layer A = L;
    for (auto& c : A.codes) c &= 0x7F;
    std::vector<float> xa(X.size());
    for (size_t i = 0; i < X.size(); ++i) xa[i] = std::fabs(X[i]);
    S.resize(yref.size());
    ref.run(*ref.pack(d, A.ref()), xa.data(), M, S.data());
  }
  auto p = g.pack(d, L.ref());
  std::vector<verify::CudaAccuracy> out;
  for (bool fast : is_fp8(k) ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
    verify::CudaAccuracy a;
    a.kernel = std::string(g.name());
    a.mode = fast ? "fast" : "exact";
    a.required_exact = k == GemmKind::Int8;
    std::vector<float> y(yref.size(), std::numeric_limits<float>::quiet_NaN());  // poisoned
    if (k == GemmKind::Int8) {
      std::vector<int32_t> acc(yref.size(), 0x7EADBEEF);
      g.run_int32(*p, X.data(), M, acc.data());
      const QuantizedActivations qa = quantize_activations(d, X.data(), M, L.input_scale);
      a.acc_exact = true;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < d.N; ++n) {
          int64_t s = 0;
          for (int64_t kk = 0; kk < d.K; ++kk)
            s += int64_t{static_cast<int8_t>(qa.codes[static_cast<size_t>(m * d.K + kk)])} *
                 static_cast<int8_t>(L.codes[static_cast<size_t>(n * d.K + kk)]);
          if (s != acc[static_cast<size_t>(m * d.N + n)]) a.acc_exact = false;
        }
    }
    try {
      g.run_with(*p, X.data(), M, y.data(), fast);
    } catch (const InputError& e) {
      // cuBLASLt may offer no fast-accumulation algorithm for a scale mode (verify reports that
      // as "unsupported", not as a failure); the exact-accumulation run must always work.
      if (!fast) throw;
      std::printf("note: %s fast accumulation unsupported: %s\n", a.kernel.c_str(), e.problem().c_str());
      continue;
    }
    verify::compare_with_reference(y.data(), yref.data(), S.empty() ? nullptr : S.data(), M * d.N, d.K, fast, a);
    out.push_back(a);
  }
  return out;
}

void expect_ok(GemmKind k, const LinearDescriptor& d, int64_t M, uint32_t seed) {
  const Layer L = make_layer(d, seed);
  const std::vector<float> X = make_x(M, d.K, seed + 1);
  for (const auto& a : compare(k, L, X, M))
    EXPECT_TRUE(a.ok) << a.kernel << " " << a.mode << " M=" << M << " N=" << d.N << " K=" << d.K << ": bit_exact "
                      << a.bit_exact << " acc_exact " << a.acc_exact << " max|diff| " << a.max_abs_diff << " rel L2 "
                      << a.rel_l2 << " bound ratio " << a.max_bound_ratio;
}

TEST_F(CudaGemm, Int8AccumulatorsAndOutputsAreBitExactAgainstCpuRef) {
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 64}, {7, 132, 260}, {33, 1024, 4096}, {130, 256, 1028}}) {
    expect_ok(GemmKind::Int8, desc(QuantType::Int8, Strategy::Channel, ActType::Int8, ActScheme::DynamicToken, N, K), M, 11);
    expect_ok(GemmKind::Int8, desc(QuantType::Int8, Strategy::Tensor, ActType::Int8, ActScheme::StaticTensor, N, K), M, 12);
  }
}

TEST_F(CudaGemm, Fp8PerTensorMatchesCpuRefWithinTheBoundWithAndWithoutFastAccumulation) {
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 64}, {5, 136, 4096}, {130, 512, 1024}, {17, 256, 16384}}) {
    expect_ok(GemmKind::Fp8Tensor, desc(QuantType::Float8E4M3, Strategy::Tensor, ActType::Float8E4M3, ActScheme::StaticTensor, N, K), M, 21);
    expect_ok(GemmKind::Fp8Tensor, desc(QuantType::Float8E4M3, Strategy::Tensor, ActType::Float8E4M3, ActScheme::DynamicTensor, N, K), M, 22);
  }
}

TEST_F(CudaGemm, Fp8OuterVectorPutsChannelScalesOnWeightsAndTokenScalesOnActivations) {
  if (device_info().cc_major != 9) GTEST_SKIP() << "OUTER_VEC_32F is sm_90 only; this is " << device_info().name;
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 64}, {3, 200, 512}, {77, 1024, 4096}, {256, 136, 1024}}) {
    expect_ok(GemmKind::Fp8ChannelToken, desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3, ActScheme::DynamicToken, N, K), M, 31);
    expect_ok(GemmKind::Fp8ChannelToken, desc(QuantType::Float8E4M3, Strategy::Tensor, ActType::Float8E4M3, ActScheme::DynamicToken, N, K), M, 32);
    expect_ok(GemmKind::Fp8ChannelToken, desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3, ActScheme::StaticTensor, N, K), M, 33);
  }
}

TEST_F(CudaGemm, BlockScalesFollowTheDocumentedLayout) {
  if (device_info().cc_major != 9) GTEST_SKIP() << "VEC128/BLK128x128 scaling is sm_90 only; this is " << device_info().name;
  // N = 384 (3 row blocks), K = 640 (5 K-blocks, padded to L4 = 8); every block scale differs,
  // so a wrong layout (K-major vs N-major, unpadded, M- vs K-major activations) fails loudly.
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 384, 640}, {5, 384, 640}, {130, 256, 1024}, {64, 1024, 4096}})
    expect_ok(GemmKind::Fp8Block, desc(QuantType::Float8E4M3, Strategy::Block, ActType::Float8E4M3, ActScheme::DynamicGroup, N, K), M, 41);
}

TEST_F(CudaGemm, ZeroTokensWritesNothing) {
  const LinearDescriptor d = desc(QuantType::Int8, Strategy::Channel, ActType::Int8, ActScheme::DynamicToken, 64, 64);
  const Layer L = make_layer(d, 5);
  const CudaKernel& g = kernel(GemmKind::Int8);
  auto p = g.pack(d, L.ref());
  float y = 42.0f;
  g.run(*p, nullptr, 0, &y);
  EXPECT_EQ(y, 42.0f);
}

TEST_F(CudaGemm, TheRegistryPicksPerTensorFp8AndRefusesWeightOnlyLayers) {
  const Registry& r = cuda_registry();
  const Selection s = r.select(desc(QuantType::Float8E4M3, Strategy::Tensor, ActType::Float8E4M3, ActScheme::StaticTensor, 4096, 4096));
  ASSERT_NE(s.chosen, nullptr) << s.error;
  EXPECT_EQ(s.chosen->name(), "cuda_fp8_tensor");
  const Selection w = r.select(desc(QuantType::Float8E4M3, Strategy::Channel, ActType::None, ActScheme::None, 4096, 4096));
  EXPECT_EQ(w.chosen, nullptr);
  EXPECT_NE(w.error.find("mixed-input kernel"), std::string::npos) << w.error;
}

TEST_F(CudaBench, EveryKindProducesPositiveThroughputOnASmallShape) {
  BenchConfig cfg;
  cfg.repeats = 3;
  cfg.warmup_calls = 2;
  const std::vector<int64_t> Ms = {1, 64};
  for (GemmKind k : all_gemm_kinds()) {
    if (!shape_reason(k, 1024, 1024, device_info()).empty()) continue;
    for (const BenchCell& c : bench_gemm(k, 1024, 1024, Ms, cfg)) {
      EXPECT_EQ(c.error, "") << kernel_name(k) << " " << c.variant << " M=" << c.M;
      EXPECT_GT(c.tflops, 0.0) << kernel_name(k);
      EXPECT_GE(c.sets, 2);
      EXPECT_FALSE(c.algo.empty());
      EXPECT_GE(c.seconds, c.seconds_min);
    }
  }
}

}  // namespace
}  // namespace qt::kernels::gpu
