#!/usr/bin/env python3
"""An independent, numpy-only re-statement of the weight-quantization rule in
libquant/NUMERICS.md §3.1 (scale = dtype_rne(f32(amax) / D), quotient rounded to
the model dtype, clamp, E4M3FN c10 cast or round-half-even, int32 packing), used to check the
goldens that compressed-tensors produced. It shares no numeric code with torch: bf16 rounding,
the float8 cast and the packing are written out with integer bit operations here, and
safetensors files are parsed by hand.

Usage:
    python3 testdata/ct_goldens/spec_emulation.py     # compare every golden, print a summary,
                                                      # and count what a single-rounding
                                                      # (Triton/GPU) quantizer would change
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DTYPE_DIRS = ("bf16", "fp16", "fp32")

# scheme -> (kind, bits, strategy, group/block)
SCHEMES = {
    "fp8-static": ("float", 8, "tensor", None),
    "fp8-dynamic": ("float", 8, "channel", None),
    "fp8-w8a16": ("float", 8, "channel", None),
    "fp8-block": ("float", 8, "block", (128, 128)),
    "int8-dynamic": ("int", 8, "channel", None),
    "int8-static": ("int", 8, "channel", None),
    "w8a16": ("int", 8, "channel", None),
    "w4a16": ("int", 4, "group", 128),
}
PACKED = {"w8a16", "w4a16"}

_NP = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F8_E4M3": np.uint8,
       "I8": np.int8, "I32": np.int32, "I64": np.int64, "U8": np.uint8}


# ------------------------------------------------------------------ safetensors, by hand

def read_safetensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (safetensors dtype string, array). BF16 comes back as raw uint16 bits."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        arr = np.frombuffer(blob[base + lo:base + hi], dtype=_NP[info["dtype"]])
        out[name] = (info["dtype"], arr.reshape(info["shape"]))
    return out


# ------------------------------------------------------------------ number formats

def to_f32(dt: str, a: np.ndarray) -> np.ndarray:
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def round_to(dt: str, x: np.ndarray) -> np.ndarray:
    """Round f32 values to the model dtype (nearest, ties to even); result kept as f32."""
    x = np.asarray(x, dtype=np.float32)
    if dt == "F32":
        return x
    if dt == "F16":
        return x.astype(np.float16).astype(np.float32)   # IEEE RNE (with fp16 subnormals)
    assert dt == "BF16"
    assert np.all(np.isfinite(x))
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16             # c10 round_to_nearest_even
    return (u.astype(np.uint32) << 16).view(np.float32)


def bits_of(dt: str, x_f32: np.ndarray) -> np.ndarray:
    """Storage bits of f32 values that are exact in dt (for byte comparison)."""
    if dt == "BF16":
        return (x_f32.view(np.uint32) >> 16).astype(np.uint16)
    if dt == "F16":
        return x_f32.astype(np.float16).view(np.uint16)
    return x_f32.view(np.uint32)


def eps_of(dt: str) -> np.float32:
    return np.float32({"BF16": 2.0**-7, "F16": 2.0**-10, "F32": 2.0**-23}[dt])


def e4m3fn_from_f32(x: np.ndarray) -> np.ndarray:
    """f32 -> float8_e4m3fn byte, round to nearest even, as libquant/NUMERICS.md §2.2 states the
    c10 rule. Only values already clamped to [-448, 448] reach it here; above that range torch
    2.15's c10 differs from the older rule (it saturates to 0x7E/0xFE instead of producing
    0x7F/0xFF)."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.int64)
    sign = u & 0x80000000
    a = u ^ sign
    sub = (np.abs(x) + np.float32(16384.0)).view(np.uint32).astype(np.int64) - (141 << 23)
    nrm = ((a + ((7 - 127) << 23) + 0x7FFFF + ((a >> 20) & 1)) >> 20) & 0xFF
    r = np.where(a >= 0x43F00000, 0x7F, np.where(a < 0x3C800000, sub, nrm))
    return (r | (sign >> 24)).astype(np.uint8)


# ------------------------------------------------------------------ the rule

