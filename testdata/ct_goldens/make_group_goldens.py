#!/usr/bin/env python3
"""w4a16 goldens at group sizes 64 and 32 (qtool quantize --group-size), from the real
compressed-tensors package, by the same model-free path as make_goldens.py (whose inputs and
quantize_tensor() this script reuses unchanged).

Usage (from the repository root, in a venv with compressed-tensors, torch, safetensors):
    python3 testdata/ct_goldens/make_group_goldens.py            # write <dtype>/w4a16-g{64,32}.safetensors
    python3 testdata/ct_goldens/make_group_goldens.py --check    # regenerate in memory, compare bytes

Made with: llmcompressor 0.14.0.1's dependency set -- compressed-tensors 0.19.0, torch 2.14.0
(CPU), safetensors and numpy as pip resolved them (numpy 2.4.6), Python 3.11.7 -- in
/work/venvs/gptq-llmc (`pip install llmcompressor==0.14.*`). With the same venv,
`make_goldens.py --check` reproduces every committed group-128 golden byte for byte, so 0.19
and 0.20 agree on this arithmetic.

Every input weight is quantized, d.weight [16,320] included: 320 is a multiple of 64 and 32
(group 128 skips it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save

from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402

GROUPS = (64, 32)


def w4a16_scheme(group: int) -> QuantizationScheme:
    weights = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=group,
                               symmetric=True, dynamic=False)
    return QuantizationScheme(targets=["Linear"], weights=weights, input_activations=None)


def build() -> dict[str, dict[str, bytes]]:
    files: dict[str, dict[str, bytes]] = {}
    for dname, dtype in mg.DTYPES.items():
        inputs = mg.make_inputs(dtype)
        files[dname] = {}
        for g in GROUPS:
            out: dict[str, torch.Tensor] = {}
            for tname, w in inputs.items():
                scheme = w4a16_scheme(g)  # fresh: compress sets .format
                reason = mg.can_quantize(w, scheme.weights)
                if reason is not None:
                    raise RuntimeError(f"{dname}/{tname}: group {g} refused: {reason}")
                out.update(mg.quantize_tensor(tname, w, scheme, "pack-quantized"))
            files[dname][f"w4a16-g{g}.safetensors"] = save(out)
    return files


def main() -> int:
    check = mg.gu.start_ct(__doc__.split("\n")[0])
    return mg.gu.write_or_check(mg.gu.in_folders(mg.HERE, build()), check, mg.HERE)


if __name__ == "__main__":
    sys.exit(main())
