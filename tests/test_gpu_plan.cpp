// Host logic of the GPU kernels (libquant/kernels/gpu.h), all on the CPU: every can_implement rule
// and its exact reason against fake devices (H100, Ada, Ampere, Blackwell, none), the cuBLASLt
// scale-tensor layouts (hand-derived indices), the FP8 accumulation bound (hand arithmetic), the
// throughput plan (shape dedup, token list, L2 rotation, timing arithmetic) and the registry in
// this build. The GPU itself is exercised by test_gpu_cuda (skipped without a device).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "libquant/error.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/gpu.h"
#include "tests/support/test_support.h"

namespace qt::kernels::gpu {
namespace {

DeviceInfo fake(int major, int minor, const char* name) {
  DeviceInfo d;
  d.usable = true;
  d.name = name;
  d.cc_major = major;
  d.cc_minor = minor;
  d.sm_count = 132;
  d.l2_bytes = 50 << 20;
  return d;
}
const DeviceInfo kH100 = fake(9, 0, "NVIDIA H100 80GB HBM3");
const DeviceInfo kAda = fake(8, 9, "NVIDIA L40S");
const DeviceInfo kA100 = fake(8, 0, "NVIDIA A100-SXM4-80GB");
const DeviceInfo kB200 = fake(10, 0, "NVIDIA B200");
const DeviceInfo kTuring = fake(7, 5, "Tesla T4");

DeviceInfo none() {
  DeviceInfo d;
  d.error = "no CUDA device (cudaGetDeviceCount: cudaErrorNoDevice: no CUDA-capable device is detected)";
  return d;
}

LinearDescriptor fp8(Strategy w, ActScheme a, int64_t N = 4096, int64_t K = 4096) {
  LinearDescriptor d;
  d.N = N;
  d.K = K;
  d.weight_type = QuantType::Float8E4M3;
  d.weight_strategy = w;
  if (w == Strategy::Block) d.block_rows = d.block_cols = 128;
  if (w == Strategy::Group) d.weight_group = 128;
  d.act_type = ActType::Float8E4M3;
  d.act_scheme = a;
  if (a == ActScheme::DynamicGroup) d.act_group = 128;
  return d;
}
LinearDescriptor int8(Strategy w, ActScheme a, int64_t N = 4096, int64_t K = 4096) {
  LinearDescriptor d = fp8(w, a, N, K);
  d.weight_type = QuantType::Int8;
  d.act_type = ActType::Int8;
  return d;
}

TEST(GpuCanImplement, Fp8PerTensorRunsPerTensorLayersOnAdaAndHopperOnly) {
  for (ActScheme a : {ActScheme::StaticTensor, ActScheme::DynamicTensor}) {
    EXPECT_EQ(can_implement(GemmKind::Fp8Tensor, fp8(Strategy::Tensor, a), kH100), "");
    EXPECT_EQ(can_implement(GemmKind::Fp8Tensor, fp8(Strategy::Tensor, a), kAda), "");
  }
  EXPECT_EQ(can_implement(GemmKind::Fp8Tensor, fp8(Strategy::Tensor, ActScheme::StaticTensor), kA100),
            "FP8 tensor cores need compute capability 8.9 or newer; NVIDIA A100-SXM4-80GB is sm_80");
  EXPECT_EQ(can_implement(GemmKind::Fp8Tensor, fp8(Strategy::Channel, ActScheme::DynamicToken), kH100),
            "per-tensor scaling (SCALAR_32F) needs one weight scale; this layer's weights are per-channel "
            "(cuda_fp8_channel_token or cuda_fp8_block run those)");
  EXPECT_EQ(can_implement(GemmKind::Fp8Tensor, fp8(Strategy::Tensor, ActScheme::DynamicToken), kH100),
            "per-tensor scaling (SCALAR_32F) needs one activation scale; this layer's activations are dynamic per-token");
}

TEST(GpuCanImplement, OuterVectorRunsChannelAndTensorScalesOnHopperOnly) {
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Channel, ActScheme::DynamicToken), kH100), "");
  // Per-tensor values are broadcast to the [N] and [M] vectors.
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Tensor, ActScheme::DynamicToken), kH100), "");
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Channel, ActScheme::StaticTensor), kH100), "");
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Channel, ActScheme::DynamicToken), kAda),
            "OUTER_VEC_32F scaling exists only on compute capability 9.x (Hopper) in cuBLASLt 13.1; NVIDIA L40S is sm_89");
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Channel, ActScheme::DynamicToken), kB200),
            "OUTER_VEC_32F scaling exists only on compute capability 9.x (Hopper) in cuBLASLt 13.1; NVIDIA B200 is sm_100");
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Block, ActScheme::DynamicGroup), kH100),
            "OUTER_VEC_32F scaling takes one scale per output channel; this layer's weights are block");
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Channel, ActScheme::DynamicGroup), kH100),
            "OUTER_VEC_32F scaling takes one scale per token; this layer's activations are dynamic per-group");
}

