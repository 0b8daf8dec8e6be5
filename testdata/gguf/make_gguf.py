#!/usr/bin/env python3
"""Writes the GGUF goldens read by tests/test_gguf.cpp (see README.md next to this file).

For every ggml type qtool dequantizes, <type>.gguf holds a few small tensors (2-D, 3-D and 4-D,
several blocks per row so remainders and row boundaries are exercised) and <type>.f32 holds the
reference dequantization of those tensors by gguf-py (gguf.quants.dequantize), as raw
little-endian float32, tensors concatenated in the order of the file's tensor infos.

Tensor contents (all seeded, so the output is reproducible byte for byte):
  * "quant.*"  -- random float data quantized with gguf.quants.quantize (only for the types
                  gguf-py can quantize: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0);
  * "random.*" -- uniformly random block bytes with every f16 scale field forced finite. Every
                  bit pattern is a valid block, and random bytes reach all quant codes, sub-scale
                  packings and f16 exponents (incl. subnormal scales); this is the only way to make
                  k-quant blocks here, as gguf-py has no k-quant quantizer;
  * "special"  -- hand-picked F32/F16/BF16 edge values (signed zeros, subnormals, infinities,
                  the largest finite values). No NaNs: NaN payload handling is not part of the
                  exact contract (hardware f16 conversion may quieten signalling NaNs).

metadata.gguf holds one key of every GGUF value type, arrays of each, arrays of strings and
nested arrays, a custom general.alignment of 64 and three tiny tensors.

Usage: python3 testdata/gguf/make_gguf.py   (rewrites the files in this folder)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

OUT = Path(__file__).resolve().parent

# Byte offsets of the f16 scale fields inside one block (ggml-common.h block_* layouts).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
BLOCK32 = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


def finite_f16_bits(bits: np.ndarray) -> np.ndarray:
    """Maps u16 f16 bit patterns with exponent 31 (inf/NaN) to finite ones (clears bit 14)."""
    bits = bits.astype(np.uint16)
    return np.where((bits & 0x7C00) == 0x7C00, bits & np.uint16(0xBFFF), bits).astype(np.uint16)


def no_nan_bits(bits: np.ndarray, exp_mask: int, mant_mask: int) -> np.ndarray:
    """Turns NaN bit patterns (of f16 or bf16) into infinities of the same sign."""
    bits = bits.astype(np.uint16)
    nan = ((bits & exp_mask) == exp_mask) & ((bits & mant_mask) != 0)
    return np.where(nan, bits & np.uint16(~mant_mask & 0xFFFF), bits).astype(np.uint16)


def random_blocks(rng: np.random.Generator, qtype: T, shape: tuple[int, ...]) -> np.ndarray:
    """Random valid blocks for a tensor of row-major `shape`, as a uint8 byte-shaped array."""
    bs, ts = GGML_QUANT_SIZES[qtype]
    *outer, cols = shape
    assert cols % bs == 0
    n_blocks = int(np.prod(shape)) // bs
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        h = raw[:, off:off + 2].copy().view("<u2")
        raw[:, off:off + 2] = finite_f16_bits(h).view(np.uint8)
    return raw.reshape(*outer, cols // bs * ts)


def as_bytes(arr: np.ndarray) -> np.ndarray:
    """A little-endian array viewed as uint8 with the last axis in bytes."""
    arr = np.ascontiguousarray(arr)
    return arr.view(np.uint8).reshape(*arr.shape[:-1], arr.shape[-1] * arr.itemsize)


def tensors_for(qtype: T, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 byte-shaped data) pairs for one golden file."""
    out: list[tuple[str, np.ndarray]] = []
    if qtype == T.F32:
        out.append(("quant.normal", as_bytes(rng.standard_normal((5, 7)).astype("<f4"))))
        special = np.array([0.0, -0.0, 1e-45, -1.17549435e-38, 3.4028235e38, -np.inf, np.inf, 1.0],
                           dtype="<f4")
        out.append(("special", as_bytes(special)))
        out.append(("quant.cube", as_bytes(rng.uniform(-4, 4, (2, 3, 4)).astype("<f4"))))
    elif qtype in (T.F16, T.BF16):
        if qtype == T.F16:
            bits = no_nan_bits(rng.integers(0, 1 << 16, size=(6, 11)), 0x7C00, 0x03FF)
            special = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF,
                       0x7C00, 0xFC00]
        else:
            bits = no_nan_bits(rng.integers(0, 1 << 16, size=(6, 11)), 0x7F80, 0x007F)
            special = [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0x7F7F, 0xFF7F,
                       0x7F80, 0xFF80]
        out.append(("random.bits", as_bytes(bits.astype("<u2"))))
        out.append(("special", as_bytes(np.array(special, dtype="<u2"))))
        data = (rng.standard_normal((3, 5, 2)) * 100).astype(np.float32)
        out.append(("quant.normal", as_bytes(quantize(data, qtype).view("<u2"))))
    else:
        bs = GGML_QUANT_SIZES[qtype][0]
        if qtype in BLOCK32:
            normal = rng.standard_normal((4, 3 * bs)).astype(np.float32)
            normal[2] = 0.0      # an all-zero row: scale 0
            normal[3] = 0.5      # a constant row
            out.append(("quant.normal", quantize(normal, qtype)))
            wide = rng.uniform(-3, 3, (2, 3, 2 * bs)).astype(np.float32)
            wide[0, 1, 5] = 40.0  # an outlier dominating its block
            out.append(("quant.wide", quantize(wide, qtype)))
            out.append(("random.blocks", random_blocks(rng, qtype, (5, 2 * bs))))
            out.append(("random.4d", random_blocks(rng, qtype, (2, 1, 3, bs))))
        else:
            out.append(("random.blocks", random_blocks(rng, qtype, (3, bs))))
            out.append(("random.4d", random_blocks(rng, qtype, (1, 2, 1, 2 * bs))))
    return out


