#!/usr/bin/env python3
"""Golden NVFP4 / MXFP4 / MXFP8 weight outputs from the real compressed-tensors package.

Usage (from the repository root, in a venv with compressed-tensors 0.20.1 and torch):
    python3 testdata/fp4/make_goldens.py            # (re)write the goldens
    python3 testdata/fp4/make_goldens.py --check    # regenerate in memory, compare bytes

Versions used for the committed files: compressed-tensors 0.20.1, torch 2.x from PyPI (the
exact versions are printed on stderr and recorded in testdata/fp4/README.md), run on the CPU.

Writes, for each model dtype D in {bf16, fp16, fp32}:
    testdata/fp4/D/input.safetensors        the unquantized weights (generated, fixed seed)
    testdata/fp4/D/<scheme>.safetensors     exactly the tensors compressed-tensors writes for them
and testdata/fp4/<scheme>.config.json      ct's QuantizationConfig for the preset (compressed)

Every numeric step is compressed-tensors' own code, in the order llm-compressor's data-free entry
point `model_free_ptq` uses it (process_file for GROUP schemes, process_file_microscale_scheme for
NVFP4's TENSOR_GROUP), on the CPU:
  1. torch.nn.Linear(in, out, bias=False, dtype=D); weight copied in
  2. ct initialize_module_for_quantization(module, scheme, force_zero_point=False)
  3. NVFP4 only: the weight observer's global statistic. llm-compressor's observer takes
     torch.amin / torch.amax over the whole weight (in D) and calls ct generate_gparam(min, max);
     for the fused sets q/k/v and gate/up, llm-compressor fuses the observers (Observer.fuse), so
     the min / max are taken over all members together -- re-stated below in a few lines.
     The result is stored with update_offload_parameter(module, "weight_global_scale", gs).
  4. per-group min / max (torch.amin / amax over groups of group_size, in D) and ct
     calculate_qparams(min, max, args, global_scale=module.weight_global_scale or None)
  5. update_offload_parameter(module, "weight_scale", scale); status FROZEN
  6. ct compress_module(module) -> NVFP4PackedCompressor / MXFP4PackedCompressor /
     MXFP8QuantizationCompressor .compress
  7. module.state_dict(prefix="<name minus .weight>.")
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from compressed_tensors.compressors import compress_module
from compressed_tensors.offload import update_offload_parameter
from compressed_tensors.quantization import (
    QuantizationConfig,
    QuantizationScheme,
    QuantizationStatus,
    preset_name_to_scheme,
)
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import golden_util as gu  # noqa: E402

SEED = 20261206
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# qtool scheme -> (ct preset, expected compressed-tensors format)
SCHEMES = {
    "nvfp4a16": ("NVFP4A16", "nvfp4-pack-quantized"),
    "mxfp4a16": ("MXFP4A16", "mxfp4-pack-quantized"),
    "mxfp8": ("MXFP8", "mxfp8-quantized"),
    # W4A4 presets: the same weights as their A16 twins (the activations are quantized at inference;
    # NVFP4's input_global_scale needs calibration: testdata/nvfp4/), configs with input_activations.
    "nvfp4": ("NVFP4", "nvfp4-pack-quantized"),
    "mxfp4": ("MXFP4", "mxfp4-pack-quantized"),
}
# llm-compressor's fused sets (model_free/microscale.py DEFAULT_FUSED_MAPPINGS, the ones used here)
FUSED = [["layers.0.self_attn.q_proj.weight", "layers.0.self_attn.k_proj.weight",
          "layers.0.self_attn.v_proj.weight"],
         ["layers.0.mlp.gate_proj.weight", "layers.0.mlp.up_proj.weight"]]


def scheme_for(qtool_name: str) -> QuantizationScheme:
    return preset_name_to_scheme(SCHEMES[qtool_name][0], ["Linear"])


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def make_inputs_f32() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    w = {}
    # a: Gaussian with outlier columns.
    a = rng.normal(0.0, 0.02, size=(32, 128)).astype(np.float32)
    a[:, [3, 70]] *= 25.0
    w["a.weight"] = a
    # t: hand-picked values. Every value is exact in bf16 and fp16.
    t = np.zeros((16, 64), dtype=np.float32)
    # row 0: FP4 ties of x/scale once the group max is 6 (scale 1): 0.25 0.75 1.25 1.75 2.5 3.5 5
    t[0, :16] = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -1.25, -1.75, -2.5,
                 -3.5, -5.0, -6.0]
    t[0, 16:32] = [6.0, 0.26, 0.74, 1.26, 1.74, 2.51, 3.49, 5.01, -0.1, -0.0, 0.0, 0.5, 1.0,
                   1.5, 2.0, 3.0]
    t[1, :] = 0.0                           # an all-zero row
    t[2, :32] = -0.0                        # signed zeros
    t[3, :] = np.linspace(-1.0, 1.0, 64, dtype=np.float32)
    t[4, :8] = [1.75, 1.0, 0.5, -1.7421875, 0.0, 0.0, 0.0, 0.0]  # MX exponent round-up at 1.75
    t[5, :8] = [448.0, 1.0, -2.0, 3.0, 0, 0, 0, 0]               # large group max
    t[6, :8] = [3.0, 1.0, -0.5, 0.1, 0, 0, 0, 0]
    t[7, :] = 1e-3                           # small group max
    t[8, :4] = [2.0 ** -20, -(2.0 ** -21), 0.0, 2.0 ** -22]      # very small (fp16 subnormal)
    t[9, 32:48] = 0.001                      # one non-zero group among zeros
    t[10, :] = rng.normal(0.0, 0.5, size=64).astype(np.float32)
    t[11, :16] = [0.1] * 16
    t[12, :16] = [-7.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    w["t.weight"] = t
    # z: an all-zero tensor.
    w["z.weight"] = np.zeros((4, 32), dtype=np.float32)
    # fused sets with different absmax per member (shared NVFP4 global scale).
    w["layers.0.self_attn.q_proj.weight"] = rng.normal(0.0, 0.02, size=(64, 64)).astype(np.float32)
    w["layers.0.self_attn.k_proj.weight"] = rng.normal(0.0, 0.05, size=(32, 64)).astype(np.float32)
    w["layers.0.self_attn.v_proj.weight"] = rng.normal(0.0, 0.01, size=(32, 64)).astype(np.float32)
    w["layers.0.mlp.gate_proj.weight"] = rng.normal(0.0, 0.03, size=(96, 64)).astype(np.float32)
    w["layers.0.mlp.up_proj.weight"] = rng.normal(0.0, 0.3, size=(96, 64)).astype(np.float32)
    w["layers.0.mlp.down_proj.weight"] = rng.normal(0.0, 0.02, size=(64, 96)).astype(np.float32)
    return w


def make_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(dtype).contiguous() for k, v in make_inputs_f32().items()}


# ---------------------------------------------------------------------------------------------
# The model-free path
# ---------------------------------------------------------------------------------------------

def global_minmax(weights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Observer (memoryless_minmax) global statistic over a fused set: amin / amax of each
    member reshaped to (1, 1, -1), combined with torch.minimum / torch.maximum."""
    mn = mx = None
    for w in weights:
        obs = w.reshape((1, 1, -1))
        a, b = torch.amin(obs, dim=(0, -1)), torch.amax(obs, dim=(0, -1))
        mn = a if mn is None else torch.minimum(mn, a)
        mx = b if mx is None else torch.maximum(mx, b)
    return mn, mx


