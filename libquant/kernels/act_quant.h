// Activation quantization as vLLM performs it at inference (libquant/kernels/KERNELS.md §3,
// with its vectors V1/V2). Shared by every CPU kernel so that kernels differ only in their GEMM.
//
// All arithmetic is f32, one IEEE operation at a time (no FMA contraction, RNE):
//   FP8 static per-tensor   inv = 1/s;             q = e4m3(clamp(x * inv, +-448))
//   FP8 dynamic per-tensor  s = amax/448;          q as static (s == 0: every code 0)
//   FP8 dynamic per-token   s = max(amax/448, 1/(448*512));  q = e4m3(clamp(x / s, +-448))
//                           (newer vLLM divides by s -- "to match FBGemm"; older multiplied by
//                            1/s, which differs by at most one FP8 rounding step in rare cases)
//   FP8 dynamic per-group   s = max(amax, 1e-10)/448;        q = e4m3(clamp(x / s, +-448))
//   INT8 static per-tensor  q = rni_sat(x / s)
//   INT8 dynamic per-token  s = amax/127 (127, not 127.5);   q = rni_sat(x * (127/amax)),
//                           amax == 0: multiplier 0, s = 0
//   NVFP4 per-group of 16   (gs = the static input_global_scale, NUMERICS.md §10.5)
//                           c = e4m3(min(gs * (amax * f32(1/6)), 448)), sc = f32(c);
//                           r = sc == 0 ? 0 : 1 / (sc * (1/gs));  q = e2m1(clamp(x * r, +-6));
//                           the kernel's scale is sc / gs (vLLM's dequantization)
//   MXFP8 per-group of 32   E = e8m0 exponent of f32(amax * f32(1/448)) rounded up (saturating,
//                           amax == 0: E = 0); q = e4m3(clamp(x * 2^(127-E), +-448)) (0 when
//                           amax == 0); scale 2^(E-127) (NUMERICS.md §10.6)
//   MXFP4 per-group of 32   E = exponent field of r = f32(amax * f32(1/6)) plus one unless r is a
//                           power of two (saturating at 254; a subnormal r gives 1, amax == 0
//                           gives 0); q = e2m1(clamp(x * 2^(127-E), +-6)) (RNE, ties to even;
//                           0 when amax == 0); scale 2^(E-127) (NUMERICS.md §10.7, FlashInfer's
//                           CuTe-DSL MXFP4 quantizer that vLLM runs on SM >= 100)
// where amax = max |x| over the scale's elements, e4m3() is the c10 round-to-nearest-even cast
// (float_formats.h) and rni_sat() rounds half to even and saturates to [-128, 127] (PTX
// cvt.rni.sat.s8.f32). vLLM's CUDA kernels may use approximate division for the per-group path
// (Triton); this is IEEE division, which can differ from the GPU by 1 ulp before the FP8
// rounding (libquant/kernels/KERNELS.md §3).
#pragma once

#include <cstdint>
#include <vector>

#include "libquant/float_formats.h"
#include "libquant/kernels/descriptor.h"
#include "libquant/kernels/kernel.h"