TEST(GpuCanImplement, BlockScalingNeeds128x128WeightsAnd128Groups) {
  EXPECT_EQ(can_implement(GemmKind::Fp8Block, fp8(Strategy::Block, ActScheme::DynamicGroup), kH100), "");
  LinearDescriptor d = fp8(Strategy::Block, ActScheme::DynamicGroup);
  d.block_rows = d.block_cols = 64;
  d.act_group = 64;
  EXPECT_EQ(can_implement(GemmKind::Fp8Block, d, kH100),
            "BLK128x128_32F scaling needs 128x128 weight blocks; this layer's weights are 64x64 blocks");
  d = fp8(Strategy::Block, ActScheme::DynamicToken);
  EXPECT_EQ(can_implement(GemmKind::Fp8Block, d, kH100),
            "VEC128_32F scaling needs activations quantized per group of 128; this layer's are dynamic per-token");
  EXPECT_NE(can_implement(GemmKind::Fp8Block, fp8(Strategy::Block, ActScheme::DynamicGroup), kAda).find("sm_89"),
            std::string::npos);
}

TEST(GpuCanImplement, Fp8NeedsSixteenByteAlignedKAndN) {
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, fp8(Strategy::Channel, ActScheme::DynamicToken, 4096, 4104), kH100),
            "K=4104 is not a multiple of 16: cuBLASLt FP8 needs 16-byte aligned rows of A and B (K one-byte codes each)");
  EXPECT_EQ(can_implement(GemmKind::Fp8Tensor, fp8(Strategy::Tensor, ActScheme::StaticTensor, 4100, 4096), kH100),
            "N=4100 is not a multiple of 8: cuBLASLt FP8 needs 16-byte aligned columns of the BF16 output (N two-byte "
            "values each)");
  EXPECT_EQ(can_implement(GemmKind::Fp8Tensor, fp8(Strategy::Tensor, ActScheme::StaticTensor, 8, 16), kH100), "");
}

TEST(GpuCanImplement, Int8RunsChannelOrTensorWeightsWithAnInt32SumThatCannotOverflow) {
  EXPECT_EQ(can_implement(GemmKind::Int8, int8(Strategy::Channel, ActScheme::DynamicToken), kH100), "");
  EXPECT_EQ(can_implement(GemmKind::Int8, int8(Strategy::Tensor, ActScheme::StaticTensor), kH100), "");
  // The dequant kernel is compiled for sm_90 (+ compute_90 PTX): older GPUs could not load it.
  EXPECT_EQ(can_implement(GemmKind::Int8, int8(Strategy::Channel, ActScheme::DynamicToken), kTuring),
            "qtool's INT8 dequant kernel is built for compute capability 9.0 (sm_90 + compute_90 PTX); "
            "Tesla T4 is sm_75");
  EXPECT_EQ(can_implement(GemmKind::Int8, int8(Strategy::Channel, ActScheme::DynamicToken, 4098, 4096), kH100),
            "N=4098, K=4096: cuBLASLt INT8 (IMMA, column-major) needs N and K multiples of 4");
  EXPECT_EQ(can_implement(GemmKind::Int8, int8(Strategy::Channel, ActScheme::DynamicToken, 64, 131072), kH100),
            "K=131072 exceeds 131071: an int32 sum of K INT8 products (each up to 2^14) could overflow");
  EXPECT_EQ(can_implement(GemmKind::Int8, int8(Strategy::Group, ActScheme::DynamicToken), kH100),
            "cuBLASLt's INT8 GEMM returns one int32 sum over all of K; per-group weights would need one per scale segment");
  EXPECT_EQ(can_implement(GemmKind::Int8, fp8(Strategy::Channel, ActScheme::DynamicToken), kH100),
            "needs INT8 weights and activations");
  // The CPU kernels' structural rules apply too (vLLM has no INT8 dynamic per-tensor activations).
  EXPECT_NE(can_implement(GemmKind::Int8, int8(Strategy::Channel, ActScheme::DynamicTensor), kH100), "");
}

