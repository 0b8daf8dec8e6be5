#include "formats/quantized_linear.h"

#include <cstring>

#include "formats/checkpoint.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"
#include "libquant/pack.h"

namespace qt {

std::vector<QuantizedLinearEntry> find_quantized_linears(const Checkpoint& ckpt, const QuantInfo& q,
                                                         std::vector<std::string>* skipped) {
  std::vector<QuantizedLinearEntry> out;
  auto ends = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  for (const TensorView& t : ckpt.tensors()) {
    QuantizedLinearEntry e;
    if (ends(t.name, ".weight_packed") && t.dtype == DType::I32) {
      e.module = t.name.substr(0, t.name.size() - 14);
      e.packed = true;
    } else if (ends(t.name, ".weight_packed") && t.dtype == DType::U8 && t.shape.size() == 2) {
      e.module = t.name.substr(0, t.name.size() - 14);  // FP4 (nvfp4- / mxfp4-pack-quantized)
      e.fp4_packed = true;
    } else if (ends(t.name, ".weight") && (t.dtype == DType::F8_E4M3 || t.dtype == DType::I8) && t.shape.size() == 2) {
      e.module = t.name.substr(0, t.name.size() - 7);
    } else {
      continue;
    }
    e.weight_tensor = t.name;
    e.scale_tensor = ckpt.find(e.module + ".weight_scale") ? e.module + ".weight_scale"
                     : ckpt.find(e.module + ".weight_scale_inv") ? e.module + ".weight_scale_inv" : "";
    auto g = group_for_module(q, e.module);
    auto skip = [&](const std::string& why) { if (skipped) skipped->push_back(e.module + ": " + why); };
    if (e.scale_tensor.empty()) { skip("no weight_scale"); continue; }
    if (!g || !(*g)->weights) { skip("not covered by a config group qtool can read"); continue; }
    e.weights = *(*g)->weights;
    e.input = (*g)->input;
    if (e.fp4_packed != (e.weights.type == QuantType::Float4E2M1 && e.weights.microscale())) {
      skip("stored as " + std::string(e.fp4_packed ? "packed FP4" : "non-FP4") + " but the config says " +
           (*g)->weights_text);
      continue;
    }
    std::vector<int64_t> shape = t.shape;
    if (e.packed) {
      auto ws = weight_shape_value(ckpt.find(e.module + ".weight_shape"));
      if (!ws) { skip("pack-quantized without an I64 [2] weight_shape"); continue; }
      shape = *ws;
    }
    QuantArgs kernel_args = e.weights;  // what the CPU kernels see
    DType kernel_scale_dtype = DType::F32;
    if (e.weights.microscale()) {
      if (e.fp4_packed) shape[1] *= 2;
      if (e.weights.scale_format == ScaleFormat::Nvfp4) {
        const TensorView* gt = ckpt.find(e.module + ".weight_global_scale");
        if (!gt || gt->dtype != DType::F32 || gt->numel() != 1) { skip("NVFP4 without an F32 [1] weight_global_scale"); continue; }
        e.global_scale_tensor = gt->name;
      }
      kernel_args.type = QuantType::Float8E4M3;  // E2M1 values are E4M3 values
      kernel_args.scale_format = ScaleFormat::ModelDtype;
    }
    if (e.input && !e.input->dynamic && e.input->strategy == Strategy::Tensor) {
      if (!ckpt.find(e.module + ".input_scale")) { skip("static activations but no input_scale"); continue; }
      e.input_scale_tensor = e.module + ".input_scale";
    }
    if (e.input && e.input->scale_format == ScaleFormat::Nvfp4) {  // NVFP4 W4A4: the static global scale
      const TensorView* it = ckpt.find(e.module + ".input_global_scale");
      if (!it || it->dtype != DType::F32 || it->numel() != 1) { skip("NVFP4 activations without an F32 [1] input_global_scale"); continue; }
      e.input_scale_tensor = it->name;
    }
    const TensorView* sc = ckpt.find(e.scale_tensor);
    try {
      e.desc = kernels::descriptor_from_args(kernel_args, e.input, shape[0], shape[1],
                                             e.weights.microscale() ? kernel_scale_dtype : sc->dtype,
                                             e.input_scale_tensor.empty() ? DType::F32
                                                                          : ckpt.find(e.input_scale_tensor)->dtype);
    } catch (const InputError& err) {
      skip(err.problem());
      continue;
    }
    e.desc.weight_fp4_values = e.fp4_packed;
    out.push_back(std::move(e));
  }
  return out;
}

LoadedLinear load_quantized_linear(const Checkpoint& ckpt, const QuantizedLinearEntry& e) {
  LoadedLinear l;
  const TensorView* w = ckpt.find(e.weight_tensor);
  const TensorView* s = ckpt.find(e.scale_tensor);
  QT_ASSERT(w && s);
  const int64_t N = e.desc.N, K = e.desc.K;
  const uint64_t want_scales = static_cast<uint64_t>(e.desc.weight_scale_rows() * e.desc.weight_scale_cols());
  if (s->numel() != want_scales)
    throw InputError(InputError::Kind::BadFile, s->file, s->name,
                     "scale has the wrong number of elements for " + describe_args(e.weights),
                     std::to_string(want_scales), std::to_string(s->numel()));
  l.ref.scales = s->bytes.data();
  l.ref.scale_dtype = s->dtype;
  if (e.weights.microscale()) {
    // Effective F32 scales: NVFP4 f32(fp8 scale) / global scale (the divisor the quantizer used),
    // MX 2^(E-127) (libquant/NUMERICS.md §10).
    float gs = 1.0f;
    if (!e.global_scale_tensor.empty()) std::memcpy(&gs, ckpt.find(e.global_scale_tensor)->bytes.data(), 4);
    const bool nv = e.weights.scale_format == ScaleFormat::Nvfp4;
    if (s->dtype != (nv ? DType::F8_E4M3 : DType::U8))
      throw InputError(InputError::Kind::BadFile, s->file, s->name,
                       "scale dtype does not match " + describe_args(e.weights),
                       nv ? "F8_E4M3" : "U8", std::string(dtype_name(s->dtype)));
    l.scales_f32.resize(s->numel());
    for (size_t i = 0; i < l.scales_f32.size(); ++i)
      l.scales_f32[i] = nv ? f32_from_e4m3fn(s->bytes[i]) / gs : f32_from_e8m0(s->bytes[i]);
    l.ref.scales = reinterpret_cast<const uint8_t*>(l.scales_f32.data());
    l.ref.scale_dtype = DType::F32;
  }
  l.ref.grid = e.desc.weight_grid();
  l.ref.tensor = e.weight_tensor;
  l.ref.file = w->file;
  if (e.fp4_packed) {
    if (static_cast<int64_t>(w->numel()) * 2 != N * K)
      throw InputError(InputError::Kind::BadFile, w->file, w->name, "packed FP4 size does not match the scales",
                       std::to_string(N * K / 2) + " bytes", std::to_string(w->numel()));
    const auto codes = unpack_e2m1(w->bytes.data(), N, K);
    l.unpacked.resize(codes.size());
    for (size_t i = 0; i < codes.size(); ++i) l.unpacked[i] = e4m3fn_from_f32(f32_from_e2m1(codes[i]));
    l.ref.codes = l.unpacked.data();
    l.ref.code_dtype = DType::F8_E4M3;
  } else if (e.packed) {
    const int bits = e.weights.num_bits();
    if (static_cast<int64_t>(w->numel()) != N * packed_cols(K, bits))
      throw InputError(InputError::Kind::BadFile, w->file, w->name, "packed weight size does not match weight_shape",
                       std::to_string(N * packed_cols(K, bits)) + " words", std::to_string(w->numel()));
    auto codes = unpack_int_codes(reinterpret_cast<const int32_t*>(w->bytes.data()), N, K, bits);
    l.unpacked.assign(reinterpret_cast<const uint8_t*>(codes.data()),
                      reinterpret_cast<const uint8_t*>(codes.data()) + codes.size());
    l.ref.codes = l.unpacked.data();
    l.ref.code_dtype = DType::I8;
  } else {
    l.ref.codes = w->bytes.data();
    l.ref.code_dtype = w->dtype;
  }
  if (!e.input_scale_tensor.empty()) {
    const TensorView* is = ckpt.find(e.input_scale_tensor);
    l.ref.input_scale = is->bytes.data();
    l.ref.input_scale_dtype = is->dtype;
  }
  return l;
}


std::optional<std::vector<int64_t>> weight_shape_value(const TensorView* ws) {
  if (!ws || ws->dtype != DType::I64 || ws->numel() != 2) return std::nullopt;
  int64_t v[2];
  std::memcpy(v, ws->bytes.data(), 16);  // the only data a headers-only inspection reads
  return std::vector<int64_t>{v[0], v[1]};
}

}  // namespace qt
