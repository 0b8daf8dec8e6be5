#!/usr/bin/env python3
"""GPTQ + W8A8 goldens from the real llm-compressor, on qtool's tiny model in f32.

Two recipes that combine GPTQ with what the weight-only goldens (make_gptq_goldens.py) do not
cover, both run by llm-compressor's sequential pipeline in ONE oneshot call:

  sq_gptq_w8a8        [SmoothQuantModifier(smoothing_strength=0.8) (default mappings: input_layernorm
                      -> q/k/v, post_attention_layernorm -> gate/up),
                       GPTQModifier(scheme="W8A8")]  -- the classic INT8 recipe llm-compressor
                      documents; W8A8 = int8 symmetric per-channel weights, int8 dynamic per-token
                      activations = qtool's int8-dynamic
  gptq_w8a8_static_kv GPTQModifier(int8 symmetric per-channel weights, int8 static per-tensor input
                      activations (observer static_minmax) = qtool's int8-static,
                      kv_cache_scheme fp8 e4m3 static per-tensor = qtool's --kv-cache fp8)

Usage (from the repository root, in a venv with `pip install llmcompressor==0.14.*`):
    build/tools/qtool tiny-model /tmp/tiny-f32 --dtype f32 --hidden 256 --intermediate 512
    python3 testdata/gptq/make_gptq_w8a8_goldens.py /tmp/tiny-f32

Reads testdata/gptq/calibration_ids.json (the ids of make_gptq_goldens.py: 8 samples x 64 ids).
Writes testdata/gptq/<name>.safetensors with, from llm-compressor's compressed checkpoint, every
decoder-layer tensor: M.weight (I8 codes), M.weight_scale (F32), M.input_scale (static run),
self_attn.k_scale / v_scale (static run), and the two norm weights per layer (smoothed ones in
the SmoothQuant run).

Versions used: llmcompressor 0.14.0.1, compressed-tensors 0.19.0, torch 2.14.0 (CPU, 1 thread),
transformers 5.17.0, datasets 5.2.0, Python 3.11.7.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import golden_util as gu  # noqa: E402

SEQ_LEN = 64
KEEP = (".weight", ".weight_scale", ".input_scale", ".k_scale", ".v_scale")


def run(model_dir: str, ids: list[list[int]], recipe) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tensors, cfg = gu.oneshot_checkpoint(model, ids, recipe, SEQ_LEN)
    print(json.dumps(cfg["quantization_config"], indent=None)[:2000], file=sys.stderr)
    return gu.layer_tensors(tensors, KEEP)


def main() -> int:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(gu.llmc_versions(), file=sys.stderr)
    model_dir = sys.argv[1]
    ids = json.loads((HERE / "calibration_ids.json").read_text())

    sq = [SmoothQuantModifier(smoothing_strength=0.8),
          GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"], block_size=128, dampening_frac=0.01)]
    t = run(model_dir, ids, sq)
    save_file(t, str(HERE / "sq_gptq_w8a8.safetensors"))
    print("sq_gptq_w8a8", len(t), "tensors", file=sys.stderr)

    static = GPTQModifier(
        config_groups={"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor",
                                  "dynamic": False, "observer": "static_minmax"}}},
        kv_cache_scheme={"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor",
                         "dynamic": False, "observer": "static_minmax"},
        ignore=["lm_head"], block_size=128, dampening_frac=0.01)
    t = run(model_dir, ids, static)
    save_file(t, str(HERE / "gptq_w8a8_static_kv.safetensors"))
    print("gptq_w8a8_static_kv", len(t), "tensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
