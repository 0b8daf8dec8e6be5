"""qtool's nvfp4 (W4A4) checkpoint, read back by the real compressed-tensors.

`qtool tiny-model DIR`, `qtool quantize DIR -o OUT --scheme nvfp4` (built-in calibration text), then
  (a) the config validates as a compressed-tensors QuantizationConfig whose weights and
      input_activations are the NVFP4 preset's (input: FP4 tensor_group 16, dynamic "local",
      FP8 scale dtype);
  (b) every weight tensor equals, byte for byte, what compressed-tensors writes for DIR's weights
      (the nvfp4a16 path of testdata/fp4/make_goldens.py: the weights of NVFP4 and NVFP4A16 are
      the same), and compressed-tensors' dequantizer decompresses each exactly as its compressor does;
  (c) what the dequantizer leaves over is exactly one input_global_scale per quantized Linear,
      F32 [1], finite and > 0, equal within q/k/v and within gate/up (vLLM keeps one per fused
      layer). compressed-tensors 0.20.1's CompressedTensorsDequantizer.validate() refuses any W4A4
      NVFP4 checkpoint for that reason (input_global_scale is a "residual qparam" to it), also
      llm-compressor's own, so the test calls its process() and checks the rest itself.

Skipped when QTOOL_BINARY is unset, torch is missing or compressed-tensors is older than 0.20.1;
QTOOL_STRICT=1 turns qtool failures into test failures. Run in a venv with compressed-tensors 0.20.1:
    QTOOL_BINARY=build/tools/qtool /work/venvs/fp4-ct/bin/python -m pytest tests/python/test_nvfp4_clients.py -q
"""

from __future__ import annotations

import json
import math
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressed_tensors", minversion="0.20.1")

from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (  # noqa: E402
    CompressedTensorsDequantizer,
)
from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme  # noqa: E402

import qtool_support as qs  # noqa: E402

make_goldens = qs.load_module("fp4_make_goldens_nvfp4", qs.REPO / "testdata" / "fp4" / "make_goldens.py")

pytestmark = qs.needs_qtool
FUSED = [r"self_attn\.(q|k|v)_proj$", r"mlp\.(gate|up)_proj$"]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    base = tmp_path_factory.mktemp("nvfp4")
    src, out = base / "model", base / "out"
    for args in (("tiny-model", str(src)), ("quantize", str(src), "-o", str(out), "--scheme", "nvfp4")):
        proc = qs.run(*args, timeout=300)
        if proc.returncode != 0:
            qs.unavailable(args[0], proc)
    return src, out


def test_config_validates_with_the_nvfp4_presets_weights_and_activations(quantized):
    _, out = quantized
    qc = QuantizationConfig.model_validate(json.loads((out / "config.json").read_text())["quantization_config"])
    assert qc.format == "nvfp4-pack-quantized"
    preset = preset_name_to_scheme("NVFP4", ["Linear"])
    g = qc.config_groups["group_0"]
    for ours, theirs in ((g.weights, preset.weights), (g.input_activations, preset.input_activations)):
        for k in ("num_bits", "type", "strategy", "group_size", "symmetric", "dynamic", "scale_dtype"):
            assert getattr(ours, k) == getattr(theirs, k), k
    assert g.input_activations.observer == "static_minmax"


def test_weights_match_compressed_tensors_and_only_input_global_scales_remain(quantized):
    src, out = quantized
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    orig, got = qs.load_dir(src), qs.load_dir(out)
    names = [n for n, t in orig.items() if n.endswith("_proj.weight") and ".layers." in n and t.ndim == 2
             and n.removesuffix(".weight") not in cfg["ignore"]]
    assert names
    # (b) weight bytes: ct's own quantization of the same weights, fused sets together.
    want, done = {}, set()
    for n in names:
        if n in done:
            continue
        group = [n]
        for pat in FUSED:
            if re.search(pat, n.removesuffix(".weight")):
                parent = n.rsplit(".", 2)[0]
                group = [m for m in names if m.startswith(parent + ".") and re.search(pat, m.removesuffix(".weight"))]
        done.update(group)
        want.update(make_goldens.quantize_set(group, {m: orig[m] for m in group}, "nvfp4a16"))
    bad = [k for k, w in want.items()
           if k not in got or not torch.equal(got[k].contiguous().view(torch.uint8), w.contiguous().view(torch.uint8))]
    assert not bad, bad[:10]

    dq = CompressedTensorsDequantizer(str(out), dtype=torch.float32).process(dict(got))
    qc = QuantizationConfig.model_validate(cfg)
    compressor = BaseCompressor.get_value_from_registry(qc.format)
    for name in names:
        prefix = name.removesuffix("weight")
        local = {k[len(prefix):]: v for k, v in want.items() if k.startswith(prefix)}
        ref = compressor.decompress(local, qc.config_groups["group_0"])["weight"].to(torch.float32)
        assert torch.equal(dq[name], ref), f"{name} decompresses differently"

    # (c) the leftovers: one input_global_scale per quantized Linear, shared within fused sets.
    left = sorted(k for k in dq if k.rpartition(".")[2] in
                  ("input_global_scale", "input_scale", "weight_scale", "weight_global_scale", "weight_packed"))
    assert left == sorted(n.removesuffix("weight") + "input_global_scale" for n in names)
    for k in left:
        t = got[k]
        assert t.dtype == torch.float32 and list(t.shape) == [1], k
        assert math.isfinite(float(t)) and float(t) > 0, k
    for n in names:
        m = n.removesuffix(".weight")
        for pat in FUSED:
            if re.search(pat, m):
                parent = m.rsplit(".", 1)[0]
                sibs = [x for x in left if x.startswith(parent + ".") and re.search(pat, x.removesuffix(".input_global_scale"))]
                assert len({float(got[x]) for x in sibs}) == 1, sibs
