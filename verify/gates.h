// Verification gates: the thresholds a quantized layer and the model must meet, per layer type,
// and the user's overrides (`qtool verify --min-sqnr ...`).
#pragma once

#include <optional>
#include <string>

#include "libquant/kernels/descriptor.h"

namespace qt::verify {

// Thresholds. Per-layer gates (SQNR, GEMM error) are checked on every quantized Linear; the
// model gates on the model-level numbers. nullopt = the default for the layer type.
struct VerifyGates {
  std::optional<double> min_sqnr_db;   // weight SQNR vs the reference, dB (needs a reference)
  std::optional<double> max_gemm_err;  // relative L2 error |Y_kernel - Y_f64| / |Y_f64|
  std::optional<double> max_kl;        // mean KL(ref || quant) per token, nats (needs a reference)
  std::optional<double> min_top1;      // fraction of tokens whose argmax agrees, in [0, 1]
};

// The defaults for one layer type, from the weight code type and whether activations are
// quantized (values and their reasoning: verify.cpp, default_gates):
//   weights   activations   min SQNR   max GEMM err   max KL   min top-1
//   FP8 E4M3  FP8           25 dB      0.10           0.02     0.90
//   FP8 E4M3  none          25 dB      0.08           0.02     0.90
//   INT8      INT8          20 dB      0.15           0.03     0.88
//   INT8      none          20 dB      0.12           0.03     0.88
//   INT4      none          12 dB      0.35           0.10     0.75
struct GateValues {
  double min_sqnr_db = 0, max_gemm_err = 0, max_kl = 0, min_top1 = 0;
  std::string basis;  // "FP8 W8A8 default", "user", ...
};
GateValues default_gates(const kernels::LinearDescriptor& d);

// `g` with every threshold the user set in `u` replacing the default (basis gets " with user
// overrides" when any did).
GateValues apply_overrides(GateValues g, const VerifyGates& u);

}  // namespace qt::verify
