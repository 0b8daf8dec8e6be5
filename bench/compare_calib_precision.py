#!/usr/bin/env python3
"""Compares the static scales of two quantized checkpoints of one model (e.g. `qtool quantize
--calib-precision f32` and `--calib-precision bf16`): every tensor named *input_scale, *k_scale,
*v_scale. Prints how many differ and by how many bf16 ulps (|a - b| / ulp_bf16(min(a, b)), ulp_bf16(x)
= 2^(floor(log2 x) - 7): the spacing of bf16 numbers at x), as a histogram and one JSON line.
Needs only numpy. Usage: compare_calib_precision.py DIR_A DIR_B"""
import glob, json, math, os, struct, sys
import numpy as np


def read_scales(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            base = 8 + n
            for name, info in header.items():
                if name == "__metadata__" or not name.endswith(("input_scale", "k_scale", "v_scale")):
                    continue
                b, e = info["data_offsets"]
                f.seek(base + b)
                raw = f.read(e - b)
                if info["dtype"] == "F32":
                    v = np.frombuffer(raw, dtype="<f4").astype(np.float64)
                elif info["dtype"] == "BF16":
                    v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
                else:
                    raise SystemExit(f"{path}: {name}: unexpected dtype {info['dtype']}")
                out[name] = v
    return out


def bf16_ulp(x):
    return 2.0 ** (math.floor(math.log2(x)) - 7)


a, b = read_scales(sys.argv[1]), read_scales(sys.argv[2])
if set(a) != set(b):
    raise SystemExit(f"different scale tensors: {sorted(set(a) ^ set(b))[:5]}")
dist = []
for name in sorted(a):
    for x, y in zip(a[name], b[name]):
        dist.append((abs(x - y) / bf16_ulp(min(x, y)) if x != y else 0.0, name, x, y))
n = len(dist)
differ = [d for d in dist if d[0] > 0]
bins = [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, float("inf"))]
hist = {}
for lo, hi in bins:
    key = "identical" if hi == 0 else f"({lo:g}, {hi:g}] ulp"
    hist[key] = sum(1 for d in dist if (d[0] == 0 if hi == 0 else lo < d[0] <= hi))
worst = max(dist)
for k, v in hist.items():
    print(f"{k:>16}: {v}")
print(json.dumps({"scales": n, "differ": len(differ), "max_bf16_ulps": round(worst[0], 3),
                  "max_relative": max((abs(d[2] - d[3]) / d[2] for d in dist), default=0),
                  "worst": worst[1], "median_bf16_ulps_of_differing": round(sorted(d[0] for d in differ)[len(differ) // 2], 3) if differ else 0,
                  "histogram": hist}))