TEST(GpuCanImplement, WeightOnlyLayersAndTheBf16BaselineAreRefused) {
  LinearDescriptor w = fp8(Strategy::Channel, ActScheme::None);
  w.act_type = ActType::None;
  EXPECT_EQ(can_implement(GemmKind::Fp8ChannelToken, w, kH100),
            "weight-only layers (FP8 E4M3 weights, 16-bit activations) need a mixed-input kernel (Marlin, Machete); no "
            "cuBLASLt GEMM runs them");
  EXPECT_EQ(can_implement(GemmKind::Bf16, fp8(Strategy::Tensor, ActScheme::StaticTensor), kH100),
            "throughput baseline only: it computes the unquantized BF16 GEMM, not the checkpoint's quantized one");
}

TEST(GpuCanImplement, WithoutADeviceEveryKindGivesTheDeviceError) {
  const DeviceInfo n = none();
  for (GemmKind k : all_gemm_kinds()) {
    EXPECT_EQ(can_implement(k, fp8(Strategy::Tensor, ActScheme::StaticTensor), n), n.error) << kernel_name(k);
    EXPECT_EQ(shape_reason(k, 4096, 4096, n), n.error);
  }
}

TEST(GpuCanImplement, BenchDescriptorsAreAcceptedAtLlamaShapesOnH100) {
  for (GemmKind k : all_gemm_kinds())
    for (auto [N, K] : {std::pair<int64_t, int64_t>{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}})
      EXPECT_EQ(shape_reason(k, N, K, kH100), "") << kernel_name(k) << " " << N << "x" << K;
  EXPECT_EQ(shape_reason(GemmKind::Bf16, 4100, 4096, kH100),
            "N=4100, K=4096: BF16 tensor-core GEMMs need 16-byte aligned rows (N, K multiples of 8)");
  EXPECT_NE(shape_reason(GemmKind::Fp8ChannelToken, 4096, 4096, kAda), "");
}

TEST(GpuKinds, NamesRoundTripAndPrioritiesPreferPerTensorFp8) {
  for (GemmKind k : all_gemm_kinds()) EXPECT_EQ(gemm_kind_from_name(kernel_name(k)), k);
  EXPECT_FALSE(gemm_kind_from_name("cuda_magic").has_value());
  EXPECT_GT(priority(GemmKind::Fp8Tensor), priority(GemmKind::Fp8ChannelToken));
  EXPECT_GT(priority(GemmKind::Fp8ChannelToken), priority(GemmKind::Fp8Block));
  EXPECT_GT(priority(GemmKind::Int8), priority(GemmKind::Bf16));
  EXPECT_TRUE(is_fp8(GemmKind::Fp8Block));
  EXPECT_FALSE(is_fp8(GemmKind::Int8));
}

// ---- scale layouts (indices derived by hand from libquant/kernels/KERNELS.md §5.3) -------

