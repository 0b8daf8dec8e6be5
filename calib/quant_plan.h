// QuantPlan: what `qtool quantize` will do to every tensor of a checkpoint, decided from names,
// shapes and the scheme before any data is read (so --dry-run and preflight are instant).
//
// Which tensors are quantized (data-free, by name, like compressed-tensors' model-free matcher,
// formats/FORMATS.md §2.5): 2-D floating `<module>.weight` tensors of decoder Linear layers
// (`...layers.N....`), except norms, MoE routers (`mlp.gate`, `router`, `shared_expert_gate`),
// and anything under a vision tower / multimodal projector. Embeddings and lm_head are never
// targets by default. `--targets` (exact names or `re:` patterns) replaces the default rule,
// `--ignore` removes modules. Every Linear-like module left unquantized is named in the written
// `ignore` list, as vLLM requires (formats/FORMATS.md rule 11). q/k/v and gate/up are never split
// (rule 12).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "formats/ct_config.h"
#include "libquant/schemes.h"
#include "libquant/tensor_view.h"

namespace qt::calib {

// The group sizes --group-size accepts, largest first (what vLLM's Marlin WNA16 kernels take
// besides channel-wise: 128, 64 and 32 all run; compressed-tensors accepts any divisor).
inline constexpr int64_t kGroupSizes[] = {128, 64, 32};

struct PlanOptions {
  const Scheme* scheme = nullptr;
  OutputFormat format = OutputFormat::CompressedTensors;
  std::vector<std::string> ignore;    // exact module names or "re:" patterns
  std::vector<std::string> targets;   // empty = default rule
  // Exact module names to quantize, replacing `targets` and the default rule when set (--like:
  // a set, as a list of thousands of exact names would be matched name by name). Not owned.
  const std::set<std::string>* target_set = nullptr;
  bool kv_cache_fp8 = false;          // k_scale / v_scale per attention module
  // --group-size: replaces the scheme's weight group size (schemes with Strategy::Group weights
  // only; quantize_model checks); 0 = the scheme's own (128 for w4a16).
  int64_t group_size = 0;

  // *scheme with the overrides above applied (a copy: the table row itself is never changed).
  Scheme effective_scheme() const;
};

// One tensor the output checkpoint will hold.
struct OutputTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  enum class Kind {
    Copy,          // bytes of input tensor `source` unchanged
    QuantWeight,   // codes of `source` (F8_E4M3 / I8)
    PackedWeight,  // int32 words of `source`'s codes (pack-quantized); U8 bytes, two FP4 codes each (FP4 formats)
    WeightScale,   // scales of `source`
    WeightShape,   // I64 [2] = source shape (pack-quantized)
    GlobalScale,   // F32 [1] NVFP4 weight_global_scale of `source` (shared by a fused set)
    InputScale,    // static activation scale of module `module` (calibrated); NVFP4: its F32
                   // input_global_scale (the scheme's input args have ScaleFormat::Nvfp4)
    KvScale,       // k_scale / v_scale of attention module `module` (calibrated)
  } kind = Kind::Copy;
  std::string source;  // input tensor name
  std::string module;  // module name (for InputScale / KvScale)
};

// Decision for one input tensor.
struct TensorDecision {
  std::string name;        // input tensor name
  std::string module;      // name without ".weight" for weights
  bool quantize = false;
  bool linear_like = false;
  std::string reason;      // why kept / how quantized, for --dry-run
};

struct QuantPlan {
  PlanOptions options;
  std::vector<TensorDecision> decisions;   // input order
  std::vector<OutputTensor> outputs;       // output order (input order, expanded)
  std::vector<std::string> ignore_written; // exact module names for the config's ignore list
  std::vector<std::string> quantized_modules;
  std::vector<std::string> attention_modules;  // for kv scales / reporting
  uint64_t input_bytes = 0, output_bytes = 0;
  std::vector<std::string> warnings;
};

// Builds the plan. Throws InputError(Usage/Unsupported) naming the tensor for anything that
// cannot work: a fused group split by --ignore, a weight whose shape the scheme cannot take,
// a pattern that matches nothing, a legacy-fp8 request for a non per-tensor scheme.
QuantPlan build_quant_plan(const std::vector<TensorView>& tensors, const PlanOptions& opts,
                           const std::string& model_path);

// Name rules, exposed for tests and inspect.
bool is_linear_weight_name(const std::string& tensor_name, const std::vector<int64_t>& shape);
bool is_default_target(const std::string& module);
// A routed expert's Linear ("model.layers.3.mlp.experts.7.down_proj").
bool is_expert_module(const std::string& module);
// "model.layers.0.self_attn.q_proj" -> "model.layers.0.self_attn.{q,k,v}_proj" members, or empty.
std::vector<std::string> fused_siblings(const std::string& module);

}  // namespace qt::calib
