"""A SmoothQuant checkpoint (`qtool quantize --scheme int8-static --smoothquant`), checked by the
real clients:

  (a) every smoothed tensor equals what PyTorch computes from the original weights and the
      factors qtool recorded in qtool_smoothing.json (norm.weight / s, W * s per input column,
      up_proj rows / s, each f32 op rounded once to bf16 -- llm-compressor's arithmetic), and the
      quantized weights are byte for byte what compressed-tensors writes for those smoothed
      weights (the factors themselves are checked against llm-compressor's SmoothQuantModifier
      in tests/test_smoothquant.cpp, testdata/smoothquant/);
  (b) transformers loads the folder and its logits, with weights decompressed by compressed-
      tensors, track the original model's (smoothing is an identity up to rounding; INT8 weights
      add the rest).

Skips like test_ct_decompress.py (QTOOL_BINARY unset, packages missing); QTOOL_STRICT=1 turns a
failing qtool into a failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressed_tensors")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from compressed_tensors.utils import match_quantizable_tensors  # noqa: E402

import qtool_support as qs  # noqa: E402

sys.path.insert(0, str(qs.REPO / "testdata" / "ct_goldens"))
import make_goldens  # noqa: E402  (compressed-tensors' model-free path, one tensor at a time)

pytestmark = qs.needs_qtool


def _qtool(*args: str) -> None:
    qs.run_or_skip(*args, timeout=120)


@pytest.fixture(scope="module")
def smoothed(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sq")
    src, out = base / "model", base / "out"
    _qtool("tiny-model", str(src))
    _qtool("quantize", str(src), "-o", str(out), "--scheme", "int8-static", "--smoothquant",
           "--num-samples", "4", "--seq-len", "32")
    return src, out


def _torch_smoothed(orig: dict[str, torch.Tensor], side: dict) -> dict[str, torch.Tensor]:
    """The original tensors with the recorded factors applied in PyTorch, in mapping order."""
    w = {k: v.clone() for k, v in orig.items()}
    for m in side["mappings"]:
        s = torch.tensor(m["factors"], dtype=torch.float32)
        for b in m["balance"]:  # input columns times s, one f32 multiply, one rounding
            name = b + ".weight"
            w[name] = (w[name].float() * s.view(1, -1)).to(w[name].dtype)
        name = m["smooth"] + ".weight"
        div = s if w[name].dim() == 1 else s.view(-1, 1)
        w[name] = (w[name].float() / div).to(w[name].dtype)
    return w


def test_smoothed_tensors_equal_pytorchs_and_compressed_tensors_bytes(smoothed):
    src, out = smoothed
    side = json.loads((out / "qtool_smoothing.json").read_text())
    assert side["format"] == "qtool-smoothing-factors"
    assert len(side["mappings"]) == 6, [m["smooth"] for m in side["mappings"]]
    orig = load_file(src / "model.safetensors")
    got = load_file(out / "model.safetensors")
    want = _torch_smoothed(orig, side)

    qc = QuantizationConfig.model_validate(json.loads((out / "config.json").read_text())["quantization_config"])
    quantized = set()
    for group in qc.config_groups.values():
        for _, name in match_quantizable_tensors(want, qc.ignore, group.targets):
            quantized.add(name)
            group = group.model_copy(deep=True)
            group.format = None
            for k, t in make_goldens.quantize_tensor(name, want[name], group).items():
                if k.endswith("input_scale"):
                    continue
                assert k in got, f"{out}: {k} missing"
                assert torch.equal(got[k].view(torch.uint8), t.contiguous().view(torch.uint8)), \
                    f"{k}: differs from compressed-tensors applied to the PyTorch-smoothed weight"
    assert len(quantized) == 14
    for name in ["model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"]:
        assert torch.equal(got[name], want[name]), f"{name}: not norm / s as PyTorch computes it"
        assert not torch.equal(got[name], orig[name]), f"{name}: not smoothed at all"
    assert torch.equal(got["model.norm.weight"], orig["model.norm.weight"])


def test_transformers_runs_the_smoothed_checkpoint_close_to_the_original(smoothed):
    src, out = smoothed
    ids = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 40, 8, 6]])
    with torch.no_grad():
        ref = transformers.AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32)(input_ids=ids).logits
        q = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)(input_ids=ids).logits
    assert torch.isfinite(q).all()
    rel = float((q - ref).norm() / ref.norm())
    # INT8 weights and activations on a 2-layer model: a few percent. A wrong factor direction
    # (W / s instead of W * s) gives errors of order 1.
    assert rel < 0.1, f"logits differ from the original by {rel:.3g} (relative L2)"
