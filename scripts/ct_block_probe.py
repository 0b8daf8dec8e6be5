"""Why compressed-tensors 0.13-0.17 fail to decompress some block-FP8 weights (issue #17, the
fp8-block row of tests/python/CT_COMPAT.md), shown on that release's own dequantize().

Those releases' naive-quantized decompressor calls `dequantize(x_q, scale)` without the
checkpoint's quantization args, so the strategy is inferred from the scale tensor's shape alone.
A block-FP8 weight [N, K] with 128x128 blocks has the scale grid [ceil(N/128), ceil(K/128)] --
fixed by the format, so compressed-tensors' own compressor writes the same grid as qtool. The
inference reads a grid with one column as per-channel scales, and a grid whose rows do not
divide N as blocks of N // rows rows: both fail. No real checkpoint hits this (their K and N are
multiples of 128); the tiny test models do. 0.20 refuses to infer and takes the args.

Run with a venv holding a compressed-tensors release and torch:
    VENV/bin/python scripts/ct_block_probe.py
Prints one line per shape: ok (values equal the block-broadcast scales), WRONG values, or the
error that release raises.
"""
import torch
import compressed_tensors as ct
from compressed_tensors.quantization.lifecycle.forward import dequantize

for n, k in ((256, 128), (128, 256), (512, 256), (320, 256)):
    rows, cols = (n + 127) // 128, (k + 127) // 128
    q = torch.ones(n, k, dtype=torch.float8_e4m3fn)
    s = torch.arange(1, rows * cols + 1, dtype=torch.float32).reshape(rows, cols)
    want = s.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)[:, :k]  # code 1.0 x its block's scale
    try:
        d = dequantize(q, s, None)
        verdict = "ok" if torch.equal(d.float(), want) else "WRONG values"
    except Exception as e:  # the release's own error, first line
        verdict = "error: " + str(e).splitlines()[0]
    print(f"compressed-tensors {ct.__version__}: weight [{n}, {k}], scale grid [{rows}, {cols}]: {verdict}")
