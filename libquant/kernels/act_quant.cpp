#include "libquant/kernels/act_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"

namespace qt::kernels {

float fp8_dynamic_token_scale(float amax) {
  const float s = amax / 448.0f;  // f32 true division
  return s > kFp8TokenScaleFloor ? s : kFp8TokenScaleFloor;
}
float fp8_dynamic_group_scale(float amax) {
  return (amax > kFp8GroupAmaxFloor ? amax : kFp8GroupAmaxFloor) / 448.0f;
}
float fp8_dynamic_tensor_scale(float amax) { return amax / 448.0f; }

float int8_dynamic_token_scale(float amax) { return amax / 127.0f; }

uint8_t nvfp4_act_group_scale(float amax, float global_scale) {
  float s = global_scale * (amax * (1.0f / 6.0f));  // two f32 roundings, as vLLM
  s = s > 448.0f ? 448.0f : s;                       // amax >= 0, gs > 0: only the upper clamp acts
  return e4m3fn_from_f32(s);
}

uint8_t mxfp8_act_exponent(float amax) {
  const float r = amax * (1.0f / 448.0f);
  uint32_t bits;
  std::memcpy(&bits, &r, 4);
  const uint32_t e = (bits >> 23) & 0xFF, man = bits & 0x7FFFFF;
  if (e == 0) return r > 0x1p-127f ? 1 : 0;  // zero or subnormal: 2^-127 (E 0) or 2^-126 (E 1)
  const uint32_t up = e + (man != 0 ? 1u : 0u);  // round up unless an exact power of two
  return static_cast<uint8_t>(up > 254 ? 254 : up);
}

uint8_t mxfp4_act_exponent(float amax) {
  const float r = amax * (1.0f / 6.0f);
  uint32_t bits;
  std::memcpy(&bits, &r, 4);
  if (!(r > 0.0f)) return 0;  // amax == 0
  const uint32_t e = (bits >> 23) & 0xFF, man = bits & 0x7FFFFF;
  const uint32_t up = e + (man != 0 ? 1u : 0u);  // a subnormal r (e == 0) gives 1
  return static_cast<uint8_t>(up > 254 ? 254 : up);
}

QuantizedActivations quantize_activations(const LinearDescriptor& d, const float* X, int64_t M,
                                          float static_scale) {
  QT_ASSERT(d.act_type != ActType::None && M >= 0);
  const int64_t K = d.K;
  QuantizedActivations r;
  r.type = d.act_type;
  r.M = M;
  r.K = K;
  r.group = d.act_scheme == ActScheme::DynamicGroup ? d.act_group : K;
  QT_ASSERT(r.group > 0);
  r.groups_per_row = (K + r.group - 1) / r.group;
  r.codes.resize(static_cast<size_t>(M * K));
  r.scales.resize(static_cast<size_t>(M * r.groups_per_row));
  const bool fp8 = d.act_type == ActType::Float8E4M3;

  // Finite check first: a NaN would silently become a garbage scale (or a NaN code).
  int64_t bad = -1;
  for (int64_t i = 0; i < M * K && bad < 0; ++i)
    if (!std::isfinite(X[i])) bad = i;
  if (bad >= 0)
    throw InputError(InputError::Kind::BadValue, "", "activations",
                     std::string(std::isnan(X[bad]) ? "NaN" : "Inf") + " at [" +
                         std::to_string(bad / K) + ", " + std::to_string(bad % K) +
                         "]; activations must be finite to be quantized");

  auto absmax = [](const float* x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; ++i) m = std::fabs(x[i]) > m ? std::fabs(x[i]) : m;
    return m;
  };

  if (d.act_scale_format == ScaleFormat::Nvfp4) QT_ASSERT(std::isfinite(static_scale) && static_scale > 0.0f);
  const float nv_inv_gs = d.act_scale_format == ScaleFormat::Nvfp4 ? 1.0f / static_scale : 0.0f;

  // Per-tensor scale (static or dynamic over all of X).
  float tensor_scale = 0.0f;
  if (d.act_scheme == ActScheme::StaticTensor) {
    QT_ASSERT(std::isfinite(static_scale) && static_scale > 0.0f);
    tensor_scale = static_scale;
  } else if (d.act_scheme == ActScheme::DynamicTensor) {
    QT_ASSERT(fp8);  // vLLM has no dynamic per-tensor INT8 path; kernels reject it
    tensor_scale = fp8_dynamic_tensor_scale(absmax(X, M * K));
  }
  const float tensor_inv = tensor_scale > 0.0f ? 1.0f / tensor_scale : 0.0f;  // f32 reciprocal

