// GPTQ over a model folder (`qtool quantize --algorithm gptq`): the calibration side of
// libquant/gptq.h, as llm-compressor 0.14's GPTQModifier runs it under its sequential pipeline.
//
// The forward pass (calib/forward.h) runs layer by layer with ForwardOptions::rewrite_layer:
//   1. observation pass of layer l over every sample: each quantized Linear's input is added to
//      its Hessian, sum 2 X^T X per sample (one Hessian per input: q/k/v share the
//      input_layernorm output's, gate/up the post_attention_layernorm output's; o_proj and
//      down_proj have their own);
//   2. every quantized Linear of layer l is solved (libquant/gptq.h) and its forward weight is
//      replaced by the dequantized result dtype(code * scale); the layer's Hessians are freed;
//   3. propagation pass: layer l with the quantized weights over every sample gives the inputs
//      of layer l + 1.
// So layer l + 1 is calibrated on the outputs of the already-quantized layers 0..l (llm-compressor's
// propagate_error = True, its default), while inside one layer every Hessian comes from the
// layer's unquantized weights (llm-compressor quantizes a layer's modules only after its
// calibration pass). Memory: the hidden states (calib/hidden_store.h) plus one layer's weights,
// twice (row-major and packed), plus one layer's Hessians in f64 (the peak is reported). A layer's
// codes and scales leave memory as soon as it is solved: with GptqRunOptions::weights_spill_dir
// they go to a temporary file there (calib/quantized_store.h) until the pipeline writes them, so
// the anonymous peak does not grow with the number of layers.
//
// With GptqRunOptions::observer the same observation passes also record activation statistics
// (calib/observers.h) -- what each layer's inputs are once the layers before it are quantized --
// and with GptqRunOptions::smoothing SmoothQuant runs layer by layer inside the pass, as
// llm-compressor's SmoothQuantModifier + GPTQModifier recipe does (libquant/NUMERICS.md 9.7): in
// step 2, layer l's factors come from the channel ranges just observed, the layer's norms and
// weights are smoothed, and GPTQ quantizes the smoothed weights with the Hessians as observed
// (before smoothing: theirs too).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "calib/hidden_store.h"
#include "calib/quantized_store.h"
#include "calib/quant_plan.h"
#include "calib/quantize_pipeline.h"
#include "calib/smoothing.h"
#include "libquant/gptq.h"

namespace qt {
class ModelFolder;
}

namespace qt::calib {

// SmoothQuant in the GPTQ pass (qtool quantize --smoothquant --algorithm gptq).
struct GptqSmoothing {
  double alpha = 0.8;
  SmoothingMappings which = SmoothingMappings::All;
};

struct GptqRunOptions {
  GptqOptions gptq;
  // Activation statistics observed in the observation pass of every layer (static input scales,
  // KV scales, SmoothQuant's channel ranges): "static_minmax" or "minmax" (calib/observers.h);
  // empty: none (weight-only and dynamic schemes without smoothing).
  std::string observer;
  float ema_c = 0.01f;
  // SmoothQuant, layer by layer in the same pass (needs `observer`).
  std::optional<GptqSmoothing> smoothing;
  int num_threads = 0;
  HiddenSpill hidden_spill;
  // Where the finished layers' codes and scales wait for the writer (a temporary file, unlinked);
  // empty: in RAM.
  std::string weights_spill_dir;
  std::function<void(int64_t layer, int64_t num_layers)> on_layer_done;
};

struct GptqRun {
  QuantizedStore weights;                          // module -> codes + scales, for the pipeline
  // With GptqRunOptions::observer: what the observation passes saw (observer name set); with
  // smoothing, the plan whose stats are these with the balance Linears' smoothed input_absmax.
  ActivationStats stats;
  std::optional<SmoothingPlan> smoothing;
  std::map<std::string, double> loss;              // module -> GPTQ loss (sum err^2 / 2)
  std::vector<std::string> rtn_fallback;           // modules whose Hessian could not be factored
  int64_t dead_columns = 0;                        // over all modules
  int64_t samples = 0, tokens = 0;
  double seconds = 0;             // the whole run
  double forward_seconds = 0;     // both passes of every layer, weight loading included
  double hessian_seconds = 0;     // X^T X accumulation
  double solve_seconds = 0;       // dampening + Cholesky + inverse + Cholesky
  double update_seconds = 0;      // GPTQ's column loop and block updates
  uint64_t peak_hessian_bytes = 0;  // one layer's Hessians (f64), the largest layer
  uint64_t hidden_bytes = 0;
  bool hidden_spilled = false;
};

// The temporary files run_gptq keeps with `opts` for `tokens` calibration tokens in all, in the
// folder of opts.weights_spill_dir / opts.hidden_spill.dir (quantize: the one that will hold OUT),
// for the free-space preflight (calib/quantize_pipeline.h check_free_space):
//   during_write  the quantized weights' spill (calib/quantized_store.h): every quantized module's
//                 codes (INT4 two per byte, others one byte each -- an upper bound: INT8 codes that
//                 all fit in four bits are stored two per byte too) and scale bytes; it lives until
//                 the writer has written them; 0 without weights_spill_dir;
//   before_write  the hidden states (tokens x hidden_size x 4 B) when they exceed
//                 hidden_spill.above_bytes (calib/hidden_store.h); gone before the writer starts.
ScratchFiles gptq_scratch_files(const ModelFolder& model, const QuantPlan& plan, int64_t tokens,
                                const GptqRunOptions& opts);

// Runs GPTQ for every module plan.quantized_modules names, with the plan's effective weight
// args (integer, per-channel or per-group). Throws InputError for an unsupported architecture,
// bad samples (forward.h), or a weight GPTQ refuses (libquant/gptq.h).
GptqRun run_gptq(const ModelFolder& model, const QuantPlan& plan,
                 const std::vector<std::vector<int32_t>>& samples, const GptqRunOptions& opts);

}  // namespace qt::calib
