#!/usr/bin/env python3
"""Golden weight-quantization outputs from the real compressed-tensors package.

Usage (from the repository root):
    python3 testdata/ct_goldens/make_goldens.py            # (re)write the goldens
    python3 testdata/ct_goldens/make_goldens.py --check    # regenerate in memory, compare bytes

Writes, for each model dtype D in {bf16, fp16, fp32}:
    testdata/ct_goldens/D/input.safetensors       the unquantized weights (generated, fixed seed)
    testdata/ct_goldens/D/<scheme>.safetensors    exactly the tensors compressed-tensors puts in
                                                  the checkpoint for those weights

Every numeric step is compressed-tensors' own code, in the order llm-compressor's data-free
entry point `model_free_ptq` uses it (llm-compressor src/llmcompressor/entrypoints/model_free/
process.py::process_file and lifecycle.py), run on the CPU:
  1. torch.nn.Linear(in, out, bias=False, dtype=weight dtype); weight copied in
  2. ct initialize_module_for_quantization(module, scheme, force_zero_point=False)
  3. weight observer: llm-compressor forces "memoryless_minmax" for weights; its forward is
     flatten_for_calibration (llm-compressor observers/helpers.py::_flatten_weight, re-stated
     below in ~15 lines because llm-compressor itself is not installed: it pins older torch /
     transformers / compressed-tensors) then torch.amin / torch.amax over dims (0, -1)
  4. ct calculate_qparams(min_vals, max_vals, scheme.weights)
  5. ct update_offload_parameter(module, "weight_scale", scale)  (llm-compressor update_qparams)
  6. module.quantization_status = FROZEN  (llm-compressor freeze_module_quantization)
  7. ct compress_module(module)  -> NaiveQuantizationCompressor / PackedQuantizationCompressor
     .compress -> ct quantize(...) (-> _process_quantization -> _quantize eager path on CPU)
     and pack_to_int32 for pack-quantized
  8. module.state_dict(prefix="<name minus .weight>.")
Only the weight-side tensors are kept (weight / weight_packed / weight_scale / weight_shape /
weight_zero_point); static-activation schemes also get an uninitialised `input_scale` from
step 2, which is dropped here (model_free_ptq refuses static activations altogether).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save, save_file

from compressed_tensors.compressors import compress_module
from compressed_tensors.offload import update_offload_parameter
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationScheme,
    QuantizationStatus,
    QuantizationStrategy,
)
from compressed_tensors.quantization.utils import (
    calculate_qparams,
    maybe_pad_tensor_for_block_quant,
    strategy_cdiv,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import golden_util as gu  # noqa: E402

SEED = 20260806

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _args(**kw) -> QuantizationArgs:
    return QuantizationArgs(symmetric=True, dynamic=False, **kw)


def _scheme(weights: QuantizationArgs, inputs: QuantizationArgs | None) -> QuantizationScheme:
    return QuantizationScheme(targets=["Linear"], weights=weights, input_activations=inputs)


def make_schemes() -> dict[str, tuple[QuantizationScheme, str]]:
    """qtool scheme name -> (fresh ct QuantizationScheme, compressed-tensors format expected)."""
    f8 = dict(num_bits=8, type="float")
    i8 = dict(num_bits=8, type="int")
    dyn_f8_token = QuantizationArgs(**f8, strategy="token", symmetric=True, dynamic=True)
    dyn_i8_token = QuantizationArgs(**i8, strategy="token", symmetric=True, dynamic=True)
    return {
        "fp8-static": (
            _scheme(_args(**f8, strategy="tensor"),
                    _args(**f8, strategy="tensor", observer="static_minmax")),
            "float-quantized"),
        "fp8-dynamic": (_scheme(_args(**f8, strategy="channel"), dyn_f8_token), "float-quantized"),
        "fp8-w8a16": (_scheme(_args(**f8, strategy="channel"), None), "naive-quantized"),
        "fp8-block": (
            _scheme(_args(**f8, strategy="block", block_structure=[128, 128]),
                    QuantizationArgs(**f8, strategy="group", group_size=128, symmetric=True,
                                     dynamic=True)),
            "float-quantized"),
        "int8-dynamic": (_scheme(_args(**i8, strategy="channel"), dyn_i8_token), "int-quantized"),
        "int8-static": (_scheme(_args(**i8, strategy="channel"), _args(**i8, strategy="tensor")),
                        "int-quantized"),
        "w8a16": (_scheme(_args(**i8, strategy="channel"), None), "pack-quantized"),
        "w4a16": (_scheme(_args(num_bits=4, type="int", strategy="group", group_size=128), None),
                  "pack-quantized"),
    }


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def make_inputs_f32() -> dict[str, np.ndarray]:
    """The weights as float32 arrays; every value in rows marked 'exact' is exact in bf16/fp16."""
    rng = np.random.default_rng(SEED)
    w = {}

    # a: Gaussian sigma 0.02 with three outlier columns (x20), like activation-outlier layers.
    a = rng.normal(0.0, 0.02, size=(64, 256)).astype(np.float32)
    a[:, [3, 100, 201]] *= 20.0
    w["a.weight"] = a

    # b: out = 136 is not a multiple of 128 (block rows padded: second block has 8 real rows).
    w["b.weight"] = rng.normal(0.0, 0.05, size=(136, 256)).astype(np.float32)

    # c: zeros, signed zeros and hand-picked tie cases (all values exact in bf16 and fp16).
    c = rng.normal(0.0, 0.02, size=(32, 256)).astype(np.float32)
    c[:, 128:256] = 0.0                        # an all-zero 128-column group / 128x128 block
    c[7, :] = 0.0                              # an all-zero row (per-channel eps scale)
    c[9, 128:136] = -0.0                       # exact -0.0 inside the zero block / group
    c[10, [5, 17, 40]] = -0.0                  # exact -0.0 in an ordinary row
    c[11, :] = 0.0                             # libquant/NUMERICS.md §8 P1 row (amax 3.5)
    c[11, :8] = [-3.5, 1.0, 0.25, 2.0, -0.001, 0.0, 3.0, -1.1]
    c[12, :] = 0.0                             # P2 / D2 row (amax 1.0)
    c[12, :6] = [1.0, -1.0, 0.5, 0.25, 0.1, 0.003]
    c[13, :] = 0.0                             # C1 row 0
    c[13, :4] = [0.5, -0.25, 0.125, 0.0625]
    c[14, :] = 0.0                             # C1 row 1 (INT8 7.5 -> 96 double rounding)
    c[14, :4] = [10.0, -3.0, 7.5, 1.0]
    c[15, :] = 0.0                             # D1 row: amax 255 -> INT8 scale 2.0
    c[15, :8] = [-255.0, 255.0, 1.0, 3.0, 5.0, -5.0, 100.0, -0.5]
    c[16, :] = 0.0                             # D4 row: amax 378 -> FP8 scale 0.84375
    c[16, :3] = [378.0, 1.0, -1.0]
    c[17, 200] = 1e-4                          # a lone tiny value in the zero block
    c[18, :] *= 0.01                           # small amax: fp16 scales become subnormal
    w["c.weight"] = c

    # d: in = 320 is not a multiple of 128 (block columns padded; w4a16 cannot group it).
    w["d.weight"] = rng.normal(0.0, 0.03, size=(16, 320)).astype(np.float32)

    # e: an all-zero tensor (per-tensor eps scale), half of it -0.0.
    e = np.zeros((8, 128), dtype=np.float32)
    e[4:, :] = -0.0
    w["e.weight"] = e
    return w


def make_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    # torch's f32 -> bf16/fp16 casts round to nearest even; the stored bytes are the input.
    return {k: torch.from_numpy(v).to(dtype).contiguous() for k, v in make_inputs_f32().items()}


# ---------------------------------------------------------------------------------------------
# The model-free path, one tensor at a time
# ---------------------------------------------------------------------------------------------

def flatten_weight(value: torch.Tensor, args: QuantizationArgs) -> torch.Tensor:
    """llm-compressor observers/helpers.py::_flatten_weight: (1, *qparam_shape, group_elems)."""
    s = args.strategy
    if s == QuantizationStrategy.TENSOR:
        return value.reshape((1, 1, -1))
    if s == QuantizationStrategy.CHANNEL:
        return value.unsqueeze(-2).unsqueeze(0)
    if s in (QuantizationStrategy.GROUP, QuantizationStrategy.TENSOR_GROUP):
        return value.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
    if s == QuantizationStrategy.BLOCK:
        bh, bw = args.block_structure
        value = maybe_pad_tensor_for_block_quant(value, args.block_structure)
        rows, cols = value.shape
        br = strategy_cdiv(rows, bh, s, strict=True)
        bc = strategy_cdiv(cols, bw, s, strict=True)
        return value.reshape(br, bh, bc, bw).transpose(1, 2).flatten(-2, -1).unsqueeze(0)
    raise ValueError(f"strategy {s} not used for weights here")


def can_quantize(weight: torch.Tensor, args: QuantizationArgs) -> str | None:
    """model_free's validate_weight_for_quantization: None if fine, else the reason."""
    try:
        flatten_weight(weight, args)
    except Exception as exc:  # noqa: BLE001 - the reason is recorded, not hidden
        return f"{type(exc).__name__}: {exc}"
    return None


