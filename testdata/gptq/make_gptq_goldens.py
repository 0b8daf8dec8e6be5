#!/usr/bin/env python3
"""GPTQ goldens from the real llm-compressor GPTQModifier, on qtool's tiny model in f32.

Usage (from the repository root, in a venv with `pip install llmcompressor==0.14.*`):
    build/tools/qtool tiny-model /tmp/tiny-f32 --dtype f32 --hidden 256 --intermediate 512  # seeded, deterministic
    python3 testdata/gptq/make_gptq_goldens.py /tmp/tiny-f32

Writes testdata/gptq/:
    calibration_ids.json           the calibration token ids (8 samples x 64 ids, numpy seed 20261206)
    w4a16_g128_static.safetensors  GPTQModifier(scheme W4A16 = int4 symmetric group 128,
                                   actorder default = "static"), sequential pipeline
    w4a16_g128_none.safetensors    the same with actorder=None
    w8a16_channel_static.safetensors  int8 symmetric per-channel weights (qtool's w8a16),
                                   actorder default
Each file holds, for every decoder Linear M, the tensors of llm-compressor's compressed checkpoint:
M.weight_packed (I32), M.weight_scale (F32), M.weight_shape (I64) -- and M.weight_g_idx if it wrote
one (it does not: "static" = "weight" ordering keeps the format). tests/test_gptq.cpp runs qtool's
GPTQ on the same model and ids and compares.

Versions used: llmcompressor 0.14.0.1, compressed-tensors 0.19.0, torch 2.14.0 (CPU, 1 thread),
transformers 5.17.0, Python 3.11.7. f32 weights keep model-dtype rounding out of the comparison.
Everything runs on the CPU (torch.linalg.cholesky -> LAPACK from the torch wheel).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import golden_util as gu  # noqa: E402

SEED = 20261206
NUM_SAMPLES, SEQ_LEN = 8, 64


def calibration_ids(vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(SEED)
    return rng.integers(0, vocab, size=(NUM_SAMPLES, SEQ_LEN)).tolist()


def run(model_dir: str, ids: list[list[int]], weights: dict, actorder) -> dict[str, torch.Tensor]:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    kw = {} if actorder == "default" else {"actorder": actorder}
    recipe = GPTQModifier(
        config_groups={"group_0": {"targets": ["Linear"], "weights": weights}},
        ignore=["lm_head"], block_size=128, dampening_frac=0.01, **kw)
    tensors, cfg = gu.oneshot_checkpoint(model, ids, recipe, SEQ_LEN)
    keep = gu.layer_tensors(tensors, (".weight_packed", ".weight_scale", ".weight_shape", ".weight_g_idx"))
    qc = cfg["quantization_config"]
    print(json.dumps(qc["config_groups"]["group_0"]["weights"]), file=sys.stderr)
    return keep


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(gu.llmc_versions(), file=sys.stderr)
    model_dir = sys.argv[1]
    vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
    ids = calibration_ids(vocab)
    (HERE / "calibration_ids.json").write_text(json.dumps(ids) + "\n")
    w4 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}
    w8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    for name, weights, actorder in (("w4a16_g128_static", w4, "default"),
                                    ("w4a16_g128_none", w4, None),
                                    ("w8a16_channel_static", w8, "default")):
        t = run(model_dir, ids, weights, actorder)
        save_file(t, str(HERE / f"{name}.safetensors"))
        print(name, len(t), "tensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
