"""One compressed-tensors release against qtool outputs: run inside that release's venv.

Usage: python ct_compat_check.py VARIANT=DIR [VARIANT=DIR ...]
  Each DIR holds one sub-folder per qtool scheme (a quantized tiny model). For every variant,
  scheme and check it prints one JSON line:
    {"release": ..., "transformers": ..., "variant": ..., "scheme": ..., "check": ..., "result": ...}
  result is "ok", "ok (...)" with a detail, "n/a (...)" or the first line of the error.
Checks:
  validate  QuantizationConfig.model_validate(config.json's quantization_config); the detail
            says the per-group `format` the release ends up with (None = not set)
  dequant   the model-free dequantizer of the release: CompressedTensorsDequantizer(dir).validate
            on all tensors (compressed-tensors >= 0.14-ish), else
            ModelCompressor.from_pretrained(dir) + decompress into a dense model built from the
            config; every output tensor finite
  hf        transformers AutoModelForCausalLM.from_pretrained(dir) + one forward, finite logits
Called by scripts/ct_compat.sh; not part of the default test suite.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import traceback
from importlib.metadata import version

import torch

CT = version("compressed-tensors")
TF = version("transformers")
# CT_CHECKS="validate dequant" runs a subset (default: all three)
CHECKS = os.environ.get("CT_CHECKS", "validate dequant hf").split()


def first_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return text[:300]


def emit(variant, scheme, check, result):
    print(json.dumps(dict(release=CT, transformers=TF, variant=variant, scheme=scheme,
                          check=check, result=result)), flush=True)


def load_all(d):
    from safetensors.torch import load_file
    t = {}
    for f in sorted(glob.glob(f"{d}/*.safetensors")):
        t.update(load_file(f))
    return t


def check_validate(d):
    from compressed_tensors.quantization import QuantizationConfig
    qc = json.load(open(f"{d}/config.json"))["quantization_config"]
    cfg = QuantizationConfig.model_validate(qc)
    fmts = sorted({str(getattr(s, "format", "<no field>")) for s in cfg.config_groups.values()})
    return f"ok (group format: {','.join(fmts)})"


def check_dequant(d):
    try:
        from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (
            CompressedTensorsDequantizer)
    except ImportError:
        CompressedTensorsDequantizer = None
    if CompressedTensorsDequantizer is not None:
        # the dequantizer restores weights only; activation scales of static schemes
        # (input_scale) are not its business and its validate() counts them as orphans
        tensors = {k: v for k, v in load_all(d).items() if not k.endswith(".input_scale")}
        dq = CompressedTensorsDequantizer(d, dtype=torch.float32)
        out = dq.validate(dict(tensors))  # 0.20 returns the tensors, 0.17 only checks
        if not isinstance(out, dict):
            out = dq.process(dict(tensors))
        bad = [k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            return f"non-finite after dequant: {bad[:3]}"
        return "ok (CompressedTensorsDequantizer)"
    # older releases: ModelCompressor decompresses into a dense model
    import transformers
    from compressed_tensors.compressors import ModelCompressor
    if not hasattr(ModelCompressor, "from_pretrained"):
        return ("n/a (this release has neither CompressedTensorsDequantizer nor "
                "ModelCompressor.from_pretrained)")
    mc = ModelCompressor.from_pretrained(d)
    if mc is None:
        return "ModelCompressor.from_pretrained returned None"
    conf = transformers.AutoConfig.from_pretrained(d)
    if hasattr(conf, "quantization_config"):
        del conf.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(conf, torch_dtype=torch.float32)
    mc.decompress(model_path=d, model=model)
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        return f"non-finite after decompress: {bad[:3]}"
    return "ok (ModelCompressor.decompress)"


def check_hf(d):
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(d)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4, 5]])).logits
    if not torch.isfinite(logits.float()).all():
        return "non-finite logits"
    return "ok"


def main(argv):
    if not argv or any("=" not in a for a in argv):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    torch.manual_seed(0)
    for arg in argv:
        variant, root = arg.split("=", 1)
        for d in sorted(glob.glob(f"{root}/*/config.json")):
            d = d.rsplit("/", 1)[0]
            scheme = d.rsplit("/", 1)[1]
            for name, fn in (("validate", check_validate), ("dequant", check_dequant),
                             ("hf", check_hf)):
                if name not in CHECKS:
                    continue
                try:
                    res = fn(d)
                except Exception as e:  # the error text is the result
                    res = first_line(e)
                    if "CT_COMPAT_TRACE" in os.environ:
                        traceback.print_exc()
                emit(variant, scheme, name, res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
