#!/usr/bin/env python3
"""SmoothQuant goldens made by the real llm-compressor package (SmoothQuantModifier).

For the tiny float32 models in testdata/forward/{llama,qwen2} and alpha in {0.5, 0.8} this runs
llm-compressor's `oneshot` with a recipe that is only `SmoothQuantModifier(smoothing_strength=alpha)`
(default, inferred mappings), pipeline "basic" (every calibration forward runs on the UNSMOOTHED
model; smoothing is applied once, at the calibration epoch end), calibrated on exactly the two token
sequences of testdata/forward (batch 1 each, no padding, attention eager), and writes
testdata/smoothquant/<model>_a<alpha*10>.json.

Every number comes from llm-compressor itself:
  * channel_min / channel_max: a copy of `self.scales_[smooth_name].min_channel_vals /
    max_channel_vals`, taken when `SmoothQuantModifier._apply_smoothing` is entered (the statistics
    its own forward hooks accumulated);
  * scales: the result of the `torch.maximum(scales, torch.Tensor([1e-5]))` call inside
    `_apply_smoothing` (captured by giving the module a `torch` proxy whose `maximum` records its
    result); `_calculate_smoothing_scales` is also wrapped, to pair each result with its mapping;
  * smoothed_norm_weight / smoothed_first_balance_weight: read from the model after `oneshot`.
As sanity checks (never the source of the goldens) the script asserts that
  * max(|channel_min|, |channel_max|) equals the q_proj / gate_proj max |input| recorded by
    transformers 5.23 in testdata/forward/<model>/stats.json (so the venv's transformers reproduces
    the forward the other goldens were made with),
  * its own float32 re-derivation of the scales and smoothed weights agrees bit-exactly.

Needs llm-compressor installed in a separate virtualenv (see README.md):
    /work/venv-llmc/bin/python testdata/smoothquant/make_goldens.py     # from the repo root, CPU
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import llmcompressor
from llmcompressor import oneshot
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
from llmcompressor.modifiers.transform.smoothquant import base as sq_base

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

TOKENS = [
    [1, 17, 42, 99, 5, 127, 64, 3, 88, 42, 42, 7],
    [2, 120, 0, 31, 77, 9, 56],
]
MODELS = ["llama", "qwen2"]
ALPHAS = [0.5, 0.8]
PIPELINE = "basic"
MAX_FILE_BYTES = 100 * 1024
# oneshot insists on a processor when given a dataset; the dataset is already tokenized (it has
# input_ids), so llm-compressor never calls it. Any tokenizer will do: the shared Llama-2 one.
TOKENIZER = "/work/shared/tokenizers/llama2"

# ---- capture what llm-compressor computes ---------------------------------------------------
CAPTURE = {"stats": {}, "raw_scales": [], "floored_scales": []}


class _TorchProxy:
    """Stands in for the `torch` global of llmcompressor's smoothquant/base.py: records the result
    of every torch.maximum call and delegates everything else."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def maximum(*args, **kwargs):
        out = torch.maximum(*args, **kwargs)
        CAPTURE["floored_scales"].append(out.detach().clone())
        return out


_orig_apply = SmoothQuantModifier._apply_smoothing
_orig_calc = SmoothQuantModifier._calculate_smoothing_scales


def _apply_wrapper(self, model):
    # the calibration hooks also call torch.maximum (running per-channel max); only the calls made
    # inside _apply_smoothing (the 1e-5 floor, one per mapping) are the applied scales
    CAPTURE["floored_scales"].clear()
    for name, sc in self.scales_.items():
        CAPTURE["stats"][name] = (sc.min_channel_vals.detach().clone(),
                                  sc.max_channel_vals.detach().clone())
    CAPTURE["order"] = [m.smooth_name for m in self.resolved_mappings_ if m.smooth_name in self.scales_]
    return _orig_apply(self, model)


def _calc_wrapper(self, balance_layers, activation_scales):
    out = _orig_calc(self, balance_layers, activation_scales)
    CAPTURE["raw_scales"].append(out.detach().clone())
    return out


SmoothQuantModifier._apply_smoothing = _apply_wrapper
SmoothQuantModifier._calculate_smoothing_scales = _calc_wrapper
sq_base.torch = _TorchProxy()


# ---- helpers --------------------------------------------------------------------------------
def f32list(t):
    """float32 tensor -> nested list of Python floats equal to the float32 values (repr round-trips)."""
    a = t.detach().to(torch.float32).cpu().numpy()
    assert a.dtype == np.float32
    return [float(np.float32(x)) for x in a] if a.ndim == 1 else [f32list(torch.from_numpy(r)) for r in a]


def load(name):
    return AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, "testdata/forward", name),
                                                dtype=torch.float32, attn_implementation="eager")


