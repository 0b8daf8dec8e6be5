// The `quantization_config` block of config.json: written for qtool's schemes, and read back
// from any checkpoint (compressed-tensors or legacy AutoFP8 "fp8") for inspect and verify.
//
// What is written (formats/FORMATS.md §2.1-§2.5; legacy "fp8": §4): only the QuantizationArgs key
// set that every compressed-tensors from 0.9 on accepts (num_bits, type, symmetric, group_size,
// strategy, block_structure, dynamic, actorder, observer, observer_kwargs) -- never
// scale_dtype/zp_dtype or a per-group `format`, which older pinned versions reject
// (formats/FORMATS.md rule 4). block_structure is a list, which needs compressed-tensors >= 0.11
// (only fp8-block uses it).
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "formats/name_pattern.h"
#include "libquant/schemes.h"

namespace qt {

// The two checkpoint layouts qtool writes: compressed-tensors, or the legacy AutoFP8 / vLLM
// "fp8" layout (per-tensor and block FP8 only).
enum class OutputFormat { CompressedTensors, LegacyFp8 };

struct CtWriteOptions {
  std::vector<std::string> ignore;     // module names left unquantized (exact names)
  bool kv_cache_fp8 = false;           // adds kv_cache_scheme (FP8 per-tensor static)
  std::string activation_observer = "static_minmax";  // recorded for static activations
};

// compressed-tensors quantization_config for `scheme`.
nlohmann::json make_ct_quant_config(const Scheme& scheme, const CtWriteOptions& opts);
// Legacy AutoFP8 / vLLM "fp8" config (per-tensor FP8 schemes only; QT_ASSERT otherwise).
nlohmann::json make_legacy_fp8_config(const Scheme& scheme, const CtWriteOptions& opts);
// One QuantArgs object in the compatible key set.
nlohmann::json quant_args_json(const QuantArgs& a, const std::string& observer);
// One config group ("group_0") targeting Linear: weights, input activations (null when
// weight-only), no output activations, and the group's own `format`, the same value as the
// global key. Both are written on evidence (formats/FORMATS.md §2.6): vLLM reads a group's
// `format` first (its fused-MoE path reads only that one), and compressed-tensors 0.13 with
// transformers 4.x needs the global one.
nlohmann::json make_ct_group(const QuantArgs& weights, const std::optional<QuantArgs>& input,
                             const std::string& input_observer, CtFormat format);

// ---- reading -------------------------------------------------------------------------------

// One config group as read from a checkpoint.
struct QuantGroup {
  std::string name;                      // "group_0"
  std::vector<std::string> targets;      // "Linear", exact names or "re:" patterns
  std::optional<QuantArgs> weights;      // nullopt if absent or not representable
  std::optional<QuantArgs> input;        // nullopt if null / absent
  std::string weights_text, input_text;  // human description (also for unrepresentable args)
  bool weights_symmetric = true, input_symmetric = true;
  std::string format;                    // per-group format, or the global one
};

// What a checkpoint says about its quantization.
struct QuantInfo {
  std::string method;                    // "compressed-tensors", "fp8", "" (not quantized), other
  std::string format;                    // global compressed-tensors format
  std::string status;                    // quantization_status
  std::vector<QuantGroup> groups;
  std::vector<std::string> ignore;       // ignore / ignored_layers
  std::optional<QuantArgs> kv_cache;     // kv_cache_scheme (legacy "static" -> FP8 per-tensor)
  std::string kv_cache_text;
  std::string legacy_activation_scheme;  // "static" / "dynamic" for quant_method fp8
  std::vector<std::string> problems;     // what looks wrong in the config itself
  std::string source;                    // the config.json it came from (for error messages)
  // The first global or per-group `format` that is not one of compressed-tensors' formats
  // (kCtFormats); also recorded in `problems`. Readers that act on the layout refuse it.
  std::string unknown_format;
};

// Every `format` value compressed-tensors (0.20) defines (CompressionFormat).
extern const std::vector<std::string> kCtFormats;

// Parses config["quantization_config"] (or compression_config.quantization_config); `source`
// is the config file's path, used in errors. Never throws for odd content: problems are
// collected in QuantInfo::problems (an invalid `re:` pattern is one of them).
QuantInfo parse_quant_info(const nlohmann::json& config, const std::string& source = {});

// compressed-tensors / vLLM target matching for one module name: exact name, `re:` prefix
// (Python re.match: anchored at the start only; see formats/name_pattern.h), or a class target
// ("Linear" matches any Linear-like module; the caller says whether the module is a Linear).
// Throws InputError naming `src` for an invalid pattern, an over-long name or a pattern that
// hits PCRE2's limits.
bool target_matches(const std::string& target, const std::string& module, bool is_linear,
                    const PatternSource& src);

// Finds the args that cover `module` in the checkpoint's config (first matching group, unless
// ignored). nullopt if not covered. Throws InputError (BadFile, naming q.source) for a `re:`
// pattern that cannot be matched.
std::optional<const QuantGroup*> group_for_module(const QuantInfo& q, const std::string& module);

}  // namespace qt
