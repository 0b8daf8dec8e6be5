#!/usr/bin/env python3
"""Goldens for the mixture-of-experts forward pass (tests/test_forward_moe.cpp), made with the real
transformers implementation.

For Mixtral, Qwen3-MoE and Qwen2-MoE this builds a tiny random-weight float32 model from a config
(no downloads), saves it with save_pretrained (safetensors: transformers writes the per-expert
tensor names `experts.N.w1/w2/w3` / `experts.N.{gate,up,down}_proj`), reloads it, runs the same two
token sequences as make_goldens.py (batch 1, no padding, attn_implementation="eager") and writes
into testdata/forward/<name>/:

  logits.bin  float32 little-endian, sample 0 [12, vocab] then sample 1 [7, vocab]
  stats.json  {"tokens", "vocab",
               "input_absmax":  every nn.Linear input (attention, dense MLPs, shared experts,
                                lm_head), max |x| over both samples,
               "k_absmax", "v_absmax": as make_goldens.py,
               "routed_tokens": {MoE block: tokens routed to each expert, both samples},
               "expert_all":    {expert Linear: max |input| when every token goes through every
                                 expert (llm-compressor's moe_calibrate_all_experts)},
               "expert_routed": {expert Linear: max |input| over the tokens routed to it only}}

The expert statistics come from a forward pre-hook on transformers' own experts module: it
receives the router's top-k choice and recomputes gate/up (and silu(gate) * up, the down_proj
input) from the module's own fused weights, for every token and for the routed ones.

Versions used: Python 3.11.7, torch 2.15.0 (CPU execution), transformers 5.23.0, numpy 2.4.6,
safetensors 0.8.0.

Run from the repository root:  python3 testdata/forward/make_moe_goldens.py
"""
import os
import sys

import torch

from transformers.models.mixtral import modeling_mixtral
from transformers.models.qwen2_moe import modeling_qwen2_moe
from transformers.models.qwen3_moe import modeling_qwen3_moe

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_goldens import (TOKENS, edit_config, reload, run_captured,  # noqa: E402
                          save_random_model, start, write_goldens)

COMMON = dict(vocab_size=128, num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
              max_position_embeddings=256, torch_dtype="float32", tie_word_embeddings=False)

MODELS = {
    # Mixtral: rope_theta and rms_norm_eps absent (class defaults 1e6 and 1e-5), 4 experts top-2,
    # always renormalised.
    "mixtral": dict(architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_size=32,
                    intermediate_size=24, num_hidden_layers=2, num_local_experts=4,
                    num_experts_per_tok=2),
    # Qwen3-MoE: head_dim 12 != 32/4, q/k norms, 6 experts top-3 WITHOUT renormalisation
    # (norm_topk_prob false, the class default), layer 1 dense (mlp_only_layers) with
    # intermediate_size 32.
    "qwen3_moe": dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_size=32,
                      head_dim=12, intermediate_size=32, moe_intermediate_size=12,
                      num_hidden_layers=3, num_experts=6, num_experts_per_tok=3,
                      norm_topk_prob=False, mlp_only_layers=[1], decoder_sparse_step=1,
                      rope_theta=1000000.0, rms_norm_eps=1e-6),
    # Qwen2-MoE: q/k/v biases, shared expert (40) with its sigmoid gate, 4 experts top-2
    # renormalised, decoder_sparse_step 2 (layer 0 dense, layer 1 sparse).
    "qwen2_moe": dict(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", hidden_size=32,
                      intermediate_size=64, moe_intermediate_size=24,
                      shared_expert_intermediate_size=40, num_hidden_layers=2, num_experts=4,
                      num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=2,
                      rms_norm_eps=1e-6),
}

MODELING = {"mixtral": modeling_mixtral, "qwen3_moe": modeling_qwen3_moe,
            "qwen2_moe": modeling_qwen2_moe}
EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2")}
DEFAULT_NAMES = ("gate_proj", "up_proj", "down_proj")


def expert_spies(model, name):
    """Pre-hooks on every experts module recording routed counts and both kinds of statistic."""
    gname, uname, dname = EXPERT_NAMES.get(name, DEFAULT_NAMES)
    counts, all_max, routed_max = {}, {}, {}

    def upd(d, key, t):
        if t.numel() == 0:
            return
        d[key] = max(d.get(key, 0.0), float(t.abs().max()))

    hooks = []
    for mname, mod in model.named_modules():
        if not mname.endswith(".experts") or not hasattr(mod, "gate_up_proj"):
            continue
        block = mname[: -len(".experts")]
        if name == "mixtral":  # transformers 5 calls it `mlp` in memory, `block_sparse_moe` on disk
            block = block[: -len(".mlp")] + ".block_sparse_moe"
            mname = block + ".experts"

        def hook(m, args, mname=mname, block=block):
            x, top_k_index = args[0], args[1]
            E = m.gate_up_proj.shape[0]
            c = counts.setdefault(block, [0] * E)
            for e in range(E):
                routed = (top_k_index == e).any(dim=-1)
                c[e] += int(routed.sum())
                gate, up = torch.nn.functional.linear(x, m.gate_up_proj[e]).chunk(2, dim=-1)
                inner = m.act_fn(gate) * up
                pre = f"{mname}.{e}."
                for key in (gname, uname):
                    upd(all_max, pre + key, x)
                    upd(routed_max, pre + key, x[routed])
                upd(all_max, pre + dname, inner)
                upd(routed_max, pre + dname, inner[routed])

        hooks.append(mod.register_forward_pre_hook(hook))
    return hooks, counts, all_max, routed_max


def make_model(name, cfg_dict, seed):
    out_dir, cfg = save_random_model(name, cfg_dict, COMMON, seed)
    if name == "mixtral":
        # Leave rope_theta and rms_norm_eps to the class defaults qtool must know.
        def class_defaults(cj):
            assert cj.pop("rms_norm_eps") == 1e-5
            rp = cj.pop("rope_parameters")
            assert rp == {"rope_theta": 1000000.0, "rope_type": "default"}, rp
        edit_config(out_dir, class_defaults)

    model = reload(out_dir)
    hooks, counts, all_max, routed_max = expert_spies(model, name)
    try:
        logits, stats = run_captured(model, MODELING[name], TOKENS)
    finally:
        for h in hooks:
            h.remove()
    # The router's own Linear (Qwen2-MoE's shared_expert_gate is an nn.Linear) stays in the
    # statistics as transformers saw it; qtool never observes routers (they are not quantized).
    stats.update(tokens=TOKENS, vocab=cfg.vocab_size, routed_tokens=counts, expert_all=all_max,
                 expert_routed=routed_max)
    size = write_goldens(out_dir, logits, stats)
    print(f"{name}: {size} bytes, routed {counts}")


def main():
    start()
    for i, (name, cfg) in enumerate(MODELS.items()):
        make_model(name, cfg, seed=2000 + i)


if __name__ == "__main__":
    main()