TEST(GpuScaleLayout, Blk128LeadingDimensionRoundsTheKBlockCountUpToFour) {
  EXPECT_EQ(blk128_k_blocks(128), 1);
  EXPECT_EQ(blk128_ld(128), 4);
  EXPECT_EQ(blk128_k_blocks(384), 3);
  EXPECT_EQ(blk128_ld(384), 4);
  EXPECT_EQ(blk128_k_blocks(4000), 32);
  EXPECT_EQ(blk128_ld(4096), 32);
  EXPECT_EQ(blk128_k_blocks(14336), 112);
  EXPECT_EQ(blk128_ld(14336), 112);
  EXPECT_EQ(blk128_ld(640), 8);  // 5 blocks -> 8
  EXPECT_EQ(vec128_rows(1), 4);
  EXPECT_EQ(vec128_rows(4), 4);
  EXPECT_EQ(vec128_rows(13), 16);
}

TEST(GpuScaleLayout, Blk128WeightScalesAreKMajorWithPaddedColumns) {
  // N = 300 rows (3 row blocks, the last partial), K = 384 (L = 3, L4 = 4). Segment table value of
  // row n, segment s: 10 * (n / 128) + s + 1 (constant inside a 128x128 block).
  const int64_t N = 300, K = 384, L = 3;
  std::vector<float> seg(static_cast<size_t>(N * L));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < L; ++s) seg[static_cast<size_t>(n * L + s)] = static_cast<float>(10 * (n / 128) + s + 1);
  const std::vector<float> out = blk128_weight_scales(seg, N, K);
  // L4 * ceil(N / 128) = 4 * 3; (nb, kb) at kb + 4 nb; column 3 of each row block is padding (0).
  const std::vector<float> want = {1, 2, 3, 0, 11, 12, 13, 0, 21, 22, 23, 0};
  EXPECT_EQ(out, want);
}

TEST(GpuScaleLayout, Vec128ActivationScalesAreTokenMajorWithRowsPaddedToFour) {
  QuantizedActivations qa;
  qa.type = ActType::Float8E4M3;
  qa.M = 5;
  qa.K = 256;
  qa.group = 128;
  qa.groups_per_row = 2;
  for (int m = 0; m < 5; ++m)
    for (int g = 0; g < 2; ++g) qa.scales.push_back(static_cast<float>(100 * m + g));
  // Mp = 8; (m, kb) at m + 8 kb; rows 5..7 are padding (1.0).
  const std::vector<float> want = {0, 100, 200, 300, 400, 1, 1, 1, 1, 101, 201, 301, 401, 1, 1, 1};
  EXPECT_EQ(vec128_act_scales(qa), want);
}

TEST(GpuScaleLayout, Vec128ScalesOfRealQuantizedActivationsLandAtTokenPlusBlockTimesRows) {
  const LinearDescriptor d = fp8(Strategy::Block, ActScheme::DynamicGroup, 256, 512);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (int64_t M : {1, 3, 4, 7}) {
    std::vector<float> x(static_cast<size_t>(M * d.K));
    for (auto& v : x) v = nd(rng) * static_cast<float>(1 + rng() % 7);
    const QuantizedActivations qa = quantize_activations(d, x.data(), M, 0.0f);
    const std::vector<float> s = vec128_act_scales(qa);
    const int64_t Mp = vec128_rows(M);
    ASSERT_EQ(static_cast<int64_t>(s.size()), Mp * 4);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t kb = 0; kb < 4; ++kb) EXPECT_EQ(s[static_cast<size_t>(m + kb * Mp)], qa.scale(m, kb * 128));
  }
}

TEST(GpuScaleLayout, OuterVectorActivationScalesAreOnePerToken) {
  const LinearDescriptor tok = fp8(Strategy::Channel, ActScheme::DynamicToken, 64, 64);
  std::vector<float> x(3 * 64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) * (1 + static_cast<float>(i / 64));
  const QuantizedActivations qa = quantize_activations(tok, x.data(), 3, 0.0f);
  EXPECT_EQ(outer_vec_act_scales(qa), (std::vector<float>{qa.scale(0, 0), qa.scale(1, 0), qa.scale(2, 0)}));
  // A static per-tensor scale arrives repeated per row.
  const LinearDescriptor st = fp8(Strategy::Channel, ActScheme::StaticTensor, 64, 64);
  const QuantizedActivations qs = quantize_activations(st, x.data(), 3, 0.25f);
  EXPECT_EQ(outer_vec_act_scales(qs), (std::vector<float>{0.25f, 0.25f, 0.25f}));
}

