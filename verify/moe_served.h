// What vLLM's fused-MoE FP8 method computes with, where it differs from what a checkpoint stores,
// so that `qtool verify` measures the served model (issue 14; the decision is written in
// man/qtool-quantize.1.md, MIXTURE OF EXPERTS, and man/qtool-verify.1.md).
//
// When vLLM loads the experts of one MoE block (CompressedTensorsW8A8Fp8MoEMethod):
//   - static input scales: it keeps ONE input scale for w13 (gate/up, w1/w3 of every expert) and
//     ONE for w2 (down_proj / w2): the maximum over the experts of each;
//   - per-tensor FP8 weights: for each expert it requantizes gate and up (w1 and w3) to the
//     larger of their two weight scales: each shard's codes are dequantized to float16
//     (f16(code x own scale)) and quantized again with that common scale (divide in f32,
//     clamp to +-448, round to E4M3 nearest-even). down_proj / w2 keep their codes and scales.
// Per-channel weights and dynamic activations are used as stored. Modules outside `.experts.`
// (attention, the dense MLP, Qwen2-MoE's shared expert) are not touched here.
#pragma once

#include <string>
#include <vector>

#include "formats/quantized_linear.h"

namespace qt {
class Checkpoint;
}

namespace qt::verify {

struct MoeServedSummary {
  int64_t blocks = 0;                 // MoE blocks with quantized experts
  int64_t input_scales_raised = 0;    // expert projections whose static input scale vLLM raises
  int64_t weights_requantized = 0;    // expert gate/up (w1/w3) projections requantized
  double max_input_spread = 1.0;      // largest max/min of a block's w13 or w2 input scales
  // One line for the report ("" when no MoE expert is quantized).
  std::string describe() const;
};

// Rewrites `entries` to what vLLM serves: an expert's input_scale_tensor becomes the tensor of
// the largest input scale of its block and group (w13 or w2); gate/up of an expert with
// per-tensor FP8 weights get served_scale_tensor (the larger of the pair's weight scales), which
// load_served_linear applies. Scales that are not finite and positive are left alone (the
// structure check reports them).
MoeServedSummary apply_vllm_moe_rules(const Checkpoint& ck, std::vector<QuantizedLinearEntry>& entries);

// load_quantized_linear, then (when e.served_scale_tensor is set) vLLM's requantization of the
// codes to that scale; the returned reference points at the requantized codes and that scale.
LoadedLinear load_served_linear(const Checkpoint& ck, const QuantizedLinearEntry& e);

// vLLM's requantization of one FP8 E4M3 code from scale `own` to scale `common`.
uint8_t requantize_e4m3_code(uint8_t code, float own, float common);

}  // namespace qt::verify
