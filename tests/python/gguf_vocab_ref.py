"""A plain reference of how llama.cpp tokenizes with a GGUF vocabulary, for checking the
tokenizer.json that `qtool convert` rebuilds when llama-cpp-python is not installed.

Written from llama.cpp's description of its tokenizers (src/llama-vocab.cpp):
  * special tokens (CONTROL, USER_DEFINED, UNKNOWN types) are cut out of the raw text first,
    longest first (tokenizer_st_partition, with parse_special);
  * "gpt2" (byte-level BPE): each remaining fragment is split by the pre-tokenizer's regexes in
    turn (matches and the text between them both become pieces), every piece is spelled in the
    GPT-2 byte alphabet and merged pair by pair, always the adjacent pair of lowest merge rank,
    leftmost on ties (llm_tokenizer_bpe_session); with ignore_merges a piece that is itself a
    token is taken whole;
  * "llama" (SentencePiece): a space is put before a fragment at the start or after a special
    token (add_space_prefix), spaces become U+2581, then the adjacent pair whose concatenation is
    a token with the highest score is merged, leftmost on ties (llm_tokenizer_spm); a symbol that
    is not a token becomes its UTF-8 bytes' <0xXX> tokens.
Vocabulary data is read with gguf-py (the package llama.cpp's Python side uses).
"""
from __future__ import annotations

import regex

import gguf

SP = "\u2581"


def read_vocab(path) -> dict:
    r = gguf.GGUFReader(str(path))

    def get(key, default=None):
        f = r.fields.get(key)
        return f.contents() if f is not None else default

    return {
        "model": get("tokenizer.ggml.model"),
        "pre": get("tokenizer.ggml.pre", "default"),
        "tokens": get("tokenizer.ggml.tokens"),
        "types": get("tokenizer.ggml.token_type"),
        "scores": get("tokenizer.ggml.scores"),
        "merges": get("tokenizer.ggml.merges", []),
        "add_space_prefix": get("tokenizer.ggml.add_space_prefix", True),
    }


def _bytes_to_unicode() -> dict[int, str]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_REGEXES = {"smollm": [r"\p{N}", GPT2_RE], "gpt-2": [GPT2_RE]}


class Reference:
    def __init__(self, path):
        v = read_vocab(path)
        self.model = v["model"]
        self.tokens = list(v["tokens"])
        self.types = list(v["types"]) if v["types"] is not None else [1] * len(self.tokens)
        self.scores = list(v["scores"]) if v["scores"] is not None else [0.0] * len(self.tokens)
        self.ids = {}
        for i, t in enumerate(self.tokens):
            self.ids.setdefault(t, i)
        self.specials = sorted({t for t, ty in zip(self.tokens, self.types) if ty in (2, 3, 4)}, key=len, reverse=True)
        self.add_space_prefix = v["add_space_prefix"]
        if self.model == "gpt2":
            self.ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(v["merges"])}
            if v["pre"] not in PRE_REGEXES:
                raise ValueError(f"reference has no regexes for pre-tokenizer {v['pre']!r}")
            self.regexes = PRE_REGEXES[v["pre"]]
            self.b2u = _bytes_to_unicode()

    # ---- special tokens ----
    def _fragments(self, text: str):
        frags = [(False, text)]
        for sp in self.specials:
            out = []
            for is_special, s in frags:
                if is_special:
                    out.append((True, s))
                    continue
                parts = s.split(sp)
                for k, p in enumerate(parts):
                    if p:
                        out.append((False, p))
                    if k + 1 < len(parts):
                        out.append((True, sp))
            frags = out
        return frags

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        prev_special = True
        for is_special, frag in self._fragments(text):
            if is_special:
                ids.append(self.ids[frag])
                prev_special = True
                continue
            if self.model == "gpt2":
                ids += self._gpt2(frag)
            else:
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                ids += self._spm(frag.replace(" ", SP))
            prev_special = False
        return ids

    # ---- byte-level BPE ----
    def _pieces(self, text: str) -> list[str]:
        pieces = [text]
        for rx in self.regexes:
            out = []
            for p in pieces:
                pos = 0
                for m in regex.finditer(rx, p):
                    if m.start() > pos:
                        out.append(p[pos:m.start()])
                    if m.end() > m.start():
                        out.append(m.group())
                    pos = m.end()
                if pos < len(p):
                    out.append(p[pos:])
            pieces = out
        return pieces

    def _gpt2(self, text: str) -> list[int]:
        ids = []
        for piece in self._pieces(text):
            syms = [self.b2u[b] for b in piece.encode("utf-8")]
            while len(syms) > 1:
                best = None
                for i in range(len(syms) - 1):
                    r = self.ranks.get((syms[i], syms[i + 1]))
                    if r is not None and (best is None or r < best[0]):
                        best = (r, i)
                if best is None:
                    break
                i = best[1]
                syms[i:i + 2] = [syms[i] + syms[i + 1]]
            ids += [self.ids[s] for s in syms]
        return ids

    # ---- SentencePiece ----
    def _spm(self, text: str) -> list[int]:
        syms = list(text)
        while len(syms) > 1:
            best = None
            for i in range(len(syms) - 1):
                t = syms[i] + syms[i + 1]
                if t in self.ids:
                    s = self.scores[self.ids[t]]
                    if best is None or s > best[0]:
                        best = (s, i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        ids = []
        for s in syms:
            if s in self.ids:
                ids.append(self.ids[s])
            else:
                ids += [self.ids[f"<0x{b:02X}>"] for b in s.encode("utf-8")]
        return ids