// ---- FP8 accumulation bound (hand arithmetic from the formula in gpu.h) --------------------

TEST(GpuFp8Bound, FastAccumulationChunkIsAllOfKAndExactAccumulationPromotesEvery128) {
  // K = 4096, S = 1, y_ref = 0.
  EXPECT_DOUBLE_EQ(fp8_error_bound(1.0, 0.0f, 4096, true), 4096 * 0x1p-12 + 4 * 0x1p-24 + 0x1p-149);
  EXPECT_DOUBLE_EQ(fp8_error_bound(1.0, 0.0f, 4096, false), 128 * 0x1p-12 + 35 * 0x1p-24 + 0x1p-149);
  // K <= 128: one chunk either way.
  EXPECT_DOUBLE_EQ(fp8_error_bound(2.0, 0.0f, 96, true), fp8_error_bound(2.0, 0.0f, 96, false));
  EXPECT_DOUBLE_EQ(fp8_error_bound(1.0, 0.0f, 96, false), 96 * 0x1p-12 + 4 * 0x1p-24 + 0x1p-149);
  // The output rounding term.
  EXPECT_DOUBLE_EQ(fp8_error_bound(0.0, -8.0f, 4096, false), 8 * 0x1p-22 + 0x1p-149);
  // Grows with K under fast accumulation, stays flat per chunk without it.
  EXPECT_LT(fp8_error_bound(1.0, 0.0f, 1024, true), fp8_error_bound(1.0, 0.0f, 8192, true));
  EXPECT_LT(fp8_error_bound(1.0, 0.0f, 8192, false), fp8_error_bound(1.0, 0.0f, 8192, true));
}

// ---- throughput plan -----------------------------------------------------------------------

TEST(GpuBenchPlan, TokenCountsAreTheIssues) {
  EXPECT_EQ(default_bench_tokens(), (std::vector<int64_t>{1, 16, 128, 1024, 4096}));
  EXPECT_EQ(kPeakSize, 8192);
}

TEST(GpuBenchPlan, DistinctShapesMergeLayersInFirstAppearanceOrder) {
  const std::vector<LayerShape> layers = {
      {4096, 4096, {"q"}}, {1024, 4096, {"k"}}, {1024, 4096, {"v"}}, {4096, 4096, {"o"}},
      {14336, 4096, {"gate"}}, {14336, 4096, {"up"}}, {4096, 14336, {"down"}}, {4096, 4096, {"q1"}}};
  const std::vector<LayerShape> s = distinct_shapes(layers);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].N, 4096);
  EXPECT_EQ(s[0].K, 4096);
  EXPECT_EQ(s[0].modules, (std::vector<std::string>{"q", "o", "q1"}));
  EXPECT_EQ(s[1].modules, (std::vector<std::string>{"k", "v"}));
  EXPECT_EQ(s[2].N, 14336);
  EXPECT_EQ(s[3].K, 14336);
  EXPECT_TRUE(distinct_shapes({}).empty());
}

TEST(GpuBenchPlan, OperandBytesCountEveryMatrixOnce) {
  EXPECT_EQ(gemm_bytes(GemmKind::Bf16, 8192, 8192, 8192), int64_t{6} * 8192 * 8192);
  EXPECT_EQ(gemm_bytes(GemmKind::Fp8Tensor, 1, 4096, 4096), 4096 * 4096 + 4096 + 2 * 4096 + 8);
  EXPECT_EQ(gemm_bytes(GemmKind::Int8, 16, 1024, 4096), 1024 * 4096 + 16 * 4096 + 6 * 16 * 1024 + 4 * (1024 + 16));
}

