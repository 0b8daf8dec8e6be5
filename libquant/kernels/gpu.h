// The GPU half of `qtool verify` (issue #6): cuBLASLt GEMMs on an NVIDIA Hopper GPU (sm_90, CUDA 13),
// registered like the CPU kernels (libquant/kernels/KERNELS.md §1) in their own registry,
// cuda_registry(), so that the CPU verification never picks a GPU kernel by accident
// (`--device cuda` selects this one).
//
// Two halves:
//   * host logic, always compiled and unit-tested on the CPU (gpu_plan.cpp): which GEMM can run
//     which layer on which device (can_implement), the cuBLASLt scale-tensor layouts, the FP8
//     accumulation error bound, the throughput plan (shapes, token counts, L2 rotation);
//   * execution (libquant/kernels/cuda/, compiled only when CMake finds nvcc and cuBLASLt;
//     otherwise libquant/kernels/nocuda/gpu_stub.cpp reports "built without CUDA").
//
// The GEMM (libquant/kernels/KERNELS.md §5.1): cuBLASLt is column-major, so Y[M, N] row-major is
// computed as Y^T = W . X^T with A = W [N, K] row-major seen as a K x N column-major matrix with
// OP_T ("TN", the only FP8/INT8 layout on Hopper), B = X [M, K] as K x M with OP_N, D = Y as N x M
// (ld N). cuBLAS m = N (out features), n = M (tokens), k = K. So every per-output-channel vector
// (weight scales) belongs to A and every per-token vector (activation scales) to B.
//
// Activations are quantized on the host by quantize_activations() (act_quant.h), the same
// function every CPU kernel uses, and the codes and scales uploaded: GPU and CPU kernels see
// bit-identical quantized inputs, so any difference is the GEMM's.
//
// Nothing in libquant/kernels/cuda/ has been executed on a GPU when this was written (the session
// had none); see bench/RESULTS.md "GPU" for the commands that check it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/descriptor.h"
#include "libquant/kernels/kernel.h"
#include "libquant/kernels/registry.h"

namespace qt::kernels::gpu {

// ---- this build and this machine ---------------------------------------------------------

// True when libquant was compiled with CUDA (QTOOL_HAVE_CUDA).
bool built_with_cuda();

struct DeviceInfo {
  bool usable = false;      // a device, a driver and libcublasLt.so.13 were found
  std::string error;        // why not: one sentence naming what is missing ("" when usable)
  int ordinal = 0;          // CUDA device number ($QTOOL_CUDA_DEVICE, default 0)
  std::string name;         // "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int64_t l2_bytes = 0;     // L2 cache size (50 MB on H100/H200)
  int64_t memory_bytes = 0; // global memory
  int clock_khz = 0;        // SM clock, kHz (cudaDevAttrClockRate; the boost clock)
  int driver_version = 0;   // cudaDriverGetVersion: 13000 = CUDA 13.0
  int runtime_version = 0;  // cudaRuntimeGetVersion of the cudart linked in
  int64_t cublaslt_version = 0;  // cublasLtGetVersion(): 130100 = 13.1.0
  std::string cublaslt_path;     // the libcublasLt.so that was opened

