"""`qtool convert` read back by the real clients, on small inputs (no large download).

  * testdata/convert/tiny_gpt2.gguf and tiny_spm.gguf (make_tiny_gguf.py): the rebuilt
    tokenizer.json gives llama.cpp's ids, through the `tokenizers` package and through
    transformers' AutoTokenizer; llama.cpp's are taken from llama-cpp-python when installed, and
    always from the plain reference in gguf_vocab_ref.py. transformers loads the converted folder.
  * --dequantize of every data-free scheme: the dense weights equal compressed-tensors' own
    decompression (CompressedTensorsDequantizer) of the quantized folder, in BF16.
  * legacy fp8 -> compressed-tensors: compressed-tensors validates the config and decompresses
    the result to code x scale of the AutoFP8 checkpoint written here with safetensors.

Skipped when QTOOL_BINARY is unset or a package is missing.
"""
from __future__ import annotations

import json

import pytest

import qtool_support as qs

torch, transformers, tokenizers = qs.convert_test_packages()
from safetensors.torch import load_file, save_file  # noqa: E402

pytestmark = qs.needs_qtool
DATA = qs.REPO / "testdata" / "convert"

TEXTS = [
    "Hello, world! The fox 2024",
    "The quick brown fox jumps over the lazy dog.",
    "  multiple   spaces\t\ttabs\n\nnewlines ",
    "Café déjà vu — naïve 🙂 日本",
    "<s>hi</s> <|im_start|>x<|im_end|> <think>why</think>",
    " leading space",
    "pieces into bytes when nothing else fits",
    "zzzqqq xyz 1234567890",
    "",
]


def _qtool(*args: str):
    proc = qs.run(*args, timeout=300)
    assert proc.returncode == 0, f"qtool {' '.join(args)}: {proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module", params=["tiny_gpt2", "tiny_spm"])
def converted_tiny(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "hf"
    _qtool("convert", str(DATA / f"{request.param}.gguf"), "-o", str(out))
    return DATA / f"{request.param}.gguf", out


def test_tiny_tokenizer_ids_equal_llama_cpp(converted_tiny):
    src, out = converted_tiny
    tk, hf, ref, llama = qs.tokenizers_to_compare(src, out)
    bos = json.loads((out / "tokenizer_config.json").read_text())["add_bos_token"]
    for text in TEXTS:
        ids = tk.encode(text, add_special_tokens=False).ids
        assert ids == ref.encode(text), f"{src.name} {text!r}: tokenizer.json {ids} vs reference {ref.encode(text)}"
        assert hf(text, add_special_tokens=False)["input_ids"] == ids, text
        with_special = tk.encode(text).ids
        assert with_special == ([1] if bos else []) + ids, text
        if llama is not None:
            for add in (False, True):
                want = llama.tokenize(text.encode("utf-8"), add_bos=add, special=True)
                got = tk.encode(text, add_special_tokens=add).ids
                assert got == want, f"{src.name} {text!r} (bos {add}): tokenizer.json {got} vs llama.cpp {want}"


def test_tiny_folder_loads_in_transformers(converted_tiny):
    _, out = converted_tiny
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok("Hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[-1] == model.config.vocab_size
    assert torch.isfinite(logits).all()


# ---- dequantize vs compressed-tensors ------------------------------------------------------------

DATA_FREE = ["fp8-dynamic", "fp8-block", "int8-dynamic", "w8a16", "w4a16", "fp8-w8a16"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny") / "model"
    _qtool("tiny-model", str(d))
    return d


@pytest.mark.parametrize("scheme", DATA_FREE)
def test_dequantize_equals_compressed_tensors_decompression(scheme, tiny_model, tmp_path):
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    q, deq = tmp_path / "q", tmp_path / "deq"
    _qtool("quantize", str(tiny_model), "-o", str(q), "--scheme", scheme)
    _qtool("convert", str(q), "-o", str(deq), "--dequantize")
    qt = load_file(q / "model.safetensors")
    ref = CompressedTensorsDequantizer(str(q), dtype=torch.float32).validate(dict(qt))
    ours = load_file(deq / "model.safetensors")
    orig = load_file(tiny_model / "model.safetensors")
    assert sorted(ours) == sorted(orig)
    assert ref, "compressed-tensors dequantized nothing"
    for name, t in ours.items():
        assert t.dtype == torch.bfloat16, name
        if name in ref:
            assert torch.equal(t, ref[name].to(torch.bfloat16)), f"{scheme}: {name} differs from compressed-tensors"
        else:
            assert torch.equal(t, orig[name]), name
    assert "quantization_config" not in json.loads((deq / "config.json").read_text())


# ---- legacy fp8 -> compressed-tensors ----------------------------------------------------------

def test_legacy_fp8_converts_to_a_checkpoint_compressed_tensors_reads(tiny_model, tmp_path):
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer
    from compressed_tensors.quantization import QuantizationConfig

    # An AutoFP8-style per-tensor checkpoint: FP8 codes, F32 scalar scales, dynamic activations.
    orig = load_file(tiny_model / "model.safetensors")
    legacy, codes = {}, {}
    for name, w in orig.items():
        if ".layers." in name and name.endswith("_proj.weight"):
            scale = w.float().abs().max() / 448
            q = (w.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
            legacy[name] = q
            legacy[name.removesuffix("weight") + "weight_scale"] = scale.reshape(())
            codes[name] = (q, scale)
        else:
            legacy[name] = w
    src = tmp_path / "legacy"
    src.mkdir()
    save_file(legacy, src / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((tiny_model / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic", "ignored_layers": ["lm_head"]}
    (src / "config.json").write_text(json.dumps(cfg))

    out = tmp_path / "ct"
    _qtool("convert", str(src), "-o", str(out), "--format", "compressed-tensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    QuantizationConfig.model_validate(qc)  # compressed-tensors' own validation
    assert qc["config_groups"]["group_0"]["weights"]["strategy"] == "tensor"
    assert qc["config_groups"]["group_0"]["input_activations"]["dynamic"] is True
    got = load_file(out / "model.safetensors")
    dq = CompressedTensorsDequantizer(str(out), dtype=torch.float32).validate(dict(got))
    for name, (q, scale) in codes.items():
        assert torch.equal(got[name].view(torch.uint8), q.view(torch.uint8)), name
        assert tuple(got[name.removesuffix("weight") + "weight_scale"].shape) == (1,)
        assert torch.equal(dq[name], q.float() * scale), name