def captured_mapping(i, smooth, balance, alpha, orig, mods, stats_ref):
    """The i-th mapping llm-compressor smoothed (norm `smooth`, layers `balance`), checked and as
    a golden entry: smooth, balance, channel_min / channel_max, scales, smoothed_norm_weight.
    orig: the state dict before oneshot; mods: the model's modules after it; stats_ref: the
    testdata/forward/<model>/stats.json the model's forward was recorded in."""
    cmin, cmax = CAPTURE["stats"][smooth]
    raw, scales = CAPTURE["raw_scales"][i], CAPTURE["floored_scales"][i]
    assert cmin.dtype == cmax.dtype == scales.dtype == torch.float32

    # Sanity 1: the statistics match the transformers-5.23 forward recorded in testdata/forward.
    absmax = float(torch.maximum(cmin.abs(), cmax.abs()).max())
    ref = stats_ref["input_absmax"][balance[0]]
    assert abs(absmax - ref) <= 1e-6 * ref, (smooth, absmax, ref)

    # Sanity 2: own float32 re-derivation agrees bit-exactly (not used for the goldens).
    act = cmax - cmin
    wt = 2.0 * torch.cat([orig[b + ".weight"].abs().max(dim=0, keepdim=True)[0] for b in balance]).max(dim=0)[0]
    mine = torch.where(wt > 0, act.pow(alpha) / wt.pow(1 - alpha), act)
    assert torch.equal(mine, raw), (smooth, (mine - raw).abs().max())
    assert torch.equal(torch.maximum(mine, torch.tensor([1e-5], dtype=torch.float32)), scales)
    assert torch.equal(mods[smooth].weight, orig[smooth + ".weight"] / scales)
    for b in balance:
        assert torch.equal(mods[b].weight, orig[b + ".weight"] * scales.view(1, -1))
        # biases of the balance layers are not touched by SmoothQuant
        if b + ".bias" in orig:
            assert torch.equal(mods[b].bias, orig[b + ".bias"])

    return {"smooth": smooth, "balance": balance,
            "channel_min": f32list(cmin), "channel_max": f32list(cmax),
            "scales": f32list(scales),
            "smoothed_norm_weight": f32list(mods[smooth].weight)}


def run(name, alpha):
    for v in CAPTURE.values():
        v.clear()
    model = load(name)
    model.eval()
    orig = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # Count the calibration batches the norms actually saw (both samples, once each, unpadded).
    seen = []
    h = model.model.layers[0].input_layernorm.register_forward_hook(
        lambda m, i, o: seen.append(tuple(o.shape)))
    ds = Dataset.from_dict({"input_ids": TOKENS})
    oneshot(model=model, processor=AutoTokenizer.from_pretrained(TOKENIZER), dataset=ds, recipe=[SmoothQuantModifier(smoothing_strength=alpha)],
            pipeline=PIPELINE, num_calibration_samples=len(TOKENS), batch_size=1,
            shuffle_calibration_samples=False)
    h.remove()
    assert sorted(seen) == sorted([(1, len(t), model.config.hidden_size) for t in TOKENS]), seen

    order = CAPTURE["order"]
    assert len(order) == len(CAPTURE["raw_scales"]) == len(CAPTURE["floored_scales"]) == \
        2 * model.config.num_hidden_layers, (order, len(CAPTURE["raw_scales"]))
    stats_ref = json.load(open(os.path.join(ROOT, "testdata/forward", name, "stats.json")))
    mods = dict(model.named_modules())
    mappings = []
    for i, smooth in enumerate(order):
        layer = smooth.rsplit(".", 1)[0]
        if smooth.endswith("input_layernorm"):
            balance = [f"{layer}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
        else:
            assert smooth.endswith("post_attention_layernorm"), smooth
            balance = [f"{layer}.mlp.{p}" for p in ("gate_proj", "up_proj")]
        mappings.append(captured_mapping(i, smooth, balance, alpha, orig, mods, stats_ref))
        mappings[-1]["smoothed_first_balance_weight"] = f32list(mods[balance[0]].weight)
        raw, scales = CAPTURE["raw_scales"][i], CAPTURE["floored_scales"][i]
        if not torch.equal(raw, scales):
            mappings[-1]["scales_before_floor"] = f32list(raw)

    doc = {"source": f"llmcompressor {llmcompressor.__version__} SmoothQuantModifier, "
                     f"torch {torch.__version__}, transformers {transformers.__version__}",
           "pipeline": PIPELINE, "alpha": alpha, "tokens": TOKENS,
           "model": f"testdata/forward/{name}", "mappings": mappings}
    text = json.dumps(doc)
    if len(text) > MAX_FILE_BYTES:
        for m in doc["mappings"]:
            m["smoothed_first_balance_weight_first4rows"] = m.pop("smoothed_first_balance_weight")[:4]
        text = json.dumps(doc)
    assert len(text) <= MAX_FILE_BYTES, len(text)
    out = os.path.join(HERE, f"{name}_a{round(alpha * 10):02d}.json")
    with open(out, "w") as f:
        f.write(text + "\n")
    # round-trip check: every value read back is exactly the float32 it was written from
    back = json.load(open(out))
    for m, orig_m in zip(back["mappings"], doc["mappings"]):
        for k, v in m.items():
            if k in ("smooth", "balance"):
                continue
            d = np.asarray(v, dtype=np.float64)
            assert np.array_equal(d, d.astype(np.float32).astype(np.float64)), k
            assert np.array_equal(d, np.asarray(orig_m[k], dtype=np.float64)), k
    print(f"wrote {out} ({len(text)} bytes)")


def main():
    torch.manual_seed(0)
    for name in MODELS:
        for alpha in ALPHAS:
            run(name, alpha)


if __name__ == "__main__":
    sys.exit(main())
