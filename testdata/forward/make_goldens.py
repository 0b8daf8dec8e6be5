#!/usr/bin/env python3
"""Goldens for calib/forward (tests/test_forward.cpp), made with the real transformers package.

For each of the four supported architectures this builds a tiny random-weight float32 model from
a config (no downloads), saves it with save_pretrained (safetensors) into testdata/forward/<name>/,
runs two fixed token sequences (12 and 7 tokens, one forward each, batch 1, no padding) with
attn_implementation="eager", and writes into the same folder:

  logits.bin      float32 little-endian, sample 0 [12, vocab] then sample 1 [7, vocab]
  stats.json      {"tokens": [[...], [...]], "vocab": V,
                   "input_absmax": {linear module name: max |input| over both samples},
                   "k_absmax": {attention module: max |K| after (k_norm and) RoPE},
                   "v_absmax": {attention module: max |V|}}

Linear inputs are captured with forward pre-hooks on every nn.Linear (lm_head included). Post-RoPE
K is captured by wrapping the modeling module's apply_rotary_pos_emb (the value handed to the
attention kernel); V with a forward hook on v_proj (its output is V before the head reshape).

It also writes rope_cases.json: for several rope configurations (the legacy `rope_scaling` key
with `type` or `rope_type`, and the v5 `rope_parameters` shape) the inverse frequencies and the
attention scaling that transformers' own rotary embedding module computes.

Run from the repository root:  python3 testdata/forward/make_goldens.py
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import golden_util as gu  # noqa: E402

TOKENS = [
    [1, 17, 42, 99, 5, 127, 64, 3, 88, 42, 42, 7],
    [2, 120, 0, 31, 77, 9, 56],
]

COMMON = dict(vocab_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              hidden_act="silu", max_position_embeddings=256, torch_dtype="float32")

MODELS = {
    # Llama: head_dim derived (48/4 = 12), llama3 rope scaling whose three frequency bands are all
    # hit (wavelengths 6.3, 29, 135 | 628 ... with L0=256: high, high, medium, low, low, low),
    # Llama biases on (attention_bias also gives o_proj a bias), untied lm_head.
    "llama": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=48,
                  intermediate_size=64, rms_norm_eps=1e-5, attention_bias=True, mlp_bias=True,
                  tie_word_embeddings=False, max_position_embeddings=1024,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
                  rope_theta=10000.0),
    # Mistral: sliding window 5 < 12 tokens, linear rope scaling given with the legacy "type" key.
    "mistral": dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=48,
                    intermediate_size=64, rms_norm_eps=1e-6, sliding_window=5,
                    tie_word_embeddings=False, rope_theta=10000.0,
                    rope_scaling={"type": "linear", "factor": 2.0}),
    # Qwen2: implied q/k/v biases, tied embeddings, yarn rope (factor 4 over an original 64).
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=48,
                  intermediate_size=64, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  rope_theta=1000000.0,
                  rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                "original_max_position_embeddings": 64}),
    # Qwen3: head_dim 16 != 32/4, per-head q_norm/k_norm, default rope (theta 1e6); Qwen-style
    # sliding window (use_sliding_window, layers >= max_window_layers=1 slide, window 70).
    "qwen3": dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=32,
                  head_dim=16, intermediate_size=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  rope_theta=1000000.0, use_sliding_window=True, sliding_window=70,
                  max_window_layers=1, max_position_embeddings=512),
}

# A 300-token sample for the Qwen3 model (pseudo-random ids, fixed seed); see make_model.
LONG_SAMPLE = {"qwen3": [int(x) for x in np.random.default_rng(7).integers(0, 128, 300)]}
LONG_TAIL = 8

# Models whose config.json is rewritten in the transformers-v4 layout after saving.
LEGACY_CONFIG = {"mistral": {"type": "linear", "factor": 2.0},
                 "qwen2": {"rope_type": "yarn", "factor": 4.0,
                           "original_max_position_embeddings": 64}}

MODELING = {"llama": modeling_llama, "mistral": modeling_mistral, "qwen2": modeling_qwen2,
            "qwen3": modeling_qwen3}


def randomize(model, seed):
    """Weights with O(1) activations: N(0,1/in) for Linears (the last dim is `in`, also for the
    fused [E, out, in] expert tensors of the MoE models), N(0,1) embeddings, norms 1+N(0,0.1)
    (so a norm weight that is ignored shows), biases N(0,0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p.shape[-1]))