@torch.no_grad()
def quantize_tensor(name: str, weight: torch.Tensor, scheme: QuantizationScheme,
                    expect_format: str | None = None) -> dict[str, torch.Tensor]:
    """The model-free path for one 2-D weight; returns the checkpoint tensors, named
    '<name minus .weight>.<param>'. expect_format: fail unless ct picks this format."""
    module = gu.quant_linear(weight, scheme)

    # memoryless_minmax observer (llm-compressor observers/min_max.py::_get_min_max)
    observed = flatten_weight(module.weight, scheme.weights)
    min_vals = torch.amin(observed, dim=(0, -1))
    max_vals = torch.amax(observed, dim=(0, -1))
    scale, zero_point = calculate_qparams(min_vals, max_vals, scheme.weights)
    update_offload_parameter(module, "weight_scale", scale)
    if hasattr(module, "weight_zero_point"):
        update_offload_parameter(module, "weight_zero_point", zero_point)
    module.quantization_status = QuantizationStatus.FROZEN

    compress_module(module)
    got_format = scheme.format.value
    if expect_format is not None and got_format != expect_format:
        raise RuntimeError(f"{name}: compressed-tensors chose {got_format}, expected {expect_format}")

    return gu.weight_tensors(module, name)


def build_all() -> tuple[dict[str, dict[str, bytes]], list[str]]:
    """{dtype: {file name: safetensors bytes}}, plus notes (skips)."""
    files: dict[str, dict[str, bytes]] = {}
    notes: list[str] = []
    for dname, dtype in DTYPES.items():
        inputs = make_inputs(dtype)
        files[dname] = {"input.safetensors": save(inputs)}
        for sname in make_schemes():
            out: dict[str, torch.Tensor] = {}
            for tname, w in inputs.items():
                scheme, fmt = make_schemes()[sname]  # fresh objects: compress sets .format
                reason = can_quantize(w, scheme.weights)
                if reason is not None:
                    notes.append(f"{dname}/{sname}: skipped {tname} {list(w.shape)} ({reason})")
                    continue
                out.update(quantize_tensor(tname, w, scheme, fmt))
            files[dname][f"{sname}.safetensors"] = save(out)
    return files, notes


def main() -> int:
    check = gu.start_ct(__doc__.split("\n")[0])
    files, notes = build_all()
    for n in sorted(set(notes)):
        print("note:", n, file=sys.stderr)
    return gu.write_or_check(gu.in_folders(HERE, files), check, HERE)


if __name__ == "__main__":
    sys.exit(main())