@torch.no_grad()
def quantize_set(names: list[str], inputs: dict[str, torch.Tensor], qname: str) -> dict:
    scheme = scheme_for(qname)
    args = scheme.weights
    mods = {n: gu.quant_linear(inputs[n], scheme_for(qname)) for n in names}
    gs = None
    if args.strategy == "tensor_group":
        mn, mx = global_minmax([inputs[n] for n in names])
        gs = generate_gparam(mn, mx)
    out = {}
    for n, m in mods.items():
        if gs is not None:
            update_offload_parameter(m, "weight_global_scale", gs)
        obs = m.weight.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
        min_vals = torch.amin(obs, dim=(0, -1))
        max_vals = torch.amax(obs, dim=(0, -1))
        scale, zp = calculate_qparams(min_vals, max_vals, m.quantization_scheme.weights,
                                      global_scale=getattr(m, "weight_global_scale", None))
        update_offload_parameter(m, "weight_scale", scale)
        m.quantization_status = QuantizationStatus.FROZEN
        compress_module(m)
        fmt = m.quantization_scheme.format.value
        if fmt != SCHEMES[qname][1]:
            raise RuntimeError(f"{n}: ct chose {fmt}, expected {SCHEMES[qname][1]}")
        out.update(gu.weight_tensors(m, n))
    return out


def build_all() -> dict[str, dict[str, bytes]]:
    files: dict[str, dict[str, bytes]] = {}
    for dname, dtype in DTYPES.items():
        inputs = make_inputs(dtype)
        files[dname] = {"input.safetensors": save(inputs)}
        for qname in SCHEMES:
            out = {}
            fused = {n for s in FUSED for n in s} if scheme_for(qname).weights.strategy == "tensor_group" else set()
            for s in FUSED:
                if fused:
                    out.update(quantize_set(s, inputs, qname))
            for n in inputs:
                if n not in fused:
                    out.update(quantize_set([n], inputs, qname))
            files[dname][f"{qname}.safetensors"] = save(out)
    cfgs = {}
    for qname, (preset, fmt) in SCHEMES.items():
        qc = QuantizationConfig(config_groups={"group_0": scheme_for(qname)}, format=fmt,
                                quantization_status=QuantizationStatus.COMPRESSED,
                                ignore=["lm_head"])
        cfgs[f"{qname}.config.json"] = (json.dumps(qc.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
    files["."] = cfgs
    return files


def main() -> int:
    check = gu.start_ct(__doc__.split("\n")[0])
    return gu.write_or_check(gu.in_folders(HERE, build_all()), check, HERE)


if __name__ == "__main__":
    sys.exit(main())
