#include "formats/quantized_linear.h"

#include <cstring>

#include "formats/checkpoint.h"
#include "libquant/error.h"
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
    std::vector<int64_t> shape = t.shape;
    if (e.packed) {
      auto ws = weight_shape_value(ckpt.find(e.module + ".weight_shape"));
      if (!ws) { skip("pack-quantized without an I64 [2] weight_shape"); continue; }
      shape = *ws;
    }
    if (e.input && !e.input->dynamic && e.input->strategy == Strategy::Tensor) {
      if (!ckpt.find(e.module + ".input_scale")) { skip("static activations but no input_scale"); continue; }
      e.input_scale_tensor = e.module + ".input_scale";
    }
    const TensorView* sc = ckpt.find(e.scale_tensor);
    try {
      e.desc = kernels::descriptor_from_args(e.weights, e.input, shape[0], shape[1], sc->dtype,
                                             e.input_scale_tensor.empty() ? DType::F32
                                                                          : ckpt.find(e.input_scale_tensor)->dtype);
    } catch (const InputError& err) {
      skip(err.problem());
      continue;
    }
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
  l.ref.grid = e.desc.weight_grid();
  l.ref.tensor = e.weight_tensor;
  l.ref.file = w->file;
  if (e.packed) {
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