TEST(GpuBenchPlan, RotationKeepsEverySetOutOfL2UntilItsNextUse) {
  const int64_t l2 = 50 << 20;
  EXPECT_EQ(rotation_sets(16 << 20, l2, int64_t{4} << 30), 8);   // ceil(100/16) + 1
  EXPECT_EQ(rotation_sets(int64_t{200} << 20, l2, int64_t{4} << 30), 2);  // one other set > 2 x L2
  EXPECT_EQ(rotation_sets(16 << 20, l2, 40 << 20), 2);            // capped by the budget
  EXPECT_EQ(rotation_sets(int64_t{1} << 30, l2, 512 << 20), 1);   // at least one
  EXPECT_EQ(rotation_sets(0, l2, 1 << 30), 1);
  // 50 MB over 16 KB sets: thousands of sets, within the budget.
  EXPECT_EQ(rotation_sets(16 << 10, l2, int64_t{4} << 30), 6401);
}

TEST(GpuBenchPlan, TimingArithmetic) {
  EXPECT_EQ(calls_per_repeat(10e-6, 2e-4), 20);
  EXPECT_EQ(calls_per_repeat(1.0, 2e-4), 1);
  EXPECT_EQ(calls_per_repeat(0.0, 2e-4), 1);
  EXPECT_EQ(calls_per_repeat(1e-9, 1.0), 10000);
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 3, 2}), 2.5);
  EXPECT_TRUE(std::isnan(median({})));
  EXPECT_DOUBLE_EQ(tflops(8192, 8192, 8192, 1.0), 1.099511627776);
  EXPECT_DOUBLE_EQ(tflops(1, 4096, 4096, 1e-6), 2.0 * 4096 * 4096 / 1e-6 / 1e12);
}

// ---- this build and this machine -----------------------------------------------------------

TEST(GpuRegistry, HoldsTheFiveKernelsInACudaBuildAndNoneOtherwise) {
  const Registry& r = cuda_registry();
  if (!built_with_cuda()) {
    EXPECT_TRUE(r.kernels().empty());
    EXPECT_CONTAINS(device_info().error, "qtool was built without CUDA");
    return;
  }
  ASSERT_EQ(r.kernels().size(), 5u);
  EXPECT_EQ(r.kernels()[0]->name(), "cuda_fp8_tensor");
  EXPECT_EQ(r.kernels()[1]->name(), "cuda_fp8_channel_token");
  EXPECT_EQ(r.kernels()[2]->name(), "cuda_fp8_block");
  EXPECT_EQ(r.kernels()[3]->name(), "cuda_int8");
  EXPECT_EQ(r.kernels()[4]->name(), "cuda_bf16");
  // The registry's select() sees the same rules as the free function, on this machine's device.
  const LinearDescriptor d = fp8(Strategy::Channel, ActScheme::DynamicToken);
  const Selection s = r.select(d);
  if (device_info().usable && device_info().cc_major == 9) {
    ASSERT_NE(s.chosen, nullptr);
    EXPECT_EQ(s.chosen->name(), "cuda_fp8_channel_token");
  } else if (!device_info().usable) {
    EXPECT_EQ(s.chosen, nullptr);
    EXPECT_CONTAINS(s.error, device_info().error);
  }
}

TEST(GpuDevice, AMissingDeviceIsReportedNotThrownUntilRequired) {
  const DeviceInfo& d = device_info();
  if (d.usable) {
    EXPECT_GE(d.cc_major, 1);
    EXPECT_NO_THROW(require_device());
    EXPECT_CONTAINS(d.describe(), d.name);
    return;
  }
  EXPECT_FALSE(d.error.empty());
  try {
    require_device();
    ADD_FAILURE() << "require_device did not throw";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Unsupported);
    EXPECT_EQ(e.problem(), "--device cuda: " + d.error);
  }
  EXPECT_EQ(d.describe(), "no usable CUDA device: " + d.error);
}

TEST(GpuDevice, DescribeNamesChipArchitectureMemoryAndVersions) {
  DeviceInfo d = kH100;
  d.memory_bytes = int64_t{85} << 30;
  d.driver_version = 13000;
  d.runtime_version = 13000;
  d.cublaslt_version = 130100;
  EXPECT_EQ(d.describe(),
            "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 50 MiB L2, 85.0 GiB, driver 13.0, runtime 13.0, cuBLASLt 13.1.0");
}

}  // namespace
}  // namespace qt::kernels::gpu
