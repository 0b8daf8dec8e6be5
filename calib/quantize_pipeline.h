// The streaming quantize pipeline: executes a QuantPlan over a model folder and writes the
// output checkpoint.
//
// Memory: the input is memory-mapped and read tensor by tensor; one quantized tensor (codes +
// scales) is held at a time, and the writer pwrites it at its precomputed offset. Anonymous
// memory is bounded by a small multiple of the largest tensor, whatever the model size.
// Atomicity: everything is written into a sibling folder `<OUT>.qtool-partial-<pid>` which is
// renamed to OUT only after every shard, the index, config.json and the manifest are complete
// and fsynced; an interrupted run never leaves a folder named OUT that looks complete.
// Determinism: the same input gives byte-identical output at any thread count (no timestamps
// are written; per-tensor work is order-independent).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "calib/quant_plan.h"
#include "calib/quantized_store.h"
#include "formats/output_folder.h"
#include "libquant/activation_stats.h"
#include "libquant/quantize.h"

namespace qt {
class ModelFolder;
}

namespace qt::calib {

// Reported after each input tensor is done (for the per-tensor log line and progress bar).
struct TensorProgress {
  size_t index = 0, total = 0;      // 1-based index among input tensors
  const TensorDecision* decision = nullptr;
  std::string shape;                // "[4096,4096]"
  std::string from_dtype, to_dtype; // "bf16" -> "fp8" (same when kept)
  uint64_t in_bytes = 0, out_bytes = 0;
  float amax = 0;                   // for quantized weights
  int64_t zero_groups = 0;
  bool smoothed = false;            // SmoothQuant rewrote this tensor before it was quantized / copied
};

struct SmoothingPlan;

struct QuantizeJob {
  std::string output_dir;
  uint64_t max_shard_bytes = 5'000'000'000;  // huggingface_hub's default cap
  bool allow_nonfinite = false;
  bool overwrite = false;           // replace an existing OUT (only after success)
  bool hash_inputs = true;          // sha256 of each input shard in the manifest
  std::string command_line;         // recorded in the manifest
  const ActivationStats* stats = nullptr;  // required for static schemes / --kv-cache fp8
  // SmoothQuant (calib/smoothing.h): tensors it names are written smoothed (and then
  // quantized when the plan says so). With it, `stats` must be smoothing->stats (the smoothed
  // input absmax). Not owned; may be null.
  const SmoothingPlan* smoothing = nullptr;
  // Codes and scales computed beforehand (GPTQ, calib/gptq.h), by module name; a quantized
  // module found here is written from them instead of round-to-nearest. Not owned; may be null.
  // Read back one at a time (calib/quantized_store.h).
  const QuantizedStore* precomputed = nullptr;
  std::function<void(const TensorProgress&)> on_tensor;
  // The run's claim on OUT, when the caller took it earlier (quantize_model does, before
  // calibrating); null: run_quantize takes it itself. Not owned.
  const OutputLock* lock = nullptr;
  // Static scales taken as they are instead of computed from `stats` (`--like`): output tensor
  // name (M.input_scale, A.k_scale, A.v_scale) -> its stored bytes, which must have the output's
  // dtype and size. `stats` must still be set (its observer goes into the config).
  std::map<std::string, std::vector<uint8_t>> fixed_scales;
  // Called after each weight is quantized with the bytes it was quantized from (smoothed when
  // SmoothQuant rewrote it) and the result, on the pipeline's thread (e.g. the drift report).
  std::function<void(const TensorDecision&, const TensorView&, const QuantizedWeight&)> on_quantized;
  // Keys merged into qtool_manifest.json (top level) by whoever prepared the job, e.g. the
  // calibration record of calib/quantize.cpp; every key must be specified in man/qtool-files.5.
  nlohmann::json manifest_extra = nlohmann::json::object();
};

struct QuantizeSummary {
  size_t tensors_total = 0, tensors_quantized = 0, shards = 0;
  uint64_t input_bytes = 0, output_bytes = 0;
  int64_t zero_groups = 0;
  std::vector<std::string> output_files;
};

// Static input scale of a module: max |x| over its fused group (q/k/v, gate/up share one scale,
// formats/FORMATS.md rule 10) turned into a scale with the weights' formula and dtype rules. A routed
// expert's projection takes the maximum over every expert of its layer, w13 (gate/up, w1/w3) and
// w2 (down) separately, as vLLM's fused-MoE kernels do (qtool-quantize(1), MIXTURE OF EXPERTS);
// its own statistic must still exist.
float static_input_scale(const ActivationStats& stats, const std::string& module, QuantType t,
                         DType scale_dtype, const std::string& model_path);
// NVFP4 (W4A4): the static FP32 input_global_scale of `module` from the largest |x| its input (and
// its fused siblings') saw, rounded to the activation dtype `act_dtype` (the Linear's weight dtype),
// with the weights' global-scale formula (libquant/microscale.h nvfp4_global_scale). Errors as
// static_input_scale.
float nvfp4_input_global_scale(const ActivationStats& stats, const std::string& module, DType act_dtype,
                               const std::string& model_path);

// Runs the plan. Throws InputError on bad input or I/O failure; nothing named OUT is left then.
QuantizeSummary run_quantize(const ModelFolder& model, const QuantPlan& plan, const QuantizeJob& job);

// Temporary files a run keeps in the folder that will hold OUT (so on OUT's file system), for the
// free-space check: GPTQ's (calib/gptq.h gptq_scratch_files).
struct ScratchFiles {
  std::string owner;                // "GPTQ's temporary files"
  std::string during_write_what;    // "quantized weights": alive until OUT is written
  uint64_t during_write = 0;
  std::string before_write_what;    // "hidden states": alive only until the writer starts
  uint64_t before_write = 0;
  bool empty() const { return during_write == 0 && before_write == 0; }
};

// Free bytes for an unprivileged writer at `dir` (statvfs f_bavail * f_frsize); UINT64_MAX when
// the file system cannot be asked.
uint64_t free_disk_bytes(const std::string& dir);

// Throws InputError(Io, dir, "", "not enough free disk space", expected, actual) when `free_bytes`
// is less than the peak the run needs there: output_bytes + scratch.during_write +
// max(0, scratch.before_write - output_bytes) + a 64 MiB margin (the hidden states are gone
// before the output is written; the quantized weights are not). Without scratch files expected
// is "<N> MiB"; with them it names the parts, e.g. "<N> MiB (the output 5 MiB; GPTQ's temporary
// files: quantized weights 2 MiB while writing, hidden states 9 MiB before)". actual: "<M> MiB free".
void check_free_space(const std::string& dir, uint64_t free_bytes, uint64_t output_bytes,
                      const ScratchFiles& scratch = {});

// Preflight checks that need the file system: OUT is not the input and not inside it, OUT does
// not exist (unless overwrite), the folder that will hold OUT is writable (not read-only, not
// permission-denied: checked before any expensive work), enough free space for
// plan.output_bytes and `scratch` (check_free_space). Throws InputError(Usage/Io).
void preflight_output(const ModelFolder& model, const QuantPlan& plan, const QuantizeJob& job,
                      const ScratchFiles& scratch = {});

}  // namespace qt::calib
