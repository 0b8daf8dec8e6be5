"""qtool's NVFP4 / MXFP4 / MXFP8 checkpoints, read back by the real compressed-tensors.

For each of nvfp4a16, mxfp4a16, mxfp8: `qtool tiny-model DIR`, `qtool quantize DIR -o OUT --scheme S`,
then
  (a) every stored weight tensor equals, byte for byte, what compressed-tensors writes for DIR's
      weights on llm-compressor's model-free path (testdata/fp4/make_goldens.py, with the fused
      q/k/v and gate/up sets sharing NVFP4's global scale);
  (b) compressed-tensors' own decompressor (CompressedTensorsDequantizer) accepts OUT, leaves no
      orphan parameter, and gives exactly what its compressor's decompress() gives for those
      tensors, close to the original weights;
  (c) the config validates as a compressed-tensors QuantizationConfig with the preset's args.

Skipped when QTOOL_BINARY is unset, torch is missing or compressed-tensors is older than 0.20.1
(the version the goldens were made with); QTOOL_STRICT=1 turns qtool failures into test failures.
Run in a venv with compressed-tensors 0.20.1 (e.g. /work/venvs/fp4-ct):
    QTOOL_BINARY=build/tools/qtool python -m pytest tests/python/test_fp4_decompress.py -q
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
# The goldens' version (testdata/fp4/README.md); the MX / NVFP4 code paths moved between releases.
pytest.importorskip("compressed_tensors", minversion="0.20.1")

from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (  # noqa: E402
    CompressedTensorsDequantizer,
)
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402

import qtool_support as qs  # noqa: E402

make_goldens = qs.load_module("fp4_make_goldens", qs.REPO / "testdata" / "fp4" / "make_goldens.py")

pytestmark = qs.needs_qtool

# qtool scheme -> weight args the config must carry
SCHEMES = {
    "nvfp4a16": dict(num_bits=4, type="float", strategy="tensor_group", group_size=16),
    "mxfp4a16": dict(num_bits=4, type="float", strategy="group", group_size=32),
    "mxfp4": dict(num_bits=4, type="float", strategy="group", group_size=32),  # + dynamic MXFP4 activations
    "mxfp8": dict(num_bits=8, type="float", strategy="group", group_size=32),
}
FUSED = [r"self_attn\.(q|k|v)_proj\.weight$", r"mlp\.(gate|up)_proj\.weight$"]


def _run(*args: str):
    return qs.run(*args, timeout=120)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny") / "model"
    proc = _run("tiny-model", str(d))
    if proc.returncode != 0:
        qs.unavailable("tiny-model", proc)
    return d


@pytest.fixture(scope="module", params=list(SCHEMES))
def quantized(request, tiny_model, tmp_path_factory):
    scheme = request.param
    out = tmp_path_factory.mktemp(f"q-{scheme}") / "out"
    proc = _run("quantize", str(tiny_model), "-o", str(out), "--scheme", scheme)
    if proc.returncode != 0:
        qs.unavailable(f"quantize --scheme {scheme}", proc)
    return scheme, tiny_model, out


def _targets(orig: dict[str, torch.Tensor], ignore: list[str]) -> list[str]:
    """The decoder-layer Linear weights qtool quantizes by default."""
    return [n for n, t in orig.items()
            if n.endswith("_proj.weight") and ".layers." in n and t.ndim == 2
            and n.removesuffix(".weight") not in ignore]


def _expected(orig, names, scheme):
    """Golden tensors for every target, fused sets quantized together (shared NVFP4 global scale)."""
    inputs = {n: orig[n] for n in names}
    want = {}
    done = set()
    for n in names:
        if n in done:
            continue
        group = [n]
        for pat in FUSED:
            if re.search(pat, n):
                parent = n.rsplit(".", 2)[0]
                group = [m for m in names if m.startswith(parent + ".") and re.search(pat, m)]
        done.update(group)
        want.update(make_goldens.quantize_set(group, inputs, scheme))
    return want


def test_config_validates_as_the_preset(quantized):
    scheme, _, out = quantized
    qc = QuantizationConfig.model_validate(json.loads((out / "config.json").read_text())["quantization_config"])
    assert qc.format == make_goldens.SCHEMES[scheme][1]
    w = qc.config_groups["group_0"].weights
    got = {k: getattr(w, k) for k in SCHEMES[scheme]}
    got = {k: (v.value if hasattr(v, "value") else v) for k, v in got.items()}
    assert got == SCHEMES[scheme]
    preset = make_goldens.scheme_for(scheme)
    assert w.scale_dtype == preset.weights.scale_dtype


def test_bytes_and_decompression_match_compressed_tensors(quantized):
    scheme, src, out = quantized
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    orig, got = qs.load_dir(src), qs.load_dir(out)
    names = _targets(orig, cfg["ignore"])
    assert names
    want = _expected(orig, names, scheme)
    problems = []
    for k, w in want.items():
        g = got.get(k)
        if g is None:
            problems.append(f"{k}: missing")
        elif g.dtype != w.dtype or tuple(g.shape) != tuple(w.shape):
            problems.append(f"{k}: {g.dtype}{list(g.shape)}, expected {w.dtype}{list(w.shape)}")
        elif not torch.equal(g.contiguous().view(torch.uint8), w.contiguous().view(torch.uint8)):
            problems.append(f"{k}: bytes differ from compressed-tensors")
    assert not problems, "\n".join(problems[:20])

    dq = CompressedTensorsDequantizer(str(out), dtype=torch.float32).validate(got)
    qc = QuantizationConfig.model_validate(cfg)
    ct_scheme = qc.config_groups["group_0"]
    compressor = BaseCompressor.get_value_from_registry(qc.format)
    for name in names:
        prefix = name.removesuffix("weight")
        local = {k[len(prefix):]: v for k, v in want.items() if k.startswith(prefix)}
        ref = compressor.decompress(local, ct_scheme)["weight"].to(torch.float32)
        assert torch.equal(dq[name], ref), f"{name} decompresses differently"
        w = orig[name].to(torch.float32)
        rel = float((dq[name] - w).norm() / w.norm())
        assert rel < (0.25 if "fp4" in scheme else 0.08), f"{name}: relative error {rel:.3g}"


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
def test_qtool_dequantize_equals_the_compressed_tensors_dequantizer(quantized, tmp_path, dtype):
    """`qtool convert --dequantize --dtype D` on qtool's own output gives, for every quantized
    weight, byte for byte what CompressedTensorsDequantizer(OUT, dtype=D) gives (it decompresses to
    bfloat16 and casts to D: formats/FORMATS.md §3.6)."""
    scheme, _, out = quantized
    torch_dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dtype]
    deq = tmp_path / "deq"
    proc = _run("convert", str(out), "-o", str(deq), "--dequantize", "--dtype", dtype, "--no-hash")
    if proc.returncode != 0:
        qs.unavailable(f"convert --dequantize --dtype {dtype}", proc)
    got = qs.load_dir(deq)
    stored = qs.load_dir(out)
    ref = CompressedTensorsDequantizer(str(out), dtype=torch_dtype).process(dict(stored))
    weights = [n for n in stored if n.endswith((".weight_packed", ".weight_scale"))]
    modules = sorted({n.rsplit(".", 1)[0] for n in weights})
    assert modules
    for m in modules:
        name = m + ".weight"
        assert name in got and name in ref, name
        assert got[name].dtype == torch_dtype, f"{name}: {got[name].dtype}"
        assert torch.equal(got[name].view(torch.uint8), ref[name].contiguous().view(torch.uint8)), \
            f"{name}: qtool's {dtype} dequantization differs from compressed-tensors'"
    assert not any(n.endswith(("_scale", "_global_scale", "weight_packed")) for n in got), sorted(got)