def write_type_file(qtype: T, seed: int) -> None:
    rng = np.random.default_rng(seed)
    name = qtype.name.lower()
    tensors = tensors_for(qtype, rng)
    w = gguf.GGUFWriter(OUT / f"{name}.gguf", arch="qtooltest")
    w.add_uint32("qtooltest.seed", seed)
    for tname, raw in tensors:
        assert raw.dtype == np.uint8
        w.add_tensor(tname, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ref = [dequantize(raw, qtype).astype("<f4", copy=False).ravel() for _, raw in tensors]
    np.concatenate(ref).astype("<f4").tofile(OUT / f"{name}.f32")


def write_metadata_file() -> None:
    w = gguf.GGUFWriter(OUT / "metadata.gguf", arch="qtooltest")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 65000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)            # stored as the f32 nearest 0.1
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62) - 7)
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.true", True)
    w.add_bool("test.false", False)
    w.add_string("test.string", "hello")
    w.add_string("test.unicode", "h\u00e9llo \u2192 \u4e16\u754c\n\"q\"")
    w.add_key_value("test.arr.u8", [0, 1, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr.i8", [-128, 0, 127], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("test.arr.u16", [0, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("test.arr.i16", [-32768, 32767], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.arr.u32", [0, 4294967295], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("test.arr.i32", [-2147483648, 5, 2147483647], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.arr.u64", [0, 2**64 - 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.arr.i64", [-(2**63), 2**63 - 1], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("test.arr.f32", [0.5, -2.25, 1e-3], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.arr.f64", [0.1, -1e300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.arr.bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("test.arr.string", ["a", "", "\u00fcber", "x y"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("test.arr.nested", [[1, 2], [3]], V.ARRAY)
    w.add_key_value("test.arr.nested3", [[[1, 2], [3]], [[4]]], V.ARRAY)
    w.add_key_value("test.arr.nested_strings", [["a", "b"], ["c"]], V.ARRAY)
    # Odd byte sizes, so the 64-byte alignment pads between tensors.
    w.add_tensor("t.a", np.arange(3, dtype=np.float32))
    w.add_tensor("t.b", np.arange(5, dtype=np.float32) * -1.5)
    w.add_tensor("t.c", np.arange(14, dtype=np.float16).reshape(2, 7))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    for i, qtype in enumerate([T.F32, T.F16, T.BF16, *BLOCK32, *KQUANTS]):
        write_type_file(qtype, seed=1000 + i)
    write_metadata_file()
    from importlib.metadata import version
    print(f"wrote {OUT} with gguf {version('gguf')}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
