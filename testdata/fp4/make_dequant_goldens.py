#!/usr/bin/env python3
"""Golden dequantizations of the NVFP4 / MXFP4 / MXFP8 goldens by the real compressed-tensors.

Usage (from the repository root, in a venv with compressed-tensors 0.20.1 and torch, e.g.
/work/venvs/fp4-ct; run testdata/fp4/make_goldens.py first, this reads its outputs):
    python3 testdata/fp4/make_dequant_goldens.py            # (re)write the goldens
    python3 testdata/fp4/make_dequant_goldens.py --check    # regenerate in memory, compare bytes

Versions used for the committed files: compressed-tensors 0.20.1, torch 2.15.0 (PyPI wheel, run on
the CPU), safetensors 0.8.0, numpy 2.4.6, Python 3.11 (printed on stderr when run).

For each model dtype D in {bf16, fp16, fp32} and each scheme S in {nvfp4a16, nvfp4, mxfp4a16,
mxfp4, mxfp8}, the folder {config.json: {"quantization_config": <S>.config.json},
model.safetensors: D/<S>.safetensors} (the compressed tensors make_goldens.py wrote) is given to
compressed-tensors' model-free dequantizer, CompressedTensorsDequantizer(folder, dtype=O).process,
for every output dtype O in {bfloat16, float16, float32} -- what `qtool convert --dequantize
--dtype O` must reproduce. Written:
    testdata/fp4/D/<S>.dequant.safetensors   the bfloat16 result, every weight (S in nvfp4a16,
                                             mxfp4a16, mxfp8: nvfp4 and mxfp4 hold the same
                                             tensors and dequantize identically, asserted here)
    testdata/fp4/dequant_sha256.json         {D: {S: {O: {tensor: sha256 of its bytes}}}}

The order of operations compressed-tensors 0.20.1 uses (read from its source, and asserted below
on these tensors so that a change in a later release shows up here):
  NVFP4 (NVFP4PackedCompressor.decompress): codes unpacked to bfloat16 values; the FP8 group scale
    cast to bfloat16 (exact); forward._dequantize divides it by the F32 weight_global_scale (a
    bfloat16 [out, in/16] tensor over an F32 [1] tensor: promoted, one f32 division), multiplies
    the code (cast to f32) by that quotient in f32, casts the product to bfloat16 (RNE) -- the
    decompressor always returns bfloat16 whatever the model dtype was --, and the dequantizer
    casts that to O.
  MXFP4 (MXFP4PackedCompressor): the same, but the scale is 2.0 ** bfloat16(E - 127) (bfloat16,
    an exact power of two for E in 0..254, checked below for every E), no global scale: the
    product of two bfloat16 values rounded to bfloat16 (exact unless it overflows), then O.
  MXFP8 (MXFP8QuantizationCompressor): scale as MXFP4; the F8_E4M3 codes cast to bfloat16 (exact)
    times the scale in bfloat16 (RNE: products below 2^-133 underflow), then O.
So for every scheme: O( bf16_rne( f32(code) * f32(effective scale) ) ), effective scale
f32(fp8) / global (NVFP4) or 2^(E-127) (MX).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from compressed_tensors.compressors.mx_utils import decompress_mx_scale
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import golden_util as gu  # noqa: E402

MODEL_DTYPES = ["bf16", "fp16", "fp32"]
SCHEMES = ["nvfp4a16", "nvfp4", "mxfp4a16", "mxfp4", "mxfp8"]
STORED = ["nvfp4a16", "mxfp4a16", "mxfp8"]  # nvfp4 / mxfp4 give the same tensors
OUT_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def sha(t: torch.Tensor) -> str:
    # the tensor's little-endian bytes, as safetensors stores them
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def dequantize(scheme: str, tensors_file: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    qc = json.loads((HERE / f"{scheme}.config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "config.json").write_text(json.dumps({"quantization_config": qc}))
        (d / "model.safetensors").write_bytes(tensors_file.read_bytes())
        dq = CompressedTensorsDequantizer(str(d), dtype=dtype)
        return dq.process(load_file(d / "model.safetensors"))


def restated(tensors: dict[str, torch.Tensor], scheme: str) -> dict[str, torch.Tensor]:
    """The order of operations above, in numpy f32 + torch's bf16 cast, for the assertion."""
    out = {}
    for name in tensors:
        if not name.endswith(".weight_scale"):
            continue
        m = name.removesuffix(".weight_scale")
        sc = tensors[name]
        if scheme.startswith(("nvfp4", "mxfp4")):
            p = tensors[m + ".weight_packed"].numpy()
            idx = np.stack([p & 0xF, p >> 4], axis=-1).reshape(p.shape[0], -1)
            codes = np.where(idx & 8, -1.0, 1.0).astype(np.float32) * np.array(E2M1, np.float32)[idx & 7]
        else:
            codes = tensors[m + ".weight"].to(torch.float32).numpy()
        g = codes.shape[1] // sc.shape[1]
        if scheme.startswith("nvfp4"):
            gs = tensors[m + ".weight_global_scale"].numpy().astype(np.float32)[0]
            eff = sc.to(torch.float32).numpy() / gs
        else:
            eff = np.ldexp(np.float32(1.0), sc.numpy().astype(np.int32) - 127).astype(np.float32)
        prod = codes * np.repeat(eff, g, axis=1)
        out[m + ".weight"] = torch.from_numpy(prod.astype(np.float32)).to(torch.bfloat16)
    return out


def build() -> dict[Path, bytes]:
    # decompress_mx_scale gives exact powers of two for every exponent a scale can hold
    e = torch.arange(0, 256, dtype=torch.int32).to(torch.uint8)
    got = decompress_mx_scale(e).to(torch.float32)
    want = torch.tensor([2.0 ** (int(x) - 127) if x < 255 else float("inf") for x in range(256)])
    want = want.to(torch.bfloat16).to(torch.float32)
    assert torch.equal(got, want), "decompress_mx_scale is not 2^(E-127) exactly"

    files: dict[Path, bytes] = {}
    hashes: dict = {}
    for d in MODEL_DTYPES:
        hashes[d] = {}
        for s in SCHEMES:
            src = HERE / d / f"{s}.safetensors"
            res = {o: dequantize(s, src, dt) for o, dt in OUT_DTYPES.items()}
            bf = res["bf16"]
            ref = restated(load_file(src), s)
            assert set(ref) == set(bf), (d, s, sorted(ref), sorted(bf))
            for n, t in bf.items():
                assert torch.equal(t.view(torch.int16), ref[n].view(torch.int16)), (d, s, n, "order of operations")
                for o in ("f16", "f32"):  # the dequantizer's output = bf16 result cast to O
                    assert torch.equal(res[o][n].view(torch.uint8), bf[n].to(OUT_DTYPES[o]).view(torch.uint8)), (d, s, n, o)
            hashes[d][s] = {o: {n: sha(t) for n, t in sorted(r.items())} for o, r in res.items()}
            if s in STORED:
                files[HERE / d / f"{s}.dequant.safetensors"] = save({n: t.contiguous() for n, t in sorted(bf.items())})
        for a, b in (("nvfp4", "nvfp4a16"), ("mxfp4", "mxfp4a16")):
            assert hashes[d][a] == hashes[d][b], (d, a, b)
    files[HERE / "dequant_sha256.json"] = (json.dumps(hashes, indent=1, sort_keys=True) + "\n").encode()
    return files


def main() -> int:
    check = gu.start_ct(__doc__.split("\n")[0])
    return gu.write_or_check(build(), check, HERE)


if __name__ == "__main__":
    sys.exit(main())
