#!/usr/bin/env python3
"""Static FP8 input scales of the tiny MoE models, written by the real llm-compressor package.

For testdata/forward/{mixtral,qwen3_moe,qwen2_moe} (float32, made by testdata/forward/
make_moe_goldens.py) this runs llm-compressor's `oneshot` with
`QuantizationModifier(targets="Linear", scheme="FP8", ignore=["lm_head", routers])` and
`moe_calibrate_all_experts=True`, calibrated on exactly the token sequences of
testdata/forward/<model>/stats.json (batch 1 each, no padding, attention eager, float32), and
writes testdata/moe_llmc/<model>.json: every quantized Linear's `input_scale` as llm-compressor
left it on the module (f32), plus the versions.

Pipeline "basic", not the default "sequential": in llm-compressor 0.14 + transformers 5.17 the
sequential pipeline runs the attention of Mixtral / Qwen3-MoE WITHOUT its causal mask (the
decoder layers receive attention_mask=None; see calib/MODELS.md section 10, "llm-compressor's
sequential pipeline"), so its o_proj (and every later) statistic is that of a bidirectional
model, which neither transformers nor vLLM runs. The basic pipeline runs the plain model forward.
The script records the sequential pipeline's o_proj scales too (`sequential_o_proj`), as
evidence for that section, and asserts
  * basic-pipeline scales == transformers' own max |input| / 448 (the `expert_all` and
    `input_absmax` of testdata/forward/<model>/stats.json, transformers 5.23) to 1e-6 relative,
    i.e. llm-compressor's static observer is the max over all tokens and every expert saw every
    token.

Needs llm-compressor in its own virtualenv (llmcompressor 0.14.0.1, compressed-tensors 0.19.0,
torch 2.14.0, transformers 5.17.0 in /work/venvs/moe-llmc):
    /work/venvs/moe-llmc/bin/python testdata/moe_llmc/make_goldens.py     # repo root, CPU, ~3 min
"""
import json
import os
import sys

import torch
import transformers
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import compressed_tensors
import llmcompressor
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier

HERE = os.path.dirname(os.path.abspath(__file__))
FORWARD = os.path.join(os.path.dirname(HERE), "forward")
MODELS = ["mixtral", "qwen3_moe", "qwen2_moe"]
# oneshot insists on a processor when given a dataset; the dataset is already tokenized, so it is
# never called. Any tokenizer will do: the shared Llama-2 one (as testdata/smoothquant does).
TOKENIZER = "/work/shared/tokenizers/llama2"
ROUTERS = ["re:.*block_sparse_moe.gate$", "re:.*mlp.gate$", "re:.*shared_expert_gate$"]


def checkpoint_name(model_name, module):
    """transformers 5 holds Mixtral's block as `mlp` and llm-compressor linearizes its experts as
    gate_proj/up_proj/down_proj; the checkpoint (and qtool, and vLLM) name them
    block_sparse_moe.experts.N.w1/w3/w2."""
    if model_name != "mixtral" or ".mlp." not in module:
        return module
    module = module.replace(".mlp.", ".block_sparse_moe.")
    for a, b in ((".gate_proj", ".w1"), (".up_proj", ".w3"), (".down_proj", ".w2")):
        if module.endswith(a):
            module = module[: -len(a)] + b
    return module


def calibrate(model_dir, tokens, pipeline):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    ds = Dataset.from_dict({"input_ids": tokens, "attention_mask": [[1] * len(t) for t in tokens]})
    recipe = QuantizationModifier(targets="Linear", scheme="FP8", ignore=["lm_head"] + ROUTERS)
    oneshot(model=model, processor=AutoTokenizer.from_pretrained(TOKENIZER), dataset=ds, recipe=recipe, num_calibration_samples=len(tokens),
            max_seq_length=max(len(t) for t in tokens), moe_calibrate_all_experts=True,
            pipeline=pipeline, batch_size=1, shuffle_calibration_samples=False)
    return {n: float(m.input_scale.detach().float().item())
            for n, m in model.named_modules() if hasattr(m, "input_scale") and m.input_scale is not None}


def main():
    torch.manual_seed(0)
    for name in MODELS:
        d = os.path.join(FORWARD, name)
        stats = json.load(open(os.path.join(d, "stats.json")))
        tokens = stats["tokens"]
        basic = {checkpoint_name(name, k): v for k, v in calibrate(d, tokens, "basic").items()}
        seq = {checkpoint_name(name, k): v for k, v in calibrate(d, tokens, "sequential").items()}
        # Sanity (never the source of the goldens): transformers' own maxima / 448.
        want = {k: v for k, v in stats["input_absmax"].items() if k != "lm_head" and "gate" not in k.split(".")[-1]
                or k.endswith("gate_proj")}
        want.update(stats["expert_all"])
        for mod, s in basic.items():
            ref = torch.tensor(want[mod], dtype=torch.float32) / 448.0
            assert abs(s - ref.item()) <= 1e-6 * ref.item(), (name, mod, s, ref.item())
        assert set(basic) == set(want), (name, sorted(set(want) ^ set(basic)))
        out = {
            "generator": "testdata/moe_llmc/make_goldens.py",
            "versions": {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                         "torch": torch.__version__, "transformers": transformers.__version__},
            "pipeline": "basic", "moe_calibrate_all_experts": True, "scheme": "FP8 (static per-tensor input)",
            "tokens": tokens,
            "input_scale": dict(sorted(basic.items())),
            "sequential_o_proj": {k: v for k, v in sorted(seq.items()) if k.endswith("o_proj")},
        }
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print(name, len(basic), "scales;", "o_proj basic vs sequential:",
              {k: (basic[k], seq[k]) for k in out["sequential_o_proj"]})


if __name__ == "__main__":
    sys.exit(main())
