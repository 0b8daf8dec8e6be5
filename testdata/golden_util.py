"""What the golden generators under testdata/ share: writing (or checking) their files, the
compressed-tensors model-free steps around one Linear, and llm-compressor's `oneshot` run into a
throw-away checkpoint.

The generators run from different virtualenvs (see each one's header), so this module imports only
the standard library at the top; torch, compressed-tensors, datasets and llm-compressor are
imported inside the functions that use them. A generator imports it through its own path:

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import golden_util as gu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


# ---------------------------------------------------------------------------------------------
# Writing the goldens, or comparing them with the committed files
# ---------------------------------------------------------------------------------------------

def check_option(description: str) -> bool:
    """Parses the generators' one option, --check; True when it was given."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and compare with the committed files")
    return ap.parse_args().check


def start_ct(description: str) -> bool:
    """The compressed-tensors generators' start: parses --check (returned), runs torch on one
    thread and prints the package versions on stderr."""
    import compressed_tensors
    import numpy as np
    import torch

    check = check_option(description)
    torch.set_num_threads(1)
    print(f"compressed-tensors {compressed_tensors.__version__}, torch {torch.__version__}, "
          f"numpy {np.__version__}", file=sys.stderr)
    return check


def write_or_check(files: dict[Path, bytes], check: bool, base: Path) -> int:
    """Writes every file (creating its folder), or with `check` compares each with the file on
    disk and names those that differ (relative to `base`). Returns the exit status."""
    bad = 0
    for p, blob in files.items():
        if check:
            if not p.exists() or p.read_bytes() != blob:
                print(f"DIFFERS: {p.relative_to(base)}", file=sys.stderr)
                bad += 1
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)
    if check:
        print("check:", "OK" if bad == 0 else f"{bad} file(s) differ", file=sys.stderr)
    return 1 if bad else 0


def write_json(path, obj, **dump_args) -> None:
    """json.dump(obj, **dump_args) into `path`, then a newline."""
    with open(path, "w") as f:
        json.dump(obj, f, **dump_args)
        f.write("\n")


def in_folders(base: Path, tree: dict[str, dict[str, bytes]]) -> dict[Path, bytes]:
    """{folder: {file name: bytes}} -> {base/folder/file name: bytes}."""
    return {base / d / f: blob for d, entries in tree.items() for f, blob in entries.items()}


# ---------------------------------------------------------------------------------------------
# compressed-tensors' model-free steps around one Linear
# ---------------------------------------------------------------------------------------------

def quant_linear(weight, scheme):
    """torch.nn.Linear(in, out, bias=False, dtype of the weight) holding a copy of `weight`, then
    ct initialize_module_for_quantization(module, scheme, force_zero_point=False)."""
    import torch
    from compressed_tensors.quantization import initialize_module_for_quantization

    out_f, in_f = weight.shape
    module = torch.nn.Linear(in_f, out_f, bias=False, dtype=weight.dtype)
    module.weight.data.copy_(weight)
    initialize_module_for_quantization(module, scheme, force_zero_point=False)
    return module


def weight_tensors(module, name: str) -> dict:
    """The module's state dict named '<name minus .weight>.<param>', without the activation-side
    parameters (input_* / output_*): the weight tensors of the checkpoint."""
    prefix = name.removesuffix(".weight") + "."
    return {k: v.detach().contiguous() for k, v in module.state_dict(prefix=prefix).items()
            if not k[len(prefix):].startswith(("input_", "output_"))}


# ---------------------------------------------------------------------------------------------
# llm-compressor
# ---------------------------------------------------------------------------------------------

def llmc_versions() -> str:
    """The versions line the llm-compressor generators print on stderr."""
    import compressed_tensors
    import llmcompressor
    import torch
    import transformers
    return (f"llmcompressor {llmcompressor.__version__}, compressed-tensors {compressed_tensors.__version__}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}")


def oneshot_checkpoint(model, ids: list[list[int]], recipe, seq_len: int) -> tuple[dict, dict]:
    """llm-compressor's `oneshot` on a tokenized dataset of `ids` (every mask 1; shuffle off,
    sequential pipeline), saved into a temporary folder: returns (every tensor of the compressed
    checkpoint, its config.json)."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from safetensors.torch import load_file

    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    out = tempfile.mkdtemp()
    try:
        oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(ids),
                max_seq_length=seq_len, shuffle_calibration_samples=False, pipeline="sequential",
                output_dir=out)
        tensors = {}
        for f in sorted(Path(out).glob("*.safetensors")):
            tensors.update(load_file(str(f)))
        cfg = json.loads((Path(out) / "config.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return tensors, cfg


def layer_tensors(tensors: dict, suffixes: tuple[str, ...]) -> dict:
    """The decoder-layer tensors (names with '.layers.') ending in one of `suffixes`."""
    return {k: v.contiguous() for k, v in tensors.items()
            if ".layers." in k and any(k.endswith(s) for s in suffixes)}
