#!/usr/bin/env python3
"""Evidence for README "Notes for implementers": do a QuantizationModifier's static input observers
see smoothed or unsmoothed activations when SmoothQuantModifier precedes it in one recipe?

Runs llm-compressor oneshot on testdata/forward/llama with [SmoothQuantModifier(0.5),
QuantizationModifier(targets="Linear", scheme="FP8", ignore=["lm_head"])] (static per-tensor FP8
input scales, min-max observer) under the pipelines named on the command line, and prints
input_scale * 448 next to max |input| of the same Linear on the unsmoothed and on the smoothed
model (both measured here with forward pre-hooks, quantization disabled). Writes nothing.

    /work/venv-llmc/bin/python testdata/smoothquant/check_ordering.py sequential basic independent
"""
import sys

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
from llmcompressor.utils.helpers import DisableQuantization

TOKENS = [[1, 17, 42, 99, 5, 127, 64, 3, 88, 42, 42, 7], [2, 120, 0, 31, 77, 9, 56]]
NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
         "model.layers.0.mlp.gate_proj", "model.layers.1.mlp.gate_proj"]


def load():
    return AutoModelForCausalLM.from_pretrained("testdata/forward/llama", dtype=torch.float32,
                                                attn_implementation="eager")


def input_absmax(model):
    out, mods = {}, dict(model.named_modules())
    hooks = [mods[n].register_forward_pre_hook(
        lambda m, a, n=n: out.__setitem__(n, max(out.get(n, 0.0), a[0].abs().max().item())))
        for n in NAMES]
    with torch.no_grad():
        for t in TOKENS:
            model(torch.tensor([t]), use_cache=False)
    for h in hooks:
        h.remove()
    return out


unsmoothed = input_absmax(load())
for pipeline in sys.argv[1:] or ["sequential", "independent"]:
    model = load()
    oneshot(model=model, processor=AutoTokenizer.from_pretrained("/work/shared/tokenizers/llama2"),
            dataset=Dataset.from_dict({"input_ids": TOKENS}),
            recipe=[SmoothQuantModifier(smoothing_strength=0.5),
                    QuantizationModifier(targets="Linear", scheme="FP8", ignore=["lm_head"])],
            pipeline=pipeline, num_calibration_samples=2, batch_size=1,
            shuffle_calibration_samples=False)
    with DisableQuantization(model):
        smoothed = input_absmax(model)
    mods = dict(model.named_modules())
    for n in NAMES:
        print(f"{pipeline:12s} {n:34s} input_scale*448={mods[n].input_scale.item() * 448:.6f} "
              f"unsmoothed max|x|={unsmoothed[n]:.6f} smoothed max|x|={smoothed[n]:.6f}")
