#!/usr/bin/env python3
"""Dumps PyTorch's own float conversions as goldens for tests/test_float_formats.cpp.

Run from the repository root:  python3 testdata/float_formats/make_goldens.py
Made with torch 2.15.0 on CPU. Version note: since pytorch/pytorch#178817 (April 2026) the e4m3fn
cast saturates (finite overflow and +-inf -> +-448); older torch gives the NaN code there. The
C++ test checks qt::e4m3fn_from_f32_sat against these files and qt::e4m3fn_from_f32 (the older,
non-saturating rule) against them everywhere except on overflow. torch's vectorized CPU bf16 cast
writes 0xFFFF for every NaN, so the test does not compare bf16 NaN bits.

Outputs (all little-endian, next to this script):
  bf16_to_e4m3fn.bin, bf16_to_e5m2.bin  65536 bytes: byte i = torch's cast of the bf16 with bits i
  f16_to_e4m3fn.bin,  f16_to_e5m2.bin   65536 bytes: byte i = torch's cast of the f16 with bits i
  f32_tricky.bin  records of 12 bytes for a fixed list of awkward f32 inputs:
                  u32 f32 bits, u16 bf16 bits, u16 f16 bits, u8 e4m3fn, u8 e5m2, u16 zero pad.
                  Every result is torch's `.to(dtype)` of a 1-element f32 tensor.
"""
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def cast_bytes(t, dtype):
    return t.to(dtype).view(torch.uint8).numpy().tobytes()


def all_patterns(dtype):
    bits = torch.arange(65536, dtype=torch.int32).to(torch.int16)  # wraps to the same 16 bits
    return bits.view(dtype)


def tricky_f32():
    v = []
    f = lambda x: struct.unpack("<I", struct.pack("<f", x))[0]
    # Specials and zeros.
    v += [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x80000001, 0x007FFFFF,
          0x00800000, 0x7F7FFFFF, 0xFF7FFFFF]
    # NaNs with various payloads and signs.
    v += [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000,
          0x7F802000, 0x7FBFFFFF]
    # bf16 ties / near-ties (low 16 bits 0x8000 with even and odd kept LSB, +-1).
    for hi in (0x3F80, 0x3F81, 0x4000, 0x4001, 0x7F7F, 0x7F7E, 0x0000, 0x0001, 0x0080, 0x0081,
               0xBF80, 0xBF81, 0xFF7F):
        for lo in (0x7FFF, 0x8000, 0x8001, 0xFFFF):
            v.append((hi << 16) | lo)
    # f16 edges: max, midpoint to inf, subnormal boundary, smallest subnormal and ties.
    for x in (65504.0, 65519.99609375, 65520.0, 65536.0, 2.0**-14, 2.0**-24, 2.0**-25,
              1.5 * 2.0**-25, 2.0**-26, 3 * 2.0**-25, 2.0**-14 - 2.0**-25, 1.0 + 2.0**-11,
              1.0 + 3 * 2.0**-11, 2048.5, 2049.0, 0.1, 1.0 / 3.0):
        v += [f(x), f(-x)]
    # fp8 edges (from libquant/NUMERICS.md §2.2/§2.3 and §8, and just around them).
    for x in (448.0, 464.0, 465.0, 479.9, 480.0, 1e9, 100.0, 0.1, 3.0, 2.0**-6, 2.0**-9,
              2.0**-10, 1.5 * 2.0**-10, 3 * 2.0**-10, 2.0**-11, 1.0625, 1.1875, 1.125, 1.375,
              57344.0, 60000.0, 61440.0, 65536.0, 2.0**-16, 2.0**-17, 3 * 2.0**-17,
              2.0**-14, 2.0**-6 - 2.0**-10, 2.0**-14 - 2.0**-17):
        v += [f(x), f(-x)]
    v += [f(464.0) - 1, f(464.0) + 1, f(61440.0) - 1, f(61440.0) + 1, f(480.0) - 1]
    # A fixed pseudo-random sample over all exponents.
    rng = np.random.default_rng(20240611)
    v += [int(x) for x in rng.integers(0, 2**32, size=256, dtype=np.uint64)]
    return v


def main():
    for name, dt in (("bf16", torch.bfloat16), ("f16", torch.float16)):
        x = all_patterns(dt)
        for tname, tdt in (("e4m3fn", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)):
            with open(os.path.join(HERE, f"{name}_to_{tname}.bin"), "wb") as fh:
                fh.write(cast_bytes(x, tdt))

    bits = np.array(tricky_f32(), dtype=np.uint32)
    # Cast each value alone (1-element tensors), as scalars flow through qtool's code.
    out = bytearray()
    for b in bits:
        t = torch.from_numpy(np.array([b], dtype=np.uint32).view(np.float32).copy())
        bf = struct.unpack("<H", cast_bytes(t, torch.bfloat16))[0]
        hf = struct.unpack("<H", cast_bytes(t, torch.float16))[0]
        e4 = cast_bytes(t, torch.float8_e4m3fn)[0]
        e5 = cast_bytes(t, torch.float8_e5m2)[0]
        out += struct.pack("<IHHBBH", int(b), bf, hf, e4, e5, 0)
    with open(os.path.join(HERE, "f32_tricky.bin"), "wb") as fh:
        fh.write(out)


if __name__ == "__main__":
    main()
