#!/usr/bin/env python3
"""SmoothQuant goldens for the tiny mixture-of-experts models, made by the real llm-compressor.

For testdata/forward/{mixtral,qwen3_moe,qwen2_moe} (float32, 2 layers, made by
testdata/forward/make_moe_goldens.py) and alpha 0.8 this runs, in one process on one model object:

 1. `oneshot` with only `SmoothQuantModifier(smoothing_strength=0.8)` and its default (inferred)
    mappings, pipeline "basic", on exactly the token sequences of testdata/forward/<model>/stats.json
    (batch 1 each, no padding, attention eager). For these three architectures llm-compressor 0.14's
    registry (`modifiers/transform/smoothquant/utils.py`: MIXTRAL_SMOOTHQUANT_MAPPINGS,
    QWEN_MOE_SMOOTHQUANT_MAPPINGS) has ONE mapping per layer, input_layernorm -> q/k/v_proj; the
    MoE side (post_attention_layernorm) is left out on purpose there. The statistics, the factors
    and the smoothed weights are captured exactly as testdata/smoothquant/make_goldens.py does (this
    script imports its capture hooks);
 2. `oneshot` again on the now smoothed model with only
    `QuantizationModifier(targets=q/k/v_proj, scheme="FP8")` (static per-tensor input scales),
    pipeline "basic": the q/k/v `input_scale`s llm-compressor writes for the smoothed model (what its
    default "independent" pipeline gives, where the quantization calibrates after smoothing; the
    "sequential" pipeline is avoided because it drops Mixtral's and Qwen3-MoE's causal mask, see
    calib/MODELS.md section 10).

It writes testdata/smoothquant/<model>_moe_a08.json. Sanity checks (asserted, never the source of
a golden): the norm ranges reproduce transformers 5.23's q_proj max |input| of
testdata/forward/<model>/stats.json; a float32 torch re-derivation of the factors and smoothed
weights is bit-identical (make_goldens.py's checks); the FP8 input scales equal the smoothed
model's own max |q_proj input| / 448 measured with a forward hook.

Versions (the venv /work/venvs/moe-llmc): llmcompressor 0.14.0.1, compressed-tensors 0.19.0,
torch 2.14.0 (CPU), transformers 5.17.0, datasets 5.2.0, numpy 2.4.6, Python 3.11.
    /work/venvs/moe-llmc/bin/python testdata/smoothquant/make_moe_goldens.py   # repo root, CPU, ~1 min
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402  (installs the capture hooks on SmoothQuantModifier)

import compressed_tensors  # noqa: E402
import llmcompressor  # noqa: E402
from llmcompressor import oneshot  # noqa: E402
from llmcompressor.modifiers.quantization import QuantizationModifier  # noqa: E402
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier  # noqa: E402

ROOT = mg.ROOT
MODELS = ["mixtral", "qwen3_moe", "qwen2_moe"]
ALPHA = 0.8
MAX_FILE_BYTES = 100 * 1024


def run(name):
    for v in mg.CAPTURE.values():
        v.clear()
    fwd = os.path.join(ROOT, "testdata/forward", name)
    stats_ref = json.load(open(os.path.join(fwd, "stats.json")))
    tokens = stats_ref["tokens"]
    model = AutoModelForCausalLM.from_pretrained(fwd, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    orig = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tok = AutoTokenizer.from_pretrained(mg.TOKENIZER)

    # 1. SmoothQuant alone, default mappings.
    ds = Dataset.from_dict({"input_ids": tokens})
    oneshot(model=model, processor=tok, dataset=ds, recipe=[SmoothQuantModifier(smoothing_strength=ALPHA)],
            pipeline="basic", num_calibration_samples=len(tokens), batch_size=1, shuffle_calibration_samples=False)
    order = mg.CAPTURE["order"]
    L = model.config.num_hidden_layers
    assert order == [f"model.layers.{l}.input_layernorm" for l in range(L)], order
    mods = dict(model.named_modules())
    mappings = []
    for i, smooth in enumerate(order):
        layer = smooth.rsplit(".", 1)[0]
        balance = [f"{layer}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
        mappings.append(mg.captured_mapping(i, smooth, balance, ALPHA, orig, mods, stats_ref))
        mappings[-1]["smoothed_first_balance_weight_first4rows"] = mg.f32list(mods[balance[0]].weight)[:4]
    # Nothing else moved: the MoE side (norm, router; experts where still stored under their
    # original names -- llm-compressor may have replaced fused experts by per-expert Linears) is
    # exactly the original.
    after = model.state_dict()
    checked = 0
    for k, v in orig.items():
        if "input_layernorm" in k or any(p in k for p in ("q_proj", "k_proj", "v_proj")) or k not in after:
            continue
        assert torch.equal(after[k], v), k
        checked += "post_attention_layernorm" in k
    assert checked == L, checked

    # Sanity for 2.: the smoothed model's own max |q_proj input| (a forward hook, plain transformers).
    seen = {}
    hooks = [mods[f"model.layers.{l}.self_attn.q_proj"].register_forward_pre_hook(
        lambda m, a, n=f"model.layers.{l}.self_attn.q_proj": seen.__setitem__(
            n, max(seen.get(n, 0.0), float(a[0].abs().max())))) for l in range(L)]
    with torch.no_grad():
        for t in tokens:
            model(torch.tensor([t]))
    for h in hooks:
        h.remove()

    # 2. Static FP8 input scales of q/k/v on the smoothed model.
    recipe = QuantizationModifier(targets=["re:.*self_attn\\.[qkv]_proj$"], scheme="FP8")
    ds2 = Dataset.from_dict({"input_ids": tokens, "attention_mask": [[1] * len(t) for t in tokens]})
    oneshot(model=model, processor=tok, dataset=ds2, recipe=recipe, pipeline="basic",
            num_calibration_samples=len(tokens), max_seq_length=max(len(t) for t in tokens), batch_size=1,
            shuffle_calibration_samples=False)
    input_scale = {}
    for n, m in model.named_modules():
        if getattr(m, "input_scale", None) is not None:
            input_scale[n] = float(np.float32(m.input_scale.detach().float().item()))
    assert sorted(input_scale) == sorted(b for m in mappings for b in m["balance"]), sorted(input_scale)
    for n, s in input_scale.items():
        q = n.rsplit(".", 1)[0] + ".q_proj"
        want = float(np.float32(np.float32(seen[q]) / np.float32(448.0)))
        assert abs(s - want) <= 1e-6 * want, (n, s, want)

    doc = {"generator": "testdata/smoothquant/make_moe_goldens.py",
           "source": f"llmcompressor {llmcompressor.__version__} SmoothQuantModifier + QuantizationModifier(FP8), "
                     f"compressed-tensors {compressed_tensors.__version__}, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}",
           "pipeline": "basic", "alpha": ALPHA, "tokens": tokens, "architecture": model.config.architectures[0],
           "model": f"testdata/forward/{name}", "mappings": mappings, "input_scale": dict(sorted(input_scale.items()))}
    text = json.dumps(doc)
    assert len(text) <= MAX_FILE_BYTES, len(text)
    out = os.path.join(HERE, f"{name}_moe_a08.json")
    with open(out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {out} ({len(text)} bytes)")


def main():
    torch.manual_seed(0)
    for name in MODELS:
        run(name)


if __name__ == "__main__":
    sys.exit(main())