namespace qt::kernels {

// f32(1 / (448 * 512)) = 4.3596542e-06, bits 0x36924925: vLLM's per-token FP8 scale floor.
inline constexpr float kFp8TokenScaleFloor = 1.0f / (448.0f * 512.0f);
// vLLM's per-group absmax floor (eps) before dividing by 448.
inline constexpr float kFp8GroupAmaxFloor = 1e-10f;

float fp8_dynamic_token_scale(float amax);   // max(amax / 448, kFp8TokenScaleFloor)
float fp8_dynamic_group_scale(float amax);   // max(amax, 1e-10) / 448
float fp8_dynamic_tensor_scale(float amax);  // amax / 448
// Clamp first (bounds exact in f32), so the non-saturating c10 cast never sees |q| > 448.
inline uint8_t fp8_clamp_encode(float q) {
  q = q < -448.0f ? -448.0f : (q > 448.0f ? 448.0f : q);
  return e4m3fn_from_f32(q);
}
inline uint8_t fp8_quantize_div(float x, float s) { return fp8_clamp_encode(x / s); }     // e4m3(clamp(x / s))
inline uint8_t fp8_quantize_mul(float x, float inv) { return fp8_clamp_encode(x * inv); } // e4m3(clamp(x * inv))
float int8_dynamic_token_scale(float amax);  // amax / 127
// NVFP4 activation group scale as its E4M3 code: e4m3(min(gs * (amax * f32(1/6)), 448)).
uint8_t nvfp4_act_group_scale(float amax, float global_scale);
// MXFP8 activation exponent: E8M0 of f32(amax * f32(1/448)) rounded up to a power of two,
// saturating at 254; 0 for amax == 0 (and for anything <= 2^-127).
uint8_t mxfp8_act_exponent(float amax);
// MXFP4 activation exponent (vLLM on SM >= 100, FlashInfer's CuTe-DSL quantizer): the biased
// exponent of r = f32(amax * f32(1/6)), plus one when r's mantissa is not zero (ceil(log2 r)),
// at most 254; 0 for amax == 0; 1 for a subnormal r.
uint8_t mxfp4_act_exponent(float amax);
// Round half to even, saturate to [-128, 127] (NaN -> 0), as PTX cvt.rni.sat.s8.f32. Inline:
// it runs once per activation element.
inline int8_t int8_round_sat(float v) {
  if (v != v) return 0;
  if (!(v < 127.5f)) return 127;   // 127.5 rounds to 128, then saturates
  if (v <= -128.5f) return -128;   // -128.5 rounds (to even) to -128
  // |v| < 2^22 here: adding and subtracting 1.5 * 2^23 rounds to an integer in the current
  // (round-to-nearest-even) mode; exact otherwise. Needs IEEE arithmetic (no -ffast-math).
  const float r = (v + 12582912.0f) - 12582912.0f;
  return static_cast<int8_t>(r);
}

// Quantized activations for one run: codes [M, K] row-major (F8_E4M3 bytes or int8 values) and
// one f32 scale per (row, group): scales[m * groups_per_row + k / group]. A per-tensor scale is
// repeated for every row so that kernels need no special case.
struct QuantizedActivations {
  ActType type = ActType::None;
  int64_t M = 0, K = 0;
  int64_t group = 0;           // columns per scale (K unless per-group)
  int64_t groups_per_row = 0;  // ceil(K / group)
  std::vector<uint8_t> codes;
  std::vector<float> scales;

  float scale(int64_t m, int64_t k) const {
    return scales[static_cast<size_t>(m * groups_per_row + k / group)];
  }
};

// Quantizes X[M, K] per `d` (d.act_type must not be None). `static_scale` is the f32 input scale
// for ActScheme::StaticTensor and the input_global_scale for NVFP4 activations (ignored
// otherwise; must be finite and > 0 -- asserted, pack() checks it). Microscaled activations come
// back as E4M3 codes with one effective f32 scale per group (see LinearDescriptor). Throws InputError(BadValue) naming the first NaN/Inf element of X. Deterministic;
// parallel over rows with OpenMP.
QuantizedActivations quantize_activations(const LinearDescriptor& d, const float* X, int64_t M,
                                          float static_scale);

// The static input scale of a layer as every kernel (CPU and GPU) consumes it: w.input_scale
// decoded to f32 when d.needs_static_act_scale() (static per-tensor, or NVFP4's input_global_scale;
// InputError naming w.tensor when it is missing, of another dtype than d.input_scale_dtype, not
// finite or not > 0); 0 for other schemes.
float static_input_scale(const LinearDescriptor& d, const QuantizedWeightRef& w);

}  // namespace qt::kernels
