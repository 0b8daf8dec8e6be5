// `qtool verify QUANT_DIR --device cuda`: the checkpoint's quantized GEMMs on an NVIDIA GPU
// (issue #6). The CPU verification (verify.h) answers "is the checkpoint right and how much did it
// lose"; this answers "do the GPU kernels compute what the CPU reference computes, and how fast
// are they" for the checkpoint's layers.
//
// What verify_cuda() does, in order:
//   1. Device: kernels::gpu::require_device() (InputError Unsupported, exit 5, naming what is
//      missing: a CUDA build, the driver, a device, libcublasLt.so.13). --list-kernels works
//      without a device (every GPU kernel then gives the missing device as its reason).
//   2. Kernels: cuda_registry().select() for every quantized Linear, grouped by descriptor.
//   3. Accuracy, per quantized Linear: synthetic activations (synthetic_activations, seed + layer
//      index, check_tokens rows) quantized once on the host; cpu_ref's Y against every GPU kernel
//      that can run the layer, on the same quantized inputs:
//        INT8: the int32 accumulators must equal the exact integer dot products, and Y (after
//              qtool's f64 dequant kernel) must be bit-identical to cpu_ref's;
//        FP8:  with fast accumulation off and on, every |y - y_ref| within
//              gpu::fp8_error_bound(S, y_ref, K, fast) and the relative L2 error at most
//              gpu::fp8_max_rel_l2(fast), where S = sum |sx sw a b| is cpu_ref run on |X| and |W|.
//   4. Throughput (bench): for every distinct (N, K) of the model (plus extra_shapes) at each M
//      in bench_m, every GPU kind (BF16 baseline; FP8 fast and exact accumulation; INT8 with and
//      without its dequant), and the M = N = K = 8192 peak: median time, TFLOP/s, speedup over
//      BF16 at the same shape; then the H100 targets (evaluate_targets), reported, not
//      gated (they depend on the GPU model, clocks and power limit).
//   5. Pass: every accuracy comparison ok, and at least one layer ran on the GPU.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "verify/verify.h"
#include "libquant/kernels/gpu.h"

namespace qt::verify {

struct CudaVerifyOptions {
  std::string quant_dir;
  bool list_only = false;            // --list-kernels: steps 1 (without requiring a device) and 2
  int64_t check_tokens = 64;         // rows of synthetic X per layer in the accuracy check
  uint64_t seed = 0;
  bool bench = false;                // step 4
  std::vector<int64_t> bench_m = kernels::gpu::default_bench_tokens();
  bool peak = true;                  // with bench: the 8192^3 problem
  std::vector<std::pair<int64_t, int64_t>> extra_shapes;  // (N, K) benchmarked besides the model's
  kernels::gpu::BenchConfig bench_config;
  kernels::SelectOptions select;     // --force-kernel / --disable-kernel (GPU kernel names)
  std::function<void(const std::string&)> on_progress;
};

// One comparison: a layer, a GPU kernel, an accumulation mode, against cpu_ref.
struct CudaAccuracy {
  std::string module, kernel;
  std::string mode;              // "exact accum" / "fast accum" (FP8), "int32 + f64 dequant" (INT8)
  int64_t M = 0, N = 0, K = 0;
  bool required_exact = false;   // INT8: must be bit-exact
  bool acc_exact = false;        // INT8: int32 accumulators equal the exact integer dot products
  bool bit_exact = false;        // every output bit equal to cpu_ref's
  double max_abs_diff = 0;       // max |y - y_ref|
  double rel_l2 = 0;             // |y - y_ref| / |y_ref| (L2 norms)
  double max_bound_ratio = 0;    // FP8: max |y - y_ref| / fp8_error_bound (<= 1 is within)
  bool ok = false;
  // Fast accumulation only: cuBLASLt refused the fast-accumulation variant although the exact one
  // ran (PyTorch, for one, refuses fast accumulation with 1x128 block scaling). Reported, with the
  // reason in `error`, but not a failure: there is nothing to compare.
  bool unsupported = false;
  std::string error;             // the kernel refused or failed ("" otherwise)
};

// Compares a GPU result with cpu_ref's on `count` outputs (pure; unit-tested on the CPU).
// required_exact: ok = bit-exact (and acc_exact, which the caller sets). Otherwise ok = every
// |y - y_ref| <= fp8_error_bound(S[i], y_ref[i], K, fast_accum) and rel_l2 <= fp8_max_rel_l2(fast_accum); NaN
// anywhere fails.
void compare_with_reference(const float* y, const float* y_ref, const float* S, int64_t count, int64_t K,
                            bool fast_accum, CudaAccuracy& a);

// One throughput cell.
struct CudaBenchRow {
  int64_t M = 0, N = 0, K = 0;
  std::string kernel, variant;   // variant: "fast accum", "exact accum", "gemm+dequant", "gemm only", ""
  double us = 0, us_min = 0;     // median / fastest time of one call, microseconds
  double tflops = 0;             // at the median
  double speedup_bf16 = 0;       // tflops / cuda_bf16's tflops at the same (M, N, K); 0 if unknown
  int sets = 0;                  // rotated operand sets
  std::string algo;
  std::string error;             // could not run (no numbers)
  bool peak = false;             // the 8192^3 problem
  std::vector<std::string> modules;  // layers of this shape (empty for peak / extra shapes)
  std::vector<std::string> deployed; // GPU kernels the registry chose for those layers
};

// Fills speedup_bf16 of every row from the cuda_bf16 row with the same (M, N, K, peak).
void add_speedups(std::vector<CudaBenchRow>& rows);

// The H100 targets, from the rows (pure; unit-tested):
//   "fp8_peak_vs_bf16":      cuda_fp8_tensor (fast accum) / cuda_bf16 at 8192^3 >= 1.7
//   "fp8_m4096_vs_bf16":     the smallest such ratio over the model's shapes at M = 4096 >= 1.7
//   "channel_token_vs_tensor": the smallest cuda_fp8_channel_token / cuda_fp8_tensor TFLOP/s
//                             ratio (fast accum) over the 8192^3 problem and every shape at
//                             M = 4096 >= 0.9 (within 10%)
// A target whose rows are missing or failed has measured = false.
struct TargetCheck {
  std::string name, description;
  bool measured = false, met = false;
  double value = 0, threshold = 0;
  std::string detail;  // where the value came from (worst shape)
};
std::vector<TargetCheck> evaluate_targets(const std::vector<CudaBenchRow>& rows);

struct CudaVerifyReport {
  kernels::gpu::DeviceInfo device;
  bool built_with_cuda = false;
  std::string quant_dir, quant_method;
  std::vector<KernelInfo> registry;
  std::vector<KernelGroup> kernels;     // same shape as the CPU report's
  std::vector<std::string> notes;       // layers skipped and why
  std::vector<CudaAccuracy> accuracy;
  std::vector<CudaBenchRow> bench;
  std::vector<TargetCheck> targets;
  bool pass = true;
  std::vector<std::string> failures;
  double seconds = 0;
};

// Runs the steps above. Throws InputError: Unsupported (no usable device, unless list_only),
// Missing / BadFile / Usage for the folder as verify_checkpoint() does.
CudaVerifyReport verify_cuda(const CudaVerifyOptions& opts);

// The `--json` output.
nlohmann::json cuda_report_to_json(const CudaVerifyReport& r);

// "4096x14336" -> (4096, 14336); throws InputError(Usage) naming the text otherwise.
std::pair<int64_t, int64_t> parse_shape(const std::string& text);

}  // namespace qt::verify
