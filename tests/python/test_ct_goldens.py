"""The compressed-tensors goldens in testdata/ct_goldens, checked three ways:

1. (numpy only) every golden equals an independent re-statement of the rule in
   libquant/NUMERICS.md §3.1 (testdata/ct_goldens/spec_emulation.py), byte for byte;
2. (needs compressed-tensors) regenerating them with make_goldens.py gives the same bytes;
3. (needs compressed-tensors) the hand vectors of libquant/NUMERICS.md §8 (P1, P2, C1, B1,
   D1-D4, Z1) come out of the real compressed-tensors code as written there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDENS = REPO / "testdata" / "ct_goldens"
sys.path.insert(0, str(GOLDENS))
import spec_emulation  # noqa: E402


@pytest.mark.parametrize("dtype_dir", spec_emulation.DTYPE_DIRS)
def test_goldens_equal_the_documented_rule(dtype_dir):
    problems = spec_emulation.compare_dir(dtype_dir)
    assert not problems, "\n".join(problems)


def test_spec_emulation_detects_a_single_rounding_quantizer():
    # The comparison above must be able to fail: quantizing without the model-dtype rounding of
    # w/scale changes some bf16 codes (libquant/NUMERICS.md §3.4).
    inputs = spec_emulation.read_safetensors(GOLDENS / "bf16" / "input.safetensors")
    dt, raw = inputs["a.weight"]
    a, _ = spec_emulation.quantize(dt, raw, "int8-dynamic")
    b, _ = spec_emulation.quantize(dt, raw, "int8-dynamic", single_rounding=True)
    assert np.sum(a != b) > 0


def test_e4m3fn_emulation_matches_hand_table():
    x = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 0.1, 100.0, 448.0, -448.0, 464.0,
                  2.0**-6, 2.0**-9, -(2.0**-9), 2.0**-10, 1.5 * 2.0**-10, 3 * 2.0**-10,
                  2.0**-11, 1.0625, 1.1875], dtype=np.float32)
    want = [0x00, 0x80, 0x38, 0xB8, 0x30, 0x44, 0x1D, 0x6C, 0x7E, 0xFE, 0x7E,
            0x08, 0x01, 0x81, 0x00, 0x01, 0x02, 0x00, 0x38, 0x3A]
    assert spec_emulation.e4m3fn_from_f32(x).tolist() == want


# ------------------------------------------------------------------ real compressed-tensors

@pytest.fixture(scope="module")
def ct():
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    import make_goldens
    return torch, make_goldens


def test_regenerating_the_goldens_gives_identical_bytes(ct):
    torch, mg = ct
    import compressed_tensors
    files, _ = mg.build_all()
    differ = [f"{d}/{f}" for d, entries in files.items() for f, blob in entries.items()
              if (GOLDENS / d / f).read_bytes() != blob]
    assert not differ, (
        f"compressed-tensors {compressed_tensors.__version__} / torch {torch.__version__} "
        f"produce different bytes than the committed goldens (made with the versions in "
        f"testdata/ct_goldens/README.md): {differ}")


def _run(ct, w, dtype=None, **wargs):
    """One weight through the model-free path -> (scale bits list, codes list)."""
    torch, mg = ct
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    dtype = dtype or torch.bfloat16
    inputs = QuantizationArgs(num_bits=8, type=wargs["type"], strategy="token", dynamic=True)
    scheme = QuantizationScheme(targets=["Linear"], input_activations=inputs,
                                weights=QuantizationArgs(symmetric=True, dynamic=False, **wargs))
    out = mg.quantize_tensor("x.weight", torch.tensor(w, dtype=torch.float32).to(dtype), scheme)
    s, q = out["x.weight_scale"], out["x.weight"]
    ibits = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
    mask = 0xFFFF if s.element_size() == 2 else 0xFFFFFFFF
    sbits = [v & mask for v in s.view(ibits[s.dtype]).flatten().tolist()]
    codes = (q.view(torch.uint8) if q.dtype == torch.float8_e4m3fn else q).tolist()
    return sbits, codes, list(s.shape)


FP8_T = dict(num_bits=8, type="float", strategy="tensor")
FP8_C = dict(num_bits=8, type="float", strategy="channel")
INT8_T = dict(num_bits=8, type="int", strategy="tensor")
INT8_C = dict(num_bits=8, type="int", strategy="channel")


def test_hand_vector_P1_per_tensor_fp8(ct):
    s, q, _ = _run(ct, [[-3.5, 1.0, 0.25, 2.0, -0.001, 0.0, 3.0, -1.1]], **FP8_T)
    assert s == [0x3C00]
    assert q == [[0xFE, 0x70, 0x60, 0x78, 0xA0, 0x00, 0x7C, 0xF1]]


def test_hand_vector_P2_per_tensor_fp8_amax_one(ct):
    s, q, _ = _run(ct, [[1.0, -1.0, 0.5, 0.25, 0.1, 0.003]], **FP8_T)
    assert s == [0x3B12]
    assert q == [[0x7E, 0xFE, 0x76, 0x6E, 0x63, 0x3B]]


def test_hand_vector_C1_per_channel_int8_and_fp8(ct):
    w = [[0.5, -0.25, 0.125, 0.0625], [10.0, -3.0, 7.5, 1.0]]
    s, q, shape = _run(ct, w, **INT8_C)
    assert (s, shape) == ([0x3B81, 0x3DA1], [2, 1])
    assert q == [[127, -64, 32, 16], [127, -38, 96, 13]]
    s, q, _ = _run(ct, w, **FP8_C)
    assert s == [0x3A92, 0x3CB7]
    assert q == [[0x7E, 0xF6, 0x6E, 0x66], [0x7E, 0xF0, 0x7A, 0x63]]


def test_hand_vector_B1_block_fp8(ct):
    s, q, shape = _run(ct, [[1, 2, 0.5, 0.25], [-4, 0, 0.125, -0.5]], num_bits=8, type="float",
                       strategy="block", block_structure=[2, 2])
    assert (s, shape) == ([0x3C12, 0x3A92], [1, 2])
    assert q == [[0x6E, 0x76, 0x7E, 0x76], [0xFE, 0x00, 0x6E, 0xFE]]


def test_hand_vectors_D1_D2_int8_edges(ct):
    s, q, _ = _run(ct, [[-255, 255, 1, 3, 5, -5, 100, -0.5]], **INT8_T)
    assert s == [0x4000]  # 2.0
    assert q == [[-128, 127, 0, 2, 2, -2, 50, 0]]
    s, q, _ = _run(ct, [[1.0, -1.0, 0.5, 0.25, 0.1]], **INT8_T)
    assert s == [0x3C01]
    assert q == [[127, -127, 64, 32, 13]]


def test_hand_vectors_D3_D4_double_rounding(ct):
    torch, _ = ct
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize
    bf = torch.bfloat16
    a = QuantizationArgs(num_bits=8, type="int", strategy="tensor", symmetric=True)
    q = quantize(torch.tensor([[75.5]], dtype=bf), torch.tensor([0.75], dtype=bf), None, a,
                 dtype=torch.int8)
    assert q.tolist() == [[100]]  # a single f32 rounding would give 101
    a = QuantizationArgs(num_bits=8, type="float", strategy="tensor", symmetric=True)
    q = quantize(torch.tensor([[1.0]], dtype=bf), torch.tensor([0.84375], dtype=bf), None, a,
                 dtype=torch.float8_e4m3fn)
    assert q.view(torch.uint8).tolist() == [[0x3A]]  # a single f32 rounding would give 0x39


@pytest.mark.parametrize("dtype_name,bits", [("bfloat16", 0x3C00), ("float16", 0x1400),
                                             ("float32", 0x34000000)])
def test_hand_vector_Z1_zero_tensor_and_signed_zero(ct, dtype_name, bits):
    torch, _ = ct
    dtype = getattr(torch, dtype_name)
    w = [[0.0, 0.0], [-0.0, -0.0]]
    s, q, _ = _run(ct, w, dtype=dtype, **FP8_T)
    assert s == [bits]
    assert q == [[0x00, 0x00], [0x80, 0x80]]  # model-free path: no zero-point add, -0 stays 0x80
    s, q, _ = _run(ct, w, dtype=dtype, **INT8_T)
    assert s == [bits]
    assert q == [[0, 0], [0, 0]]