def run_captured(model, modeling, token_lists):
    """Runs each token list (batch 1) and returns (logits per list, absmax statistics)."""
    input_absmax, k_absmax, v_absmax = {}, {}, {}
    current_attn = [None]

    def upd(d, key, t):
        m = float(t.detach().abs().max())
        d[key] = max(d.get(key, 0.0), m)

    hooks = []
    for mname, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, mname=mname: upd(input_absmax, mname, args[0])))
            if mname.endswith("self_attn.v_proj"):
                attn = mname[: -len(".v_proj")]
                hooks.append(mod.register_forward_hook(
                    lambda m, args, out, attn=attn: upd(v_absmax, attn, out)))
        if mname.endswith("self_attn"):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, mname=mname: current_attn.__setitem__(0, mname)))

    orig_rope = modeling.apply_rotary_pos_emb

    def rope_spy(q, k, cos, sin, *a, **kw):
        q2, k2 = orig_rope(q, k, cos, sin, *a, **kw)
        upd(k_absmax, current_attn[0], k2)
        return q2, k2

    modeling.apply_rotary_pos_emb = rope_spy
    logits = []
    try:
        with torch.no_grad():
            for toks in token_lists:
                out = model(torch.tensor([toks]), use_cache=False)
                logits.append(out.logits[0].float().numpy())
    finally:
        modeling.apply_rotary_pos_emb = orig_rope
        for h in hooks:
            h.remove()
    return logits, {"input_absmax": input_absmax, "k_absmax": k_absmax, "v_absmax": v_absmax}


def without_window(out_dir, tokens):
    """Logits of `tokens` from the saved model reloaded with its sliding window switched off."""
    cfg = AutoConfig.from_pretrained(out_dir)
    cfg.sliding_window = None
    if hasattr(cfg, "use_sliding_window"):
        cfg.use_sliding_window = False
        cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers
    model = AutoModelForCausalLM.from_pretrained(out_dir, config=cfg, attn_implementation="eager",
                                                 dtype=torch.float32)
    model.eval()
    assert all(t == "full_attention" for t in getattr(model.config, "layer_types", None) or [])
    with torch.no_grad():
        return model(torch.tensor([tokens]), use_cache=False).logits[0].numpy()


def save_random_model(name, cfg_dict, common, seed):
    """A tiny model from the config common + cfg_dict with randomize(seed) weights, saved with
    save_pretrained (safetensors) into HERE/<name>; returns (that folder, the config)."""
    out_dir = os.path.join(HERE, name)
    os.makedirs(out_dir, exist_ok=True)
    cfg = AutoConfig.for_model(**{k: v for k, v in {**common, **cfg_dict}.items()
                                  if k != "architectures"})
    cfg.architectures = cfg_dict["architectures"]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager",
                                             dtype=torch.float32)
    randomize(model, seed)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir, cfg


def edit_config(out_dir, edit):
    """Rewrites out_dir/config.json after edit(the parsed dict) (sorted keys, indent 2)."""
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        cj = json.load(f)
    edit(cj)
    gu.write_json(path, cj, indent=2, sort_keys=True)


def reload(out_dir):
    """The saved model, read back (eager attention, float32), in eval mode."""
    model = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager",
                                                 dtype=torch.float32)
    model.eval()
    return model


def write_goldens(out_dir, logits, stats):
    """logits.bin (the samples' logits one after the other, f32 LE) and stats.json; returns the
    folder's size, which must stay under 200 KB."""
    np.concatenate(logits, axis=0).astype("<f4").tofile(os.path.join(out_dir, "logits.bin"))
    gu.write_json(os.path.join(out_dir, "stats.json"), stats, indent=1, sort_keys=True)
    size = sum(os.path.getsize(os.path.join(out_dir, x)) for x in os.listdir(out_dir))
    assert size <= 200 * 1024, f"{os.path.basename(out_dir)} goldens exceed 200 KB"
    return size


def make_model(name, cfg_dict, seed):
    out_dir, cfg = save_random_model(name, cfg_dict, COMMON, seed)
    if name in LEGACY_CONFIG:
        # Rewrite config.json the way transformers v4 wrote it (rope_theta at the top level,
        # `rope_scaling` instead of v5's `rope_parameters`), as older hub checkpoints have it.
        def legacy(cj):
            rp = cj.pop("rope_parameters")
            cj["rope_theta"] = rp.pop("rope_theta")
            cj["rope_scaling"] = LEGACY_CONFIG[name]
        edit_config(out_dir, legacy)

    # Reload from disk so the goldens come from exactly the saved checkpoint and config.json.
    model = reload(out_dir)

    logits, stats = run_captured(model, MODELING[name], TOKENS)

    if name == "mistral":
        # The sliding window must matter for these inputs, or the test would not test it.
        assert np.abs(without_window(out_dir, TOKENS[0]) - logits[0]).max() > 1e-2, \
            "sliding window has no effect"
    if name in LONG_SAMPLE:
        # One long sequence that crosses qtool's tiling boundaries (64-query attention blocks,
        # 256-token GEMM row blocks) with a window reaching across blocks. Only the last
        # LONG_TAIL rows of its logits are kept (size).
        long_tokens = LONG_SAMPLE[name]
        long_logits, long_stats = run_captured(model, MODELING[name], [long_tokens])
        assert np.abs(without_window(out_dir, long_tokens) - long_logits[0]).max() > 1e-2, \
            "sliding window has no effect on the long sample"
        long_logits[0][-LONG_TAIL:].astype("<f4").tofile(os.path.join(out_dir, "long_logits_tail.bin"))
        long_stats.update(tokens=long_tokens, tail=LONG_TAIL, vocab=cfg.vocab_size)
        gu.write_json(os.path.join(out_dir, "long.json"), long_stats, indent=1, sort_keys=True)

    stats.update(tokens=TOKENS, vocab=cfg.vocab_size)
    size = write_goldens(out_dir, logits, stats)
    print(f"{name}: {size} bytes")


