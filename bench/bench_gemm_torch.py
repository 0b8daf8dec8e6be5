"""PyTorch CPU's matmul (oneDNN / MKL, whatever torch picks) on the same shapes as
bench/bench_gemm_f32.cpp: one calibration sample's Linears of a Llama layer, T tokens,
y = x @ W^T via torch.nn.functional.linear. Best of R repeats per shape; GFLOP/s = 2 T N K / s.
This is the library baseline of the calibration GEMM (issue #18: "own kernels or a maintained
library?"): torch's bf16 CPU linear runs oneDNN's AVX512-BF16 / AMX kernels, its f32 linear MKL.
One JSON line per shape and one for the layer (sum of the four), like bench_gemm_f32.
Usage: bench_gemm_torch.py [T=512] [THREADS=1] [REPEATS=20] [H=768] [I=2048] [KV=256] [float32|bfloat16]
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

a = sys.argv[1:]
T = int(a[0]) if len(a) > 0 else 512
threads = int(a[1]) if len(a) > 1 else 1
reps = int(a[2]) if len(a) > 2 else 20
H = int(a[3]) if len(a) > 3 else 768
I = int(a[4]) if len(a) > 4 else 2048
KV = int(a[5]) if len(a) > 5 else 256
dtype = getattr(torch, a[6]) if len(a) > 6 else torch.float32
torch.set_num_threads(threads)
torch.manual_seed(1)
total_flop = total_s = 0.0
with torch.inference_mode():
    for name, n, k in (("qkv", H + 2 * KV, H), ("o", H, H), ("gate_up", 2 * I, H), ("down", H, I)):
        w = (torch.rand(n, k) - 0.5).to(dtype)
        x = (torch.rand(T, k) - 0.5).to(dtype)
        F.linear(x, w)  # warm-up (oneDNN builds its kernel on the first call)
        best = 1e30
        for _ in range(reps):
            t0 = time.perf_counter()
            F.linear(x, w)
            best = min(best, time.perf_counter() - t0)
        flop = 2.0 * T * n * k
        total_flop += flop
        total_s += best
        print(json.dumps({"shape": name, "T": T, "N": n, "K": k, "ms": round(best * 1e3, 3),
                          "gflops": round(flop / best * 1e-9, 1)}))
print(json.dumps({"shape": "layer", "gflops": round(total_flop / total_s * 1e-9, 1), "engine": "pytorch",
                  "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""), "threads": threads}))
