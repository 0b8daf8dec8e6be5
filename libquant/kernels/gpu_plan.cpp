// Host logic of the GPU kernels (gpu.h): rules, scale layouts, error bound, throughput plan.
// Compiled in every build (no CUDA header here) so that CI tests all of it without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "libquant/error.h"
#include "libquant/kernels/cpu_common.h"
#include "libquant/kernels/gpu.h"

namespace qt::kernels::gpu {
namespace {

std::string q(int64_t v) { return std::to_string(v); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

std::string cc_text(const DeviceInfo& dev) {
  return "sm_" + std::to_string(dev.cc_major) + std::to_string(dev.cc_minor);
}

// Rule 1 of can_implement: device present and its compute capability.
std::string device_reason(GemmKind k, const DeviceInfo& dev) {
  if (!dev.usable) return dev.error.empty() ? "no usable CUDA device" : dev.error;
  switch (k) {
    case GemmKind::Fp8Tensor:
      if (dev.cc() < 89)
        return "FP8 tensor cores need compute capability 8.9 or newer; " + dev.name + " is " + cc_text(dev);
      return "";
    case GemmKind::Fp8ChannelToken:
    case GemmKind::Fp8Block:
      if (dev.cc_major != 9)
        return std::string(k == GemmKind::Fp8Block ? "VEC128_32F/BLK128x128_32F" : "OUTER_VEC_32F") +
               " scaling exists only on compute capability 9.x (Hopper) in cuBLASLt 13.1; " + dev.name +
               " is " + cc_text(dev);
      return "";
    case GemmKind::Int8:
      // cuBLASLt's INT8 GEMM runs from 7.5, but qtool's dequant kernel (elementwise.cu) is built
      // for sm_90 machine code + compute_90 PTX only (one arch keeps CI's nvcc time small): PTX
      // JIT-compiles for newer GPUs, never for older ones.
      if (dev.cc() < 90)
        return "qtool's INT8 dequant kernel is built for compute capability 9.0 (sm_90 + compute_90 PTX); " +
               dev.name + " is " + cc_text(dev);
      return "";
    case GemmKind::Bf16:
      if (dev.cc() < 80)
        return "BF16 tensor cores need compute capability 8.0 or newer; " + dev.name + " is " + cc_text(dev);
      return "";
  }
  return "";
}

std::string fp8_alignment(const LinearDescriptor& d) {
  if (d.K % 16 != 0)
    return "K=" + q(d.K) + " is not a multiple of 16: cuBLASLt FP8 needs 16-byte aligned rows of A and B "
           "(K one-byte codes each)";
  if (d.N % 8 != 0)
    return "N=" + q(d.N) + " is not a multiple of 8: cuBLASLt FP8 needs 16-byte aligned columns of the "
           "BF16 output (N two-byte values each)";
  return "";
}

std::string strat(Strategy s) {
  switch (s) {
    case Strategy::Tensor: return "per-tensor";
    case Strategy::Channel: return "per-channel";
    case Strategy::Group: return "per-group";
    case Strategy::Block: return "block";
    case Strategy::Token: return "per-token";
  }
  return "?";
}

bool act_fp8_tensor(const LinearDescriptor& d) {
  return d.act_type == ActType::Float8E4M3 &&
         (d.act_scheme == ActScheme::StaticTensor || d.act_scheme == ActScheme::DynamicTensor);
}

}  // namespace

std::string DeviceInfo::describe() const {
  if (!usable) return "no usable CUDA device: " + error;
  char b[512];
  std::snprintf(b, sizeof b, "%s, sm_%d%d, %d SMs, %.0f MiB L2, %.1f GiB, driver %d.%d, runtime %d.%d, cuBLASLt %lld.%lld.%lld",
                name.c_str(), cc_major, cc_minor, sm_count, static_cast<double>(l2_bytes) / (1 << 20),
                static_cast<double>(memory_bytes) / (1 << 30), driver_version / 1000, (driver_version % 1000) / 10,
                runtime_version / 1000, (runtime_version % 1000) / 10, static_cast<long long>(cublaslt_version / 10000),
                static_cast<long long>((cublaslt_version / 100) % 100), static_cast<long long>(cublaslt_version % 100));
  return b;
}

const DeviceInfo& require_device() {
  const DeviceInfo& d = device_info();
  if (!d.usable) throw InputError(InputError::Kind::Unsupported, "", "", "--device cuda: " + d.error);
  return d;
}

const std::vector<GemmKind>& all_gemm_kinds() {
  static const std::vector<GemmKind> k = {GemmKind::Bf16, GemmKind::Fp8Tensor, GemmKind::Fp8ChannelToken,
                                          GemmKind::Fp8Block, GemmKind::Int8};
  return k;
}

std::string_view kernel_name(GemmKind k) {
  switch (k) {
    case GemmKind::Bf16: return "cuda_bf16";
    case GemmKind::Fp8Tensor: return "cuda_fp8_tensor";
    case GemmKind::Fp8ChannelToken: return "cuda_fp8_channel_token";
    case GemmKind::Fp8Block: return "cuda_fp8_block";
    case GemmKind::Int8: return "cuda_int8";
  }
  return "?";
}

std::optional<GemmKind> gemm_kind_from_name(std::string_view name) {
  for (GemmKind k : all_gemm_kinds())
    if (kernel_name(k) == name) return k;
  return std::nullopt;
}

bool is_fp8(GemmKind k) {
  return k == GemmKind::Fp8Tensor || k == GemmKind::Fp8ChannelToken || k == GemmKind::Fp8Block;
}

int priority(GemmKind k) {
  switch (k) {
    case GemmKind::Fp8Tensor: return 130;
    case GemmKind::Fp8ChannelToken: return 120;
    case GemmKind::Fp8Block: return 110;
    case GemmKind::Int8: return 100;
    case GemmKind::Bf16: return 0;
  }
  return 0;
}

std::string can_implement(GemmKind k, const LinearDescriptor& d, const DeviceInfo& dev) {
  if (std::string why = device_reason(k, dev); !why.empty()) return why;
  if (k == GemmKind::Bf16)
    return "throughput baseline only: it computes the unquantized BF16 GEMM, not the checkpoint's quantized one";
  if (std::string why = detail::check_common(d); !why.empty()) return why;
  if (d.weight_only())
    return "weight-only layers (" + quant_type_name(d.weight_type) +
           " weights, 16-bit activations) need a mixed-input kernel (Marlin, Machete); no cuBLASLt GEMM runs them";
  const bool w_fp8 = d.weight_type == QuantType::Float8E4M3;
  const bool a_fp8 = d.act_type == ActType::Float8E4M3;
  switch (k) {
    case GemmKind::Fp8Tensor:
      if (!w_fp8 || !a_fp8) return "needs FP8 E4M3 weights and activations";
      if (d.weight_strategy != Strategy::Tensor)
        return "per-tensor scaling (SCALAR_32F) needs one weight scale; this layer's weights are " +
               strat(d.weight_strategy) + " (cuda_fp8_channel_token or cuda_fp8_block run those)";
      if (!act_fp8_tensor(d))
        return "per-tensor scaling (SCALAR_32F) needs one activation scale; this layer's activations are " +
               std::string(act_scheme_name(d.act_scheme));
      return fp8_alignment(d);
    case GemmKind::Fp8ChannelToken:
      if (!w_fp8 || !a_fp8) return "needs FP8 E4M3 weights and activations";
      if (d.weight_strategy != Strategy::Tensor && d.weight_strategy != Strategy::Channel)
        return "OUTER_VEC_32F scaling takes one scale per output channel; this layer's weights are " +
               strat(d.weight_strategy);
      if (d.act_scheme != ActScheme::DynamicToken && !act_fp8_tensor(d))
        return "OUTER_VEC_32F scaling takes one scale per token; this layer's activations are " +
               std::string(act_scheme_name(d.act_scheme));
      return fp8_alignment(d);
    case GemmKind::Fp8Block:
      if (!w_fp8 || !a_fp8) return "needs FP8 E4M3 weights and activations";
      if (d.weight_strategy != Strategy::Block || d.block_rows != 128 || d.block_cols != 128)
        return "BLK128x128_32F scaling needs 128x128 weight blocks; this layer's weights are " +
               (d.weight_strategy == Strategy::Block ? q(d.block_rows) + "x" + q(d.block_cols) + " blocks"
                                                     : strat(d.weight_strategy));
      if (d.act_scheme != ActScheme::DynamicGroup || d.act_group != 128)
        return "VEC128_32F scaling needs activations quantized per group of 128; this layer's are " +
               std::string(act_scheme_name(d.act_scheme)) +
               (d.act_scheme == ActScheme::DynamicGroup ? " of " + q(d.act_group) : "");
      return fp8_alignment(d);
    case GemmKind::Int8:
      if (d.weight_type != QuantType::Int8 || d.act_type != ActType::Int8) return "needs INT8 weights and activations";
      if (d.weight_strategy != Strategy::Tensor && d.weight_strategy != Strategy::Channel)
        return "cuBLASLt's INT8 GEMM returns one int32 sum over all of K; " + strat(d.weight_strategy) +
               " weights would need one per scale segment";
      if (d.K % 4 != 0 || d.N % 4 != 0)
        return "N=" + q(d.N) + ", K=" + q(d.K) + ": cuBLASLt INT8 (IMMA, column-major) needs N and K multiples of 4";
      if (d.K > 131071)
        return "K=" + q(d.K) + " exceeds 131071: an int32 sum of K INT8 products (each up to 2^14) could overflow";
      return "";
    case GemmKind::Bf16:
      break;
  }
  return "";
}

LinearDescriptor bench_descriptor(GemmKind k, int64_t N, int64_t K) {
  LinearDescriptor d;
  d.N = N;
  d.K = K;
  d.weight_scale_dtype = DType::F32;
  d.input_scale_dtype = DType::F32;
  switch (k) {
    case GemmKind::Bf16:
      d.weight_type = QuantType::Float8E4M3;  // unused: only the N/K rules apply
      d.weight_strategy = Strategy::Channel;
      break;
    case GemmKind::Fp8Tensor:
      d.weight_type = QuantType::Float8E4M3;
      d.weight_strategy = Strategy::Tensor;
      d.act_type = ActType::Float8E4M3;
      d.act_scheme = ActScheme::StaticTensor;
      break;
    case GemmKind::Fp8ChannelToken:
      d.weight_type = QuantType::Float8E4M3;
      d.weight_strategy = Strategy::Channel;
      d.act_type = ActType::Float8E4M3;
      d.act_scheme = ActScheme::DynamicToken;
      break;
    case GemmKind::Fp8Block:
      d.weight_type = QuantType::Float8E4M3;
      d.weight_strategy = Strategy::Block;
      d.block_rows = d.block_cols = 128;
      d.act_type = ActType::Float8E4M3;
      d.act_scheme = ActScheme::DynamicGroup;
      d.act_group = 128;
      break;
    case GemmKind::Int8:
      d.weight_type = QuantType::Int8;
      d.weight_strategy = Strategy::Channel;
      d.act_type = ActType::Int8;
      d.act_scheme = ActScheme::DynamicToken;
      break;
  }
  return d;
}

std::string shape_reason(GemmKind k, int64_t N, int64_t K, const DeviceInfo& dev) {
  if (k != GemmKind::Bf16) return can_implement(k, bench_descriptor(k, N, K), dev);
  if (std::string why = device_reason(k, dev); !why.empty()) return why;
  if (N < 1 || K < 1) return "empty shape N=" + q(N) + ", K=" + q(K);
  if (K % 8 != 0 || N % 8 != 0)
    return "N=" + q(N) + ", K=" + q(K) + ": BF16 tensor-core GEMMs need 16-byte aligned rows (N, K multiples of 8)";
  return "";
}

// ---- scale layouts ------------------------------------------------------------------------

int64_t blk128_k_blocks(int64_t K) { return ceil_div(K, 128); }
int64_t blk128_ld(int64_t K) { return round_up(blk128_k_blocks(K), 4); }
int64_t vec128_rows(int64_t M) { return round_up(std::max<int64_t>(M, 1), 4); }

std::vector<float> blk128_weight_scales(std::span<const float> seg_scales, int64_t N, int64_t K) {
  const int64_t L = blk128_k_blocks(K), L4 = blk128_ld(K), NB = ceil_div(N, 128);
  QT_ASSERT(static_cast<int64_t>(seg_scales.size()) == N * L);
  std::vector<float> out(static_cast<size_t>(L4 * NB), 0.0f);
  // Row nb*128 is the first row of block nb; all rows of a block share the block's scales.
  for (int64_t nb = 0; nb < NB; ++nb)
    for (int64_t kb = 0; kb < L; ++kb)
      out[static_cast<size_t>(kb + nb * L4)] = seg_scales[static_cast<size_t>(nb * 128 * L + kb)];
  return out;
}

std::vector<float> vec128_act_scales(const QuantizedActivations& qa) {
  QT_ASSERT(qa.group == 128 && qa.groups_per_row == blk128_k_blocks(qa.K));
  const int64_t L = qa.groups_per_row, Mp = vec128_rows(qa.M);
  std::vector<float> out(static_cast<size_t>(Mp * L), 1.0f);
  for (int64_t m = 0; m < qa.M; ++m)
    for (int64_t kb = 0; kb < L; ++kb)
      out[static_cast<size_t>(m + kb * Mp)] = qa.scales[static_cast<size_t>(m * L + kb)];
  return out;
}

std::vector<float> outer_vec_act_scales(const QuantizedActivations& qa) {
  QT_ASSERT(qa.groups_per_row == 1);
  return std::vector<float>(qa.scales.begin(), qa.scales.begin() + qa.M);
}

// ---- accuracy -----------------------------------------------------------------------------

double fp8_error_bound(double S, float y_ref, int64_t K, bool fast_accum) {
  const int64_t chunk = fast_accum ? K : std::min<int64_t>(K, kFp8PromotionInterval);
  const double chunks = static_cast<double>(ceil_div(K, std::max<int64_t>(chunk, 1)));
  return S * (static_cast<double>(chunk) * kFp8AccumUnit + (chunks + 3.0) * 0x1p-24) +
         0x1p-22 * std::fabs(static_cast<double>(y_ref)) + 0x1p-149;
}

// ---- throughput plan ----------------------------------------------------------------------

const std::vector<int64_t>& default_bench_tokens() {
  static const std::vector<int64_t> m = {1, 16, 128, 1024, 4096};
  return m;
}

std::vector<LayerShape> distinct_shapes(const std::vector<LayerShape>& layers) {
  std::vector<LayerShape> out;
  std::map<std::pair<int64_t, int64_t>, size_t> at;
  for (const LayerShape& l : layers) {
    auto [it, fresh] = at.emplace(std::make_pair(l.N, l.K), out.size());
    if (fresh) out.push_back({l.N, l.K, {}});
    auto& mods = out[it->second].modules;
    mods.insert(mods.end(), l.modules.begin(), l.modules.end());
  }
  return out;
}

int64_t gemm_bytes(GemmKind k, int64_t M, int64_t N, int64_t K) {
  switch (k) {
    case GemmKind::Bf16: return 2 * (N * K + M * K + M * N);
    case GemmKind::Fp8Tensor: return N * K + M * K + 2 * M * N + 8;
    case GemmKind::Fp8ChannelToken: return N * K + M * K + 2 * M * N + 4 * (N + M);
    case GemmKind::Fp8Block:
      return N * K + vec128_rows(M) * K + 2 * vec128_rows(M) * N +
             4 * (blk128_ld(K) * ceil_div(N, 128) + vec128_rows(M) * blk128_k_blocks(K));
    case GemmKind::Int8: return N * K + M * K + 4 * M * N + 2 * M * N + 4 * (N + M);  // int32 acc + BF16 Y
  }
  return 0;
}

int rotation_sets(int64_t bytes_per_set, int64_t l2_bytes, int64_t budget_bytes) {
  if (bytes_per_set <= 0) return 1;
  const int64_t want = ceil_div(2 * std::max<int64_t>(l2_bytes, 0), bytes_per_set) + 1;
  const int64_t fit = std::max<int64_t>(budget_bytes / bytes_per_set, 1);
  return static_cast<int>(std::clamp<int64_t>(std::min(std::max<int64_t>(want, 2), fit), 1, 1 << 20));
}

int calls_per_repeat(double est_call_seconds, double min_seconds) {
  if (!(est_call_seconds > 0)) return 1;
  const double n = std::ceil(min_seconds / est_call_seconds);
  return static_cast<int>(std::clamp(n, 1.0, 10000.0));
}

double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double tflops(int64_t M, int64_t N, int64_t K, double seconds) {
  return 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K) / seconds / 1e12;
}

}  // namespace qt::kernels::gpu
