"""Mixture-of-experts checkpoints made by qtool, checked by the real clients:

  (a) `qtool tiny-model --arch mixtral|qwen3_moe|qwen2_moe` writes a folder transformers loads as
      MixtralForCausalLM / Qwen3MoeForCausalLM / Qwen2MoeForCausalLM, every tensor consumed;
  (b) `qtool quantize --scheme fp8-static --kv-cache fp8` on it (calibrated, policy all) writes a
      compressed-tensors checkpoint that transformers loads through compressed-tensors and runs:
      finite logits that track the unquantized model's; routers and shared_expert_gate in the
      ignore list; every expert projection has a weight scale and a positive finite input scale,
      and within a layer all experts share the w13 (gate/up) and the w2 (down) input scale, the
      maximum over the experts, as vLLM's fused-MoE kernels use them.

Skips like the other client tests (QTOOL_BINARY unset, packages missing); QTOOL_STRICT=1 turns a
failing qtool into a failure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressed_tensors")
transformers = pytest.importorskip("transformers")

import qtool_support as qs  # noqa: E402

pytestmark = qs.needs_qtool

ARCHS = {"mixtral": "MixtralForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
         "qwen2_moe": "Qwen2MoeForCausalLM"}
TOKENS = [[1, 17, 42, 99, 5, 127, 64, 3, 88, 42, 42, 7, 200, 31, 77, 9]]


def _qtool(*args: str) -> str:
    proc = qs.run_or_skip(*args, timeout=300)
    return proc.stdout + proc.stderr


def _load(folder: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                              attn_implementation="eager")
    model.eval()
    return model


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(TOKENS), use_cache=False).logits[0].float()


@pytest.fixture(scope="module", params=list(ARCHS))
def quantized(request, tmp_path_factory) -> tuple[str, Path, Path, str]:
    arch = request.param
    base = tmp_path_factory.mktemp(arch)
    src, out = base / "model", base / "out"
    _qtool("tiny-model", str(src), "--arch", arch, "--layers", "2")
    log = _qtool("quantize", str(src), "-o", str(out), "--scheme", "fp8-static", "--kv-cache", "fp8",
                 "--num-samples", "8", "--seq-len", "64")
    return arch, src, out, log


def test_tiny_moe_model_loads_in_transformers_with_every_tensor_used(quantized):
    arch, src, _, _ = quantized
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        str(src), dtype=torch.float32, output_loading_info=True)
    assert type(model).__name__ == ARCHS[arch]
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.isfinite(_logits(model)).all()


def test_quantized_moe_checkpoint_runs_in_transformers_and_tracks_the_original(quantized):
    _, src, out, _ = quantized
    ref, q = _logits(_load(src)), _logits(_load(out))
    assert torch.isfinite(q).all()
    cos = torch.nn.functional.cosine_similarity(ref, q, dim=-1)
    assert float(cos.min()) > 0.98, cos
    assert float((ref.argmax(-1) == q.argmax(-1)).float().mean()) >= 0.75


def test_routers_are_ignored_and_experts_share_the_layer_maximum_input_scale(quantized):
    arch, _, out, log = quantized
    cfg = json.loads((out / "config.json").read_text())
    ignore = set(cfg["quantization_config"]["ignore"])
    block = "block_sparse_moe" if arch == "mixtral" else "mlp"
    for l in range(2):
        assert f"model.layers.{l}.{block}.gate" in ignore
        if arch == "qwen2_moe":
            assert f"model.layers.{l}.mlp.shared_expert_gate" in ignore
    tensors = qs.load_dir(out)
    w13, w2 = ("w1", "w3"), ("w2",)
    if arch != "mixtral":
        w13, w2 = ("gate_proj", "up_proj"), ("down_proj",)
    for l in range(2):
        for group in (w13, w2):
            scales = []
            for e in range(8):
                for p in group:
                    m = f"model.layers.{l}.{block}.experts.{e}.{p}"
                    assert tensors[m + ".weight"].dtype == torch.float8_e4m3fn, m
                    assert m + ".weight_scale" in tensors, m
                    s = float(tensors[m + ".input_scale"].float())
                    assert math.isfinite(s) and s > 0, m
                    scales.append(s)
            assert len(set(scales)) == 1, (l, group, scales)
    assert "moe: policy all" in log
    manifest = json.loads((out / "qtool_manifest.json").read_text())
    layers = manifest["moe"]["layers"]
    assert sorted(layers) == [f"model.layers.{l}.{block}" for l in range(2)]
    for v in layers.values():
        assert len(v["routed_tokens"]) == 8 and sum(v["routed_tokens"]) > 0


@pytest.mark.parametrize("arch", list(ARCHS))
def test_moe_norm_smoothing_factors_leave_transformers_logits_unchanged(arch, tmp_path):
    """(c) `--smoothquant --smoothquant-moe-norm` (mappings all): qtool_smoothing.json applied to
    the ORIGINAL f32 checkpoint's tensors here (norm and up_proj rows divided by s, every balance
    Linear's input columns multiplied by s), saved, and loaded by transformers (which fuses the
    experts itself): its logits equal the original model's within f32 rounding. A consumer of a
    smoothed norm missing from qtool's mapping (router, shared_expert_gate, an expert) would move
    them far beyond that."""
    from safetensors.torch import save_file

    src, out, smoothed = tmp_path / "model", tmp_path / "out", tmp_path / "smoothed"
    _qtool("tiny-model", str(src), "--arch", arch, "--layers", "2", "--dtype", "f32")
    _qtool("quantize", str(src), "-o", str(out), "--scheme", "fp8-dynamic", "--smoothquant",
           "--smoothquant-moe-norm", "--num-samples", "4", "--seq-len", "48")
    factors = json.loads((out / "qtool_smoothing.json").read_text())
    assert factors["moe_norm"] is True
    tensors = qs.load_dir(src)
    moe_norms = 0
    for m in factors["mappings"]:
        s = torch.tensor(m["factors"], dtype=torch.float32)
        for b in m["balance"]:
            tensors[b + ".weight"] = tensors[b + ".weight"] * s.view(1, -1)
        w = tensors[m["smooth"] + ".weight"]
        tensors[m["smooth"] + ".weight"] = w / s if w.dim() == 1 else w / s.view(-1, 1)
        moe_norms += m["smooth"].endswith("post_attention_layernorm") and any(b.endswith(".gate") for b in m["balance"])
    assert moe_norms == 2
    smoothed.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (smoothed / f.name).write_bytes(f.read_bytes())
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(smoothed / "model.safetensors"),
              metadata={"format": "pt"})
    ref, sm = _logits(_load(src)), _logits(_load(smoothed))
    rel = float((ref - sm).abs().max() / ref.abs().max())
    assert rel < 1e-5, rel
