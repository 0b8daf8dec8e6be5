#!/usr/bin/env python3
"""Writes the tiny Llama GGUF files read by tests/test_convert.cpp and tests/python/test_convert_tiny.py.

Each file is what llama.cpp's convert_hf_to_gguf.py would write for a tiny Hugging Face Llama
checkpoint, made here with the reference writer (gguf-py's GGUFWriter) from seeded HF-layout
weights. Next to it, <name>.expected.safetensors holds those HF-layout weights (float32, HF names),
i.e. what `qtool convert <name>.gguf --dtype f32` must give back:

  * q_proj / k_proj weights and biases are stored in the GGUF permuted as llama.cpp does
    (permute() below: rows of each head regrouped from HF's [half, half] rotate_half order to
    interleaved pairs). The expected file holds the un-permuted (original) rows.
  * Quantized tensors (Q8_0, Q4_0, Q4_1) are quantized row by row along ne[0], which commutes
    with a row permutation, so the expected values are gguf.quants.dequantize(quantize(W_hf)):
    no un-permutation is computed here.

Files:
  tiny_gpt2.gguf   byte-level BPE vocabulary ("gpt2", pre-tokenizer "smollm") trained below on
                   TEXT: 3 control tokens (<|endoftext|>, <|im_start|>, <|im_end|>), the 256 byte
                   symbols, 40 merges, one user-defined token "<think>"; chat template; untied
                   lm_head; q/k/v/o biases; Q8_0, Q4_0, Q4_1, F16, F32 tensors.
  tiny_spm.gguf    SentencePiece BPE vocabulary ("llama"): <unk>, <s>, </s>, the 256 <0xXX> byte
                   tokens, characters and 40 merged pieces with scores; add_bos_token true; tied
                   embeddings (no output.weight); rope_freqs.weight holding Llama-3 RoPE factors
                   (factor 8, low 1, high 4, original context 8192) computed with the formula of
                   convert_hf_to_gguf.py (rope_factors() below).
Both: hidden 32, 4 heads of 8, 2 KV heads, intermediate 32, 2 layers, context 128.

Usage: pip install gguf==0.19.0 numpy regex safetensors; python3 testdata/convert/make_tiny_gguf.py
Output is deterministic (seeded numpy; no timestamps).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import regex

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent
HIDDEN, HEADS, KV_HEADS, INTER, LAYERS, CTX = 32, 4, 2, 32, 2, 128
HEAD_DIM = HIDDEN // HEADS

TEXT = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs "
    "into the forest. In 2024 there were 365 days and 12 months; the year before had 365 too. "
    "Models read text as tokens: the tokenizer splits words into pieces and the pieces into bytes "
    "when nothing else fits. Hello, world! Hello again, small model."
)
N_MERGES = 40


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF rotate_half row order -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (printable Latin-1 bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def train_bpe(words: list[tuple[str, ...]], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE: merge the most frequent adjacent pair (ties: smallest pair) n_merges times."""
    counts = Counter(words)
    merges = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, c in counts.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        new = Counter()
        for w, c in counts.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        counts = new
    return merges


def gpt2_vocab():
    b2u = bytes_to_unicode()
    gpt2_re = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    pieces = []
    for part in regex.split(r"(\p{N})", TEXT):  # smollm: digits isolated first
        pieces += regex.findall(gpt2_re, part)
    words = [tuple(b2u[b] for b in p.encode("utf-8")) for p in pieces]
    merges = train_bpe(words, N_MERGES)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [b2u[b] for b in range(256)]
    for a, b in merges:
        tokens.append(a + b)
    tokens.append("<think>")
    types = [3, 3, 3] + [1] * (256 + len(merges)) + [4]
    return tokens, types, [f"{a} {b}" for a, b in merges]


def spm_vocab():
    words = [tuple("\u2581" + w) for w in TEXT.split(" ")]
    merges = train_bpe(words, N_MERGES)
    chars = sorted({c for w in words for c in w})
    pieces = [a + b for a, b in merges]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * (3 + 256)
    # Merged pieces first, best (earliest) merge highest, then the single characters; every score
    # distinct, as in a SentencePiece BPE model.
    for i, p in enumerate(pieces):
        if p in tokens:
            continue
        tokens.append(p)
        types.append(1)
        scores.append(-float(i))
    for j, c in enumerate(chars):
        if c in tokens:
            continue
        tokens.append(c)
        types.append(1)
        scores.append(-float(1000 + j))
    return tokens, types, scores


