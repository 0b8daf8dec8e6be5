#!/usr/bin/env python3
"""NVFP4 (W4A4) goldens from the real llm-compressor QuantizationModifier(scheme="NVFP4").

Usage (from the repository root, in a venv with `pip install llmcompressor==0.14.*`):
    build/tools/qtool tiny-model /tmp/tiny-f32  --dtype f32  --hidden 256 --intermediate 512
    build/tools/qtool tiny-model /tmp/tiny-bf16 --dtype bf16 --hidden 256 --intermediate 512
    python3 testdata/nvfp4/make_nvfp4_goldens.py /tmp/tiny-f32 /tmp/tiny-bf16

Calibration: testdata/gptq/calibration_ids.json (8 samples x 64 token ids, numpy seed 20261206),
fed to `oneshot` as a tokenized dataset (shuffle off, sequential pipeline, batch size 1), as
testdata/gptq/make_gptq_goldens.py does. The tiny models are qtool's seeded tiny Llama (2 layers,
hidden 256, intermediate 512, 4 heads, 2 KV heads, vocab 512).

Writes testdata/nvfp4/:
    nvfp4_f32.safetensors   every decoder-Linear tensor of llm-compressor's compressed checkpoint
    nvfp4_bf16.safetensors  (weight_packed U8, weight_scale F8_E4M3, weight_global_scale F32,
                            input_global_scale F32) for the f32 and the bf16 model
    nvfp4.config.json       the quantization_config it wrote (for the bf16 model; sorted keys)

Versions used: llmcompressor 0.14.0.1, compressed-tensors 0.19.0, torch 2.14.0 (CPU, 1 thread),
transformers 5.17.0, Python 3.11.7 (venv /work/venvs/gptq-llmc).
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

IDS = HERE.parent / "gptq" / "calibration_ids.json"
SEQ_LEN = 64
SUFFIXES = (".weight_packed", ".weight_scale", ".weight_global_scale", ".input_global_scale")


def run(model_dir: str, ids: list[list[int]], dtype: torch.dtype) -> tuple[dict, dict]:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    recipe = QuantizationModifier(targets="Linear", scheme="NVFP4", ignore=["lm_head"])
    tensors, cfg = gu.oneshot_checkpoint(model, ids, recipe, SEQ_LEN)
    return gu.layer_tensors(tensors, SUFFIXES), cfg["quantization_config"]


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(gu.llmc_versions(), file=sys.stderr)
    ids = json.loads(IDS.read_text())
    qc = None
    for model_dir, dtype, tag in ((sys.argv[1], torch.float32, "f32"), (sys.argv[2], torch.bfloat16, "bf16")):
        t, qc = run(model_dir, ids, dtype)
        save_file(t, str(HERE / f"nvfp4_{tag}.safetensors"))
        print(tag, len(t), "tensors", file=sys.stderr)
    (HERE / "nvfp4.config.json").write_text(json.dumps(qc, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