  int cc() const { return cc_major * 10 + cc_minor; }  // 90 for sm_90
  // "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 50 MiB L2, 79.6 GiB, driver 13.0, cuBLASLt 13.1.0"
  std::string describe() const;
};

// Probes the device once (thread-safe; cached for the process) and never throws. Without a CUDA
// build: usable = false, error = "qtool was built without CUDA ...".
const DeviceInfo& device_info();
// device_info() if usable; otherwise throws InputError(Unsupported) carrying its error.
const DeviceInfo& require_device();

// ---- the GEMM kinds and their rules (host logic) ------------------------------------------

enum class GemmKind : uint8_t {
  Bf16,             // "cuda_bf16": BF16 x BF16 -> BF16, the throughput baseline (never selected)
  Fp8Tensor,        // "cuda_fp8_tensor": E4M3, per-tensor weight x per-tensor activation scales
  Fp8ChannelToken,  // "cuda_fp8_channel_token": E4M3, OUTER_VEC_32F: [N] weight x [M] token scales
  Fp8Block,         // "cuda_fp8_block": E4M3, BLK128x128_32F weights x VEC128_32F activations
  Int8,             // "cuda_int8": INT8 x INT8 -> INT32 cuBLASLt, then qtool's dequant kernel
};
const std::vector<GemmKind>& all_gemm_kinds();  // in the order above
std::string_view kernel_name(GemmKind k);
std::optional<GemmKind> gemm_kind_from_name(std::string_view name);
bool is_fp8(GemmKind k);  // the three FP8 kinds (they have a fast-accumulation switch)

// Registry priority of each kind: per-tensor FP8 (fewest scale reads) 130, outer-vector 120,
// block 110, INT8 100; BF16 0 (it refuses every quantized layer anyway).
int priority(GemmKind k);

// "" if kind `k` can compute layer `d` on device `dev`, else one sentence saying why not (RFC
// #8913 can_implement). Rules, in the order checked:
//   1. the device is usable (dev.error otherwise) and new enough: FP8 per-tensor needs compute
//      capability >= 8.9; OUTER_VEC_32F and the 128-element block modes exist only on 9.x in
//      cuBLASLt 13.1 (KERNELS.md §5.3); INT8 IMMA needs >= 7.5; BF16 >= 8.0 (KERNELS.md §5.2);
//   2. detail::check_common(d) (the same structural rules as the CPU kernels, so that the
//      host-side quantize_activations() is valid for d);
//   3. the scheme: Fp8Tensor: FP8 weights per-tensor x FP8 static/dynamic per-tensor activations;
//      Fp8ChannelToken: FP8 weights per-tensor or per-channel x FP8 per-token, static or dynamic
//      per-tensor activations (per-tensor values broadcast to the [N] / [M] vectors);
//      Fp8Block: FP8 weights in 128x128 blocks x FP8 dynamic per-group-128 activations;
//      Int8: INT8 weights per-tensor or per-channel x INT8 static per-tensor or dynamic per-token
//      activations (one int32 sum over all of K, then one scale pair per output);
//      Bf16: never (it computes the unquantized GEMM, not the checkpoint's);
//   4. alignment (libquant/kernels/KERNELS.md §5.4): FP8 needs K % 16 == 0 (16-byte rows of A and
//      B) and N % 8 == 0 (16-byte rows of a BF16 D); INT8 needs K % 4 == 0 and N % 4 == 0;
//   5. INT8: K <= 131071, so that an int32 accumulator of K products (each |a b| <= 2^14) cannot
//      overflow.
std::string can_implement(GemmKind k, const LinearDescriptor& d, const DeviceInfo& dev);

// The descriptor a throughput measurement of kind `k` at weight shape [N, K] uses (synthetic
// codes and scales): per-tensor FP8 static, FP8 per-channel x dynamic per-token, FP8 128x128
// blocks x dynamic per-group-128, INT8 per-channel x dynamic per-token; Bf16: weight-only-like
// (ActType::None) -- only its N/K/device rules apply (shape_reason).
LinearDescriptor bench_descriptor(GemmKind k, int64_t N, int64_t K);
// can_implement(k, bench_descriptor(k, N, K), dev), with Bf16's shape rules (K % 8, N % 8, cc >= 8.0).
std::string shape_reason(GemmKind k, int64_t N, int64_t K, const DeviceInfo& dev);

// ---- cuBLASLt scale tensors (libquant/kernels/KERNELS.md §5.3; cuBLAS docs 3.1.4.5) ---
//
// BLK128x128_32F on A (the weight, cuBLAS m = N): one f32 per 128x128 tile, "K-major" with the
// K-block count padded to a multiple of 4: tile (nb, kb) at kb + nb * L4, L4 = roundup(ceil(K/128),
// 4); ceil(N/128) columns. VEC128_32F on B (the activations, cuBLAS n = M): one f32 per 1x128 group,
// "M-major": group (m, kb) at m + kb * Mp, Mp = M rounded up to a multiple of 4 (the docs ask for
// M, N % 4; the padded rows of B are zero codes with scale 1 and their outputs are dropped).
// The same layouts are what PyTorch's _scaled_mm requires for its 128x128 x 1x128 recipe.
// NOT YET CONFIRMED ON A GPU: the GPU test CudaGemm.BlockScalesFollowTheDocumentedLayout uses
// non-uniform scales so that a wrong layout fails loudly.
int64_t blk128_k_blocks(int64_t K);         // ceil(K / 128)
int64_t blk128_ld(int64_t K);               // L4 = roundup(ceil(K / 128), 4)
int64_t vec128_rows(int64_t M);             // Mp = roundup(M, 4)
// From the [N, nseg] per-(row, segment) weight scale table (detail::segment_weight_scales; with
// 128x128 blocks and 128-groups nseg = ceil(K/128) and rows of one block share values) to the
// BLK128x128 tensor: L4 * ceil(N/128) floats, padding 0.
std::vector<float> blk128_weight_scales(std::span<const float> seg_scales, int64_t N, int64_t K);
// From quantize_activations()' per-(token, group) scales (row-major [M, ceil(K/128)]) to the
// VEC128 tensor: Mp * ceil(K/128) floats; padded rows hold 1.0.
std::vector<float> vec128_act_scales(const QuantizedActivations& qa);
// OUTER_VEC_32F: the weight's [N] vector from the [N, 1] segment table (per-tensor weights arrive
// here already broadcast by segment_weight_scales), and the activations' [M] vector (one scale
// per row; per-tensor scales are stored repeated per row by quantize_activations).
std::vector<float> outer_vec_act_scales(const QuantizedActivations& qa);

// ---- accuracy (GPU result vs cpu_ref on the same quantized inputs) ------------------------
//
// INT8: bit-exact. cuBLASLt's int32 accumulators must equal the exact integer dot products, and
// qtool's dequant kernel applies cpu_ref's f64 epilogue in the same order
// ((double(acc) * double(sx)) * double(sw), rounded once to f32), so Y must be bit-identical.
//
// FP8: products of two E4M3 values are exact, but Hopper's FP8 tensor cores add them in a
// narrower accumulator than IEEE f32 (DeepSeek-V3 report 3.3.2: ~14 bits retained; the values
// are truncated, not rounded). Without fast accumulation cuBLASLt promotes the partial sums to f32
// periodically (CUBLASLT_MATMUL_DESC_FAST_ACCUM, cublasLt.h: "no periodic promotion" when set);
// the period is not documented -- CUTLASS's sm90 FP8 mainloop promotes every 4 wgmma k-steps of
// 32, i.e. 128 elements, and the bound below assumes at most kFp8PromotionInterval. Model:
//   chunk = fast_accum ? K : min(K, 128);   u_tc = 2^-12 (>= 12 bits kept: 4x margin on ~14)
//   |y_gpu - y_ref| <= S * (chunk * u_tc + (ceil(K / chunk) + 3) * 2^-24) + 2^-22 |y_ref| + 2^-149
// with S = sum_k |sx sw a_k b_k| (the magnitudes the sum is made of), the first term the
// accumulator's truncation within a chunk, the second the f32 additions of chunks and the scale
// multiplies, the third the f32 output rounding on both sides. This is a worst case (every error
// at its maximum, same sign); realistic errors are orders of magnitude below it, so the check
// also gates the relative L2 error at fp8_max_rel_l2(fast_accum): 1e-2 with exact accumulation,
// 5e-2 with fast accumulation (DeepSeek-V3 saw maximum relative errors near 2% at K = 4096 without
// promotion). These gates were set before any GPU measurement, to separate rounding from bugs:
// a wrong operand order or scale layout gives errors near 1. Re-derive them from measured errors.
inline constexpr int64_t kFp8PromotionInterval = 128;
inline constexpr double kFp8AccumUnit = 0x1p-12;
inline constexpr double fp8_max_rel_l2(bool fast_accum) { return fast_accum ? 5e-2 : 1e-2; }
double fp8_error_bound(double S, float y_ref, int64_t K, bool fast_accum);

// ---- throughput plan (host logic) ----------------------------------------------------------

// The token counts of the issue: {1, 16, 128, 1024, 4096}.
const std::vector<int64_t>& default_bench_tokens();
// The "peak" problem: M = N = K = 8192.
inline constexpr int64_t kPeakSize = 8192;

struct LayerShape {
  int64_t N = 0, K = 0;
  std::vector<std::string> modules;  // the layers with this weight shape
};
// Distinct (N, K), in order of first appearance, each with every module of that shape.
std::vector<LayerShape> distinct_shapes(const std::vector<LayerShape>& layers);

// Bytes one GEMM call touches: A (N K elem), B (M K elem), D (M N out) plus the scale tensors.
int64_t gemm_bytes(GemmKind k, int64_t M, int64_t N, int64_t K);
// How many independent input/output sets to rotate through so that a set is evicted from L2
// before it is used again: the other sets together must exceed 2 x L2, i.e.
//   n = ceil(2 * l2 / bytes_per_set) + 1  (at least 2 when bytes_per_set > 0),
// capped so that n * bytes_per_set <= budget_bytes (at least 1 set).
int rotation_sets(int64_t bytes_per_set, int64_t l2_bytes, int64_t budget_bytes);
// Calls per timed repeat so that one repeat lasts >= min_seconds given an estimate of one call
// (>= 1; at most 10000).
int calls_per_repeat(double est_call_seconds, double min_seconds);
// Median of v (mean of the two middle values for an even count); NaN for an empty v.
double median(std::vector<double> v);
// 2 M N K / seconds / 1e12.
double tflops(int64_t M, int64_t N, int64_t K, double seconds);

// ---- execution (CUDA build with a usable device; otherwise these throw) --------------------

// A GPU kernel is a Kernel (pack on the host, run on host X/Y) plus the FP8 fast-accumulation
// switch and the INT8 accumulators. run() is run_with(fast_accum = false).
class CudaKernel : public Kernel {
 public:
  virtual GemmKind kind() const = 0;
  // Y[M, N] f32 on the host (cuBLASLt writes f32 D: no BF16 rounding in the accuracy check).
  // fast_accum is ignored by Int8. Throws InputError(Unsupported) when cuBLASLt finds no
  // algorithm or refuses the problem, naming the kernel and the cuBLAS status.
  virtual void run_with(const PackedWeights& p, const float* X, int64_t M, float* Y,
                        bool fast_accum) const = 0;
  // Int8 only: the int32 accumulators acc[M, N] = sum_k a[m, k] w[n, k] before the dequant.
  virtual void run_int32(const PackedWeights& p, const float* X, int64_t M, int32_t* acc) const;
  void run(const PackedWeights& p, const float* X, int64_t M, float* Y) const override {
    run_with(p, X, M, Y, false);
  }
};

// The GPU kernels in a Registry (empty in a build without CUDA; every kernel's can_implement
// names the missing device on a machine without one).
const Registry& cuda_registry();

// One throughput measurement of kind `k` on synthetic data at weight shape [N, K] for M tokens.
struct BenchCell {
  GemmKind kind = GemmKind::Bf16;
  std::string variant;         // "fast accum" / "exact accum" (FP8), "gemm+dequant" / "gemm only" (INT8), "" (BF16)
  int64_t M = 0, N = 0, K = 0;
  double seconds = 0;          // median time of one call
  double seconds_min = 0;      // fastest repeat's time per call
  double tflops = 0;           // 2 M N K / seconds
  int sets = 0;                // rotated input/output sets
  int repeats = 0, calls_per_repeat = 0;
  std::string algo;            // cuBLASLt heuristic's first algorithm (id, tile, stages, split-K)
  std::string error;           // "" or why it could not run (then no numbers)
};
struct BenchConfig {
  int warmup_calls = 5;                 // untimed, after the heuristic query (never timed)
  int repeats = 25;                     // timed repeats; the median is reported
  double min_repeat_seconds = 2e-4;     // each repeat runs calls_per_repeat() calls
  int64_t budget_bytes = int64_t{3} << 30;  // device memory for the rotated sets
  uint64_t seed = 1;
};
// Times `k` at every M (one cuBLASLt setup per M; CUDA events around each repeat of calls, each
// call on the next rotated set). FP8 kinds return two cells per M (fast accum on, off), Int8
// two (gemm+dequant, gemm only), Bf16 one. A cell that cannot run carries `error`.
std::vector<BenchCell> bench_gemm(GemmKind k, int64_t N, int64_t K, std::span<const int64_t> Ms,
                                  const BenchConfig& cfg);

}  // namespace qt::kernels::gpu