def rope_factors(theta: float, dim: int, factor=8.0, low=1.0, high=4.0, old_ctx=8192) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (rope_type llama3)."""
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write(name: str, tokenizer: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(OUT / f"{name}.gguf", arch="llama")
    w.add_name(name)
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    expected: dict[str, np.ndarray] = {}

    if tokenizer == "gpt2":
        tokens, types, merges = gpt2_vocab()
        w.add_rope_freq_base(500000.0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_pad_token_id(0)
        w.add_eot_token_id(0)
        w.add_add_bos_token(False)
        w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
        tied, biases = False, True
    else:
        tokens, types, scores = spm_vocab()
        w.add_rope_freq_base(10000.0)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        tied, biases = True, False
    vocab = len(tokens)
    w.add_vocab_size(vocab)

    def add(gguf_name: str, hf_name: str, data: np.ndarray, qtype: T, n_head: int = 0) -> None:
        data = data.astype(np.float32)
        stored = permute(data, n_head) if n_head else data
        if qtype in (T.F32, T.F16):
            raw = stored.astype(np.float32 if qtype == T.F32 else np.float16)
            w.add_tensor(gguf_name, raw)
            expected[hf_name] = data.astype(raw.dtype).astype(np.float32)  # casts commute with permute
        else:
            w.add_tensor(gguf_name, quantize(stored, qtype), raw_dtype=qtype)
            # Row-wise quantization commutes with the row permutation.
            expected[hf_name] = dequantize(quantize(data, qtype), qtype).astype(np.float32)

    normal = lambda *shape: rng.normal(0, 0.05, size=shape)
    add("token_embd.weight", "model.embed_tokens.weight", normal(vocab, HIDDEN), T.Q8_0)
    q_rows, kv_rows = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for l in range(LAYERS):
        p, h = f"blk.{l}.", f"model.layers.{l}."
        add(p + "attn_norm.weight", h + "input_layernorm.weight", 1 + normal(HIDDEN), T.F32)
        add(p + "attn_q.weight", h + "self_attn.q_proj.weight", normal(q_rows, HIDDEN), T.Q8_0 if l == 0 else T.F16, HEADS)
        add(p + "attn_k.weight", h + "self_attn.k_proj.weight", normal(kv_rows, HIDDEN), T.Q4_1 if l == 0 else T.F32, KV_HEADS)
        add(p + "attn_v.weight", h + "self_attn.v_proj.weight", normal(kv_rows, HIDDEN), T.Q4_0)
        add(p + "attn_output.weight", h + "self_attn.o_proj.weight", normal(HIDDEN, q_rows), T.Q8_0)
        if biases:
            add(p + "attn_q.bias", h + "self_attn.q_proj.bias", normal(q_rows), T.F32, HEADS)
            add(p + "attn_k.bias", h + "self_attn.k_proj.bias", normal(kv_rows), T.F32, KV_HEADS)
            add(p + "attn_v.bias", h + "self_attn.v_proj.bias", normal(kv_rows), T.F32)
            add(p + "attn_output.bias", h + "self_attn.o_proj.bias", normal(HIDDEN), T.F32)
        add(p + "ffn_norm.weight", h + "post_attention_layernorm.weight", 1 + normal(HIDDEN), T.F32)
        add(p + "ffn_gate.weight", h + "mlp.gate_proj.weight", normal(INTER, HIDDEN), T.Q4_1)
        add(p + "ffn_up.weight", h + "mlp.up_proj.weight", normal(INTER, HIDDEN), T.F16)
        add(p + "ffn_down.weight", h + "mlp.down_proj.weight", normal(HIDDEN, INTER), T.Q8_0)
    add("output_norm.weight", "model.norm.weight", 1 + normal(HIDDEN), T.F32)
    if not tied:
        add("output.weight", "lm_head.weight", normal(vocab, HIDDEN), T.F16)
    if tokenizer == "llama":
        w.add_tensor("rope_freqs.weight", rope_factors(10000.0, HEAD_DIM))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(expected.items())}, OUT / f"{name}.expected.safetensors")


if __name__ == "__main__":
    write("tiny_gpt2", "gpt2", seed=1)
    write("tiny_spm", "llama", seed=2)
