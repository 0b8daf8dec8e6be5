#!/usr/bin/env python3
"""PyTorch CPU baseline for the calibration forward: transformers' model of the same folder, f32,
the same token ids (written by bench_forward), forward hooks recording every Linear input's
absmax (what calibration needs), no logits kept. Prints one JSON line.
Usage: bench_forward_torch.py MODEL_DIR SAMPLES SEQ_LEN THREADS IDS_FILE [BATCH] [float32|bfloat16] [compile]
(bfloat16: the model's weights and activations in bf16 -- PyTorch's fastest CPU setting where
the CPU has AVX512-BF16 or AMX; oneDNN/MKL-DNN kernels). `compile`: the decoder through
torch.compile (inductor), the hooks keeping tensor maxima (no .item(), which would break the
graph); one untimed warm-up sample first, so compilation is not counted."""
import json, sys, time
import numpy as np
import torch
from transformers import AutoModelForCausalLM

model_dir, n, seq, threads, ids_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
batch = int(sys.argv[6]) if len(sys.argv) > 6 else 8
dtype = getattr(torch, sys.argv[7]) if len(sys.argv) > 7 else torch.float32
torch.set_num_threads(threads)
ids = torch.from_numpy(np.fromfile(ids_file, dtype=np.int32).reshape(n, seq).astype(np.int64))
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
model.eval()
compiled = len(sys.argv) > 8 and sys.argv[8] == "compile"
amax = {}
def hook(name):
    def f(mod, inp):
        if compiled:  # stays a tensor: traceable
            v = inp[0].detach().abs().amax()
            amax[name] = torch.maximum(amax[name], v) if name in amax else v
        else:
            v = inp[0].detach().abs().max().item()
            amax[name] = max(amax.get(name, 0.0), v)
    return f
for name, mod in model.named_modules():
    if isinstance(mod, torch.nn.Linear) and name != "lm_head":
        mod.register_forward_pre_hook(hook(name))
body = model.model  # the decoder without lm_head: calibration does not need logits
if compiled:
    body = torch.compile(body)
    with torch.no_grad():
        body(input_ids=ids[0:1])  # compiles (not timed)
t0 = time.perf_counter()
with torch.no_grad():
    for b in range(0, n, batch):
        body(input_ids=ids[b:b + batch])
dt = time.perf_counter() - t0
print(json.dumps({"engine": "pytorch", "torch": torch.__version__, "samples": n, "seq_len": seq, "tokens": n * seq,
                  "seconds": round(dt, 3), "tokens_per_s": round(n * seq / dt, 1), "batch": batch, "threads": threads,
                  "dtype": str(dtype).replace("torch.", ""), "compiled": compiled}))
