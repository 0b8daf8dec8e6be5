// The kernel interface of `qtool verify` (libquant/kernels/KERNELS.md §1): a Kernel says whether
// it can compute a LinearDescriptor, packs the checkpoint's weight into its own layout once, and
// then runs
//   Y[M, N] = dequant(quant_act(X[M, K])) . dequant(W[N, K])^T
// for any number of tokens M, the way the deployed (vLLM) path does it:
//   * activations are quantized per the descriptor by quantize_activations() (act_quant.h):
//     static per-tensor with the stored input scale, or dynamic per-tensor / per-token /
//     per-group computed like vLLM (f32 scales amax/448 or amax/127, FP8 floor 1/(448*512));
//     every CPU kernel uses that one function, so kernels differ only in the GEMM itself;
//   * the GEMM multiplies codes (or X itself for weight-only layers) and applies the scales
//     after each K-segment's dot product (descriptor.h), accumulating segments in f64.
// No bias: a Linear's bias is added by the caller.
//
// Threading: run() may use OpenMP inside; it is const and may be called concurrently on the same
// PackedWeights. Every kernel gives the same Y bit for bit on every run and at any thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "libquant/dtype.h"
#include "libquant/kernels/descriptor.h"
#include "libquant/quantize.h"

namespace qt::kernels {

// A quantized weight as the checkpoint holds it (pointers, not owned; they must stay valid for
// the duration of Kernel::pack only -- packed weights own copies).
struct QuantizedWeightRef {
  // Codes, row-major [N, K], one per byte: F8_E4M3 bytes, or I8 two's-complement values
  // (INT8 in [-128, 127]; INT4 in [-8, 7], i.e. unpacked pack-quantized words).
  DType code_dtype = DType::F8_E4M3;
  const uint8_t* codes = nullptr;
  // Weight scales, little-endian values of `scale_dtype` (BF16, F16 or F32), row-major on the
  // descriptor's grid: element (i, j) uses scale (i / grid.rows_per, j / grid.cols_per).
  const uint8_t* scales = nullptr;
  DType scale_dtype = DType::BF16;
  ScaleGrid grid;
  // Static per-tensor activation scale (ActScheme::StaticTensor only): one value of
  // `input_scale_dtype`; nullptr otherwise.
  const uint8_t* input_scale = nullptr;
  DType input_scale_dtype = DType::F32;
  // For error messages only.
  std::string tensor;
  std::string file;
};

// A reference to `w` (codes and scales as quantize_weight() produced them) for a layer with
// descriptor `d`; `input_scale` (may be null) points at one value of d.input_scale_dtype.
QuantizedWeightRef weight_ref(const QuantizedWeight& w, const LinearDescriptor& d,
                              const uint8_t* input_scale = nullptr);

// A kernel's private copy of the weight in its own layout. Created by Kernel::pack, consumed by
// the same kernel's run().
class PackedWeights {
 public:
  PackedWeights(std::string_view kernel, const LinearDescriptor& d) : kernel_(kernel), desc_(d) {}
  virtual ~PackedWeights() = default;
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;

  std::string_view kernel() const { return kernel_; }       // name of the kernel that packed it
  const LinearDescriptor& descriptor() const { return desc_; }
  virtual size_t bytes() const = 0;                          // memory held, for reports

 private:
  std::string_view kernel_;
  LinearDescriptor desc_;
};

class Kernel {
 public:
  virtual ~Kernel() = default;

  // Stable identifier ("cpu_ref", "cpu_fast", ...), used by QTOOL_FORCE_KERNEL-style options.
  virtual std::string_view name() const = 0;
  // One line for `qtool verify --list-kernels`.
  virtual std::string_view summary() const = 0;
  // Higher is preferred by Registry::select.
  virtual int priority() const = 0;

  // "" if this kernel can compute `d` on this machine; otherwise one sentence saying exactly why
  // not (which field, which value, what would be needed).
  virtual std::string can_implement(const LinearDescriptor& d) const = 0;

  // Copies `w` into this kernel's layout. Precondition: can_implement(d) == "" (asserted).
  // Throws InputError(BadValue) naming w.file / w.tensor for codes or scales no deployed kernel
  // could use: FP8 NaN codes (0x7F/0xFF), INT4 codes outside [-8, 7], non-finite weight scales,
  // and a static input scale that is missing, non-finite or <= 0.
  virtual std::unique_ptr<PackedWeights> pack(const LinearDescriptor& d,
                                              const QuantizedWeightRef& w) const = 0;

  // Y[M, N] (row-major, f32, overwritten) from X[M, K] (row-major, f32). M >= 0. `p` must come
  // from this kernel's pack() (asserted). Throws InputError(BadValue) if X holds NaN/Inf and the
  // layer quantizes its activations (a dynamic scale would be garbage).
  virtual void run(const PackedWeights& p, const float* X, int64_t M, float* Y) const = 0;
};

}  // namespace qt::kernels