def group_view(w: np.ndarray, strategy: str, gb):
    """(w regrouped as [num_groups, group_elems], the scale grid's shape)."""
    rows, cols = w.shape
    if strategy == "tensor":
        return w.reshape(1, -1), (1,)
    if strategy == "channel":
        return w.reshape(rows, -1), (rows, 1)
    if strategy == "group":
        return w.reshape(rows, cols // gb, gb).reshape(-1, gb), (rows, cols // gb)
    assert strategy == "block"
    bh, bw = gb
    pr, pc = -rows % bh, -cols % bw
    p = np.pad(w, ((0, pr), (0, pc)))                    # zero padding, as ct does
    nbr, nbc = p.shape[0] // bh, p.shape[1] // bw
    return p.reshape(nbr, bh, nbc, bw).transpose(0, 2, 1, 3).reshape(nbr * nbc, -1), (nbr, nbc)


def expand_scale(scale: np.ndarray, shape, strategy: str, gb) -> np.ndarray:
    rows, cols = shape
    if strategy == "tensor":
        return np.full(shape, scale.reshape(-1)[0], dtype=np.float32)
    if strategy == "channel":
        return np.repeat(scale.reshape(rows, 1), cols, axis=1)
    if strategy == "group":
        return np.repeat(scale, gb, axis=1)
    bh, bw = gb
    return np.repeat(np.repeat(scale, bh, axis=0), bw, axis=1)[:rows, :cols]


def quantize(dt: str, w_raw: np.ndarray, scheme: str, single_rounding: bool = False):
    """-> (codes: uint8 E4M3 bytes or int8 values, scale f32 array in ct's scale shape).
    single_rounding=True skips the model-dtype rounding of w/scale (what a quantizer that divides
    in f32 and rounds once does, e.g. ct 0.20's Triton kernel on CUDA)."""
    kind, bits, strategy, gb = SCHEMES[scheme]
    w = to_f32(dt, w_raw)
    groups, sshape = group_view(w, strategy, gb)
    amax = np.maximum(np.abs(np.minimum(groups.min(axis=1), 0)), np.maximum(groups.max(axis=1), 0))
    if kind == "float":
        d, qmin, qmax = np.float32(448.0), -448.0, 448.0
    else:
        d = np.float32((2.0**bits - 1) / 2)               # 127.5 for int8, 7.5 for int4
        qmin, qmax = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    scale = round_to(dt, amax.astype(np.float32) / d)    # one f32 division, one rounding
    scale = np.where(scale == 0, eps_of(dt), scale).astype(np.float32).reshape(sshape)
    s_full = expand_scale(scale, w.shape, strategy, gb)
    t = w / s_full                                       # f32 division (RNE)
    if not single_rounding:
        t = round_to(dt, t)                              # the model-dtype quotient
    t = np.clip(t, np.float32(qmin), np.float32(qmax)).astype(np.float32)  # keeps -0.0
    if kind == "float":
        return e4m3fn_from_f32(t), scale
    return np.rint(t).astype(np.int8), scale             # half to even


def pack_int32(q: np.ndarray, bits: int) -> np.ndarray:
    """compressed-tensors pack_to_int32 for bits in {4, 8}: offset 2^(b-1), LSB first."""
    u = (q.astype(np.int64) + (1 << (bits - 1))).astype(np.uint64)
    per = 32 // bits
    rows, cols = u.shape
    u = np.pad(u, ((0, 0), (0, -cols % per))).reshape(rows, -1, per)
    shifts = (np.arange(per, dtype=np.uint64) * np.uint64(bits))
    words = np.bitwise_or.reduce(u << shifts, axis=2)
    return words.astype(np.uint32).view(np.int32)


# ------------------------------------------------------------------ comparison

def expected_tensors(dt: str, name: str, w_raw: np.ndarray, scheme: str) -> dict[str, np.ndarray]:
    """The tensors (as raw arrays comparable byte for byte) the rule predicts for one weight."""
    kind, bits, strategy, gb = SCHEMES[scheme]
    q, scale = quantize(dt, w_raw, scheme)
    base = name.removesuffix(".weight")
    out = {f"{base}.weight_scale": bits_of(dt, scale)}
    if scheme in PACKED:
        out[f"{base}.weight_packed"] = pack_int32(q, bits)
        out[f"{base}.weight_shape"] = np.array(w_raw.shape, dtype=np.int64)
    else:
        out[f"{base}.weight"] = q
    return out


def compare_dir(dname: str) -> list[str]:
    """Problems found comparing every golden in one dtype folder with the rule (empty = none)."""
    d = HERE / dname
    inputs = read_safetensors(d / "input.safetensors")
    problems = []
    for scheme in SCHEMES:
        got = read_safetensors(d / f"{scheme}.safetensors")
        want: dict[str, np.ndarray] = {}
        for name, (dt, raw) in inputs.items():
            _, _, strategy, gb = SCHEMES[scheme]
            if strategy == "group" and raw.shape[1] % gb:
                continue                                  # ct refuses; so does the generator
            want.update(expected_tensors(dt, name, raw, scheme))
        if set(got) != set(want):
            problems.append(f"{dname}/{scheme}: tensor names {sorted(set(got) ^ set(want))}")
            continue
        for k, w in want.items():
            g = got[k][1]
            gb_ = np.ascontiguousarray(g).view(np.uint8)
            wb_ = np.ascontiguousarray(w).view(np.uint8)
            if g.shape != w.shape or not np.array_equal(gb_, wb_):
                n = int(np.sum(gb_ != wb_)) if gb_.shape == wb_.shape else -1
                problems.append(f"{dname}/{scheme}: {k} differs ({n} bytes)")
    return problems


def single_rounding_changes(dname: str) -> dict[str, tuple[int, int]]:
    """scheme -> (codes that differ if w/scale is not rounded to the model dtype, total codes)."""
    inputs = read_safetensors(HERE / dname / "input.safetensors")
    res = {}
    for scheme in SCHEMES:
        diff = total = 0
        for name, (dt, raw) in inputs.items():
            _, _, strategy, gb = SCHEMES[scheme]
            if strategy == "group" and raw.shape[1] % gb:
                continue
            a, _ = quantize(dt, raw, scheme)
            b, _ = quantize(dt, raw, scheme, single_rounding=True)
            diff += int(np.sum(a.view(np.uint8) != b.view(np.uint8)))
            total += a.size
        res[scheme] = (diff, total)
    return res


def main() -> int:
    bad = 0
    for dname in DTYPE_DIRS:
        problems = compare_dir(dname)
        bad += len(problems)
        for p in problems:
            print("MISMATCH", p)
        print(f"{dname}: {'all goldens equal the rule' if not problems else 'MISMATCHES'}")
    print("\nCodes a single-rounding quantizer (f32 w/scale, no model-dtype rounding) would change:")
    for dname in DTYPE_DIRS:
        for scheme, (diff, total) in single_rounding_changes(dname).items():
            print(f"  {dname:5s} {scheme:13s} {diff:6d} / {total:6d}  ({100.0 * diff / total:.2f} %)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