  // Threads only for large batches: a few ns per element does not pay for a fork/join below that.
#pragma omp parallel for schedule(static) if (M * K >= (int64_t{1} << 18))
  for (int64_t m = 0; m < M; ++m) {
    const float* x = X + m * K;
    uint8_t* q = r.codes.data() + m * K;
    float* srow = r.scales.data() + m * r.groups_per_row;
    switch (d.act_scheme) {
      case ActScheme::StaticTensor:
      case ActScheme::DynamicTensor:
        srow[0] = tensor_scale;
        for (int64_t k = 0; k < K; ++k) {
          if (fp8)  // vLLM static_scaled_fp8_quant multiplies by the f32 reciprocal
            q[k] = tensor_scale > 0.0f ? fp8_quantize_mul(x[k], tensor_inv) : 0;
          else      // vLLM static int8: divides by the scale
            q[k] = static_cast<uint8_t>(int8_round_sat(x[k] / tensor_scale));
        }
        break;
      case ActScheme::DynamicToken: {
        const float amax = absmax(x, K);
        if (fp8) {
          const float s = fp8_dynamic_token_scale(amax);
          srow[0] = s;
          for (int64_t k = 0; k < K; ++k) q[k] = fp8_quantize_div(x[k], s);
        } else {
          srow[0] = int8_dynamic_token_scale(amax);
          const float mult = amax > 0.0f ? 127.0f / amax : 0.0f;  // f32 division
          for (int64_t k = 0; k < K; ++k)
            q[k] = static_cast<uint8_t>(int8_round_sat(x[k] * mult));
        }
        break;
      }
      case ActScheme::DynamicGroup: {
        QT_ASSERT(fp8);  // INT8 per-group activations are rejected by every kernel
        for (int64_t g = 0; g < r.groups_per_row; ++g) {
          const int64_t k0 = g * r.group, k1 = std::min(K, k0 + r.group);
          const float amax = absmax(x + k0, k1 - k0);
          if (d.act_scale_format == ScaleFormat::Nvfp4) {
            const float sc = f32_from_e4m3fn(nvfp4_act_group_scale(amax, static_scale));
            const float mult = sc == 0.0f ? 0.0f : 1.0f / (sc * nv_inv_gs);
            srow[g] = sc / static_scale;
            for (int64_t k = k0; k < k1; ++k) {
              float v = x[k] * mult;
              v = v < -6.0f ? -6.0f : (v > 6.0f ? 6.0f : v);
              q[k] = e4m3fn_from_f32(f32_from_e2m1(e2m1_from_f32(v)));
            }
          } else if (d.act_scale_format == ScaleFormat::E8M0 && d.act_fp4_values) {
            const uint8_t E = mxfp4_act_exponent(amax);
            const float mult = amax == 0.0f ? 0.0f : std::ldexp(1.0f, 127 - static_cast<int>(E));
            srow[g] = std::ldexp(1.0f, static_cast<int>(E) - 127);
            for (int64_t k = k0; k < k1; ++k) {
              float v = x[k] * mult;  // exact: a power of two (|v| <= 6 by the rounded-up scale)
              v = v < -6.0f ? -6.0f : (v > 6.0f ? 6.0f : v);
              q[k] = e4m3fn_from_f32(f32_from_e2m1(e2m1_from_f32(v)));
            }
          } else if (d.act_scale_format == ScaleFormat::E8M0) {
            const uint8_t E = mxfp8_act_exponent(amax);
            const float mult = amax == 0.0f ? 0.0f : std::ldexp(1.0f, 127 - static_cast<int>(E));
            srow[g] = std::ldexp(1.0f, static_cast<int>(E) - 127);
            for (int64_t k = k0; k < k1; ++k) q[k] = fp8_quantize_mul(x[k], mult);
          } else {
            const float s = fp8_dynamic_group_scale(amax);
            srow[g] = s;
            for (int64_t k = k0; k < k1; ++k) q[k] = fp8_quantize_div(x[k], s);
          }
        }
        break;
      }
      case ActScheme::None: QT_ASSERT(false);
    }
  }
  return r;
}

float static_input_scale(const LinearDescriptor& d, const QuantizedWeightRef& w) {
  if (!d.needs_static_act_scale()) return 0.0f;
  if (!w.input_scale)
    throw InputError(InputError::Kind::Missing, w.file, w.tensor,
                     "static per-tensor activations need the layer's input_scale, none was given");
  if (w.input_scale_dtype != d.input_scale_dtype)
    throw InputError(InputError::Kind::BadFile, w.file, w.tensor, "input scale dtype differs",
                     std::string(dtype_name(d.input_scale_dtype)),
                     std::string(dtype_name(w.input_scale_dtype)));
  float s = 0.0f;
  const bool ok = decode_to_f32(w.input_scale_dtype, w.input_scale, 1, &s);
  QT_ASSERT(ok);
  if (!std::isfinite(s) || !(s > 0.0f))
    throw InputError(InputError::Kind::BadValue, w.file, w.tensor,
                     "input scale must be finite and > 0", "> 0", std::to_string(s));
  return s;
}

}  // namespace qt::kernels