# RoPE configurations: (name, config.json dict). head_dim comes from hidden/heads or head_dim.
ROPE_CASES = [
    ("default_theta_1e4", dict(model_type="llama", hidden_size=64, num_attention_heads=4,
                               rope_theta=10000.0)),
    # Llama-3.1-8B's real parameters (theta 500000, D 128).
    ("llama3_8b", dict(model_type="llama", hidden_size=4096, num_attention_heads=32,
                       max_position_embeddings=131072, rope_theta=500000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192})),
    ("linear_legacy_type", dict(model_type="llama", hidden_size=64, num_attention_heads=2,
                                rope_theta=10000.0, rope_scaling={"type": "linear", "factor": 4.0})),
    # Qwen2.5 long-context recipe: yarn factor 4 over 32768, D 128, theta 1e6.
    ("yarn_qwen25", dict(model_type="qwen2", hidden_size=3584, num_attention_heads=28,
                         max_position_embeddings=131072, rope_theta=1000000.0,
                         rope_scaling={"type": "yarn", "factor": 4.0,
                                       "original_max_position_embeddings": 32768})),
    # yarn without truncation and with mscale / mscale_all_dim (DeepSeek style attention factor).
    ("yarn_mscale_notrunc", dict(model_type="llama", hidden_size=512, num_attention_heads=8,
                                 max_position_embeddings=16384, rope_theta=10000.0,
                                 rope_scaling={"rope_type": "yarn", "factor": 40.0,
                                               "original_max_position_embeddings": 4096,
                                               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                                               "mscale_all_dim": 0.707, "truncate": False})),
    # yarn with an explicit attention_factor; original_max_position_embeddings absent ->
    # max_position_embeddings.
    ("yarn_attention_factor", dict(model_type="mistral", hidden_size=256, num_attention_heads=4,
                                   max_position_embeddings=8192, rope_theta=10000.0,
                                   rope_scaling={"rope_type": "yarn", "factor": 2.0,
                                                 "attention_factor": 1.25})),
    # transformers v5 shape: rope_parameters carries rope_theta.
    ("v5_rope_parameters_yarn", dict(model_type="qwen3", hidden_size=1024, num_attention_heads=16,
                                     head_dim=128, max_position_embeddings=40960,
                                     rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0,
                                                      "factor": 4.0,
                                                      "original_max_position_embeddings": 32768})),
    ("v5_rope_parameters_default", dict(model_type="qwen3", hidden_size=1024,
                                        num_attention_heads=16, head_dim=128,
                                        rope_parameters={"rope_type": "default",
                                                         "rope_theta": 1000000.0})),
]

ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
        "qwen3": "Qwen3ForCausalLM"}


def rope_cases():
    cases = []
    for name, d in ROPE_CASES:
        d = dict(d)
        d.setdefault("num_key_value_heads", d["num_attention_heads"])
        d.update(intermediate_size=64, num_hidden_layers=1, vocab_size=32)
        d.setdefault("max_position_embeddings", 4096)
        cfg = AutoConfig.for_model(**d)
        rot = {"llama": modeling_llama.LlamaRotaryEmbedding,
               "mistral": modeling_mistral.MistralRotaryEmbedding,
               "qwen2": modeling_qwen2.Qwen2RotaryEmbedding,
               "qwen3": modeling_qwen3.Qwen3RotaryEmbedding}[d["model_type"]](cfg)
        config_json = dict(d)
        config_json["architectures"] = [ARCH[d["model_type"]]]
        cases.append({"name": name, "config": config_json,
                      "inv_freq": [float(x) for x in rot.inv_freq.float().numpy()],
                      "attention_scaling": float(rot.attention_scaling)})
    gu.write_json(os.path.join(HERE, "rope_cases.json"), {"cases": cases}, indent=1)


def start():
    """One torch thread; the versions on stdout."""
    torch.set_num_threads(1)
    print(f"python {sys.version.split()[0]} torch {torch.__version__} "
          f"transformers {transformers.__version__} numpy {np.__version__}")


def main():
    start()
    for i, (name, cfg) in enumerate(MODELS.items()):
        make_model(name, cfg, seed=1000 + i)
    rope_cases()


if __name__ == "__main__":
    main()
