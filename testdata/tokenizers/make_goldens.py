#!/usr/bin/env python3
"""Golden token ids for tests/test_tokenizer.cpp, made with the Hugging Face `tokenizers` package.

Usage (from the repository root):
    python3 testdata/tokenizers/make_goldens.py [--tokenizers-dir ../shared/tokenizers]

Writes, next to this script:
  goldens_<name>.json   for name in llama2, llama3_1, qwen3, deepseek_v3: one case per corpus
                        line (plus the empty string first and the whole raw corpus file last),
                        each {"text", "ids" (add_special_tokens=False), "ids_special"
                        (add_special_tokens=True), "decoded" (decode(ids_special,
                        skip_special_tokens=False))}.
  goldens_variants.json the real files with parts replaced (Metaspace, GPT-2 ByteLevel, Digits,
                        Split behaviours, other normalizers, added-token flags, templates...),
                        ids (add_special_tokens=True) over a subset of the corpus lines.

Corpus format (corpus.txt): one case per line; inside a line `\\n`, `\\t`, `\\r`, `\\\\` and
`\\u{HEX}` are escapes (so a case can hold newlines and invisible characters); any other
backslash is literal.
"""
import argparse
import copy
import json
import pathlib
import re

import tokenizers
from tokenizers import Tokenizer

HERE = pathlib.Path(__file__).resolve().parent
NAMES = ["llama2", "llama3_1", "qwen3", "deepseek_v3"]

_ESC = re.compile(r"\\(n|t|r|\\|u\{([0-9A-Fa-f]{1,6})\})")


def decode_line(line: str) -> str:
    def sub(m):
        c = m.group(1)
        if c == "n":
            return "\n"
        if c == "t":
            return "\t"
        if c == "r":
            return "\r"
        if c == "\\":
            return "\\"
        return chr(int(m.group(2), 16))

    return _ESC.sub(sub, line)


def load_cases():
    raw = (HERE / "corpus.txt").read_text(encoding="utf-8")
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [""] + [decode_line(l) for l in lines] + [raw]


def load(path_or_obj):
    if isinstance(path_or_obj, dict):
        tok = Tokenizer.from_str(json.dumps(path_or_obj))
    else:
        tok = Tokenizer.from_file(str(path_or_obj))
    tok.no_truncation()
    tok.no_padding()
    return tok


def dump_compact(obj_head: dict, list_key: str, items: list, path: pathlib.Path):
    """Compact JSON with one list item per line (readable diffs, small files)."""
    head = json.dumps(obj_head, ensure_ascii=False, separators=(",", ":"))
    body = ",\n".join(json.dumps(x, ensure_ascii=False, separators=(",", ":")) for x in items)
    path.write_text(head[:-1] + f',"{list_key}":[\n' + body + "\n]}\n", encoding="utf-8")


LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
             " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def byte_level(add_prefix_space=False, use_regex=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True,
            "use_regex": use_regex}


def split(pattern, behavior, invert=False, kind="Regex"):
    return {"type": "Split", "pattern": {kind: pattern}, "behavior": behavior, "invert": invert}


def added(id_, content, **flags):
    tok = {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
           "normalized": False, "special": False}
    tok.update(flags)
    return tok


def variants():
    """(name, base, top-level replacements, model-key replacements, extra added tokens)."""
    sp_norm = [{"type": "Prepend", "prepend": "\u2581"},
               {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]
    v = []

    def add(name, base, set_=None, model_set=None, added_tokens_append=None):
        v.append({"name": name, "base": base, "set": set_ or {}, "model_set": model_set or {},
                  "added_tokens_append": added_tokens_append or []})

    # --- SentencePiece-style (llama2 base) ---
    add("metaspace_always_split", "llama2", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}})
    add("metaspace_first_nosplit", "llama2", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}})
    add("metaspace_never_split", "llama2", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True}})
    add("metaspace_legacy_add_prefix_space", "llama2", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}})
    add("llama2_nfkc_lowercase", "llama2", {"normalizer": {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"}] + sp_norm}})
    add("llama2_strip_replace_regex", "llama2", {"normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Strip", "strip_left": True, "strip_right": True},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}] + sp_norm}})
    add("llama2_no_byte_fallback", "llama2", model_set={"byte_fallback": False})
    add("llama2_no_byte_fallback_no_fuse", "llama2", model_set={"byte_fallback": False,
                                                                 "fuse_unk": False})
    add("llama2_eos_template", "llama2", {"post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                           "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}})
    add("llama2_added_flags", "llama2", added_tokens_append=[
        added(32000, "<mask>", lstrip=True),
        added(32001, "[SEP]", rstrip=True),
        added(32002, "<both>", lstrip=True, rstrip=True, special=True),
        added(32003, "world", single_word=True),
        added(32004, "quick", single_word=True, normalized=True),
    ])

    # --- ByteLevel family (llama3_1 base) ---
    add("gpt2_bytelevel_regex", "llama3_1", {"pre_tokenizer": byte_level(False, True)})
    add("gpt2_bytelevel_prefix", "llama3_1", {"pre_tokenizer": byte_level(True, True)})
    add("bytelevel_use_regex_missing", "llama3_1", {"pre_tokenizer": {
        "type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}})
    add("split_then_bytelevel_prefix", "llama3_1", {"pre_tokenizer": {
        "type": "Sequence", "pretokenizers": [split(LLAMA3_RE, "Isolated"), byte_level(True)]}})
    add("digits_individual", "llama3_1", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, byte_level(False, True)]}})
    add("digits_contiguous", "llama3_1", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False}, split(LLAMA3_RE, "Isolated"),
        byte_level()]}})
    add("split_removed_string", "llama3_1", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        split(" ", "Removed", kind="String"), byte_level()]}})
    add("split_merged_with_previous", "llama3_1", {"pre_tokenizer": {
        "type": "Sequence", "pretokenizers": [split("\\s+", "MergedWithPrevious"), byte_level()]}})
    add("split_merged_with_next", "llama3_1", {"pre_tokenizer": {
        "type": "Sequence", "pretokenizers": [split("[,.!?;:]", "MergedWithNext"), byte_level()]}})
    add("split_contiguous", "llama3_1", {"pre_tokenizer": {
        "type": "Sequence", "pretokenizers": [split("\\p{P}", "Contiguous"), byte_level()]}})
    add("split_invert_removed", "llama3_1", {"pre_tokenizer": {
        "type": "Sequence", "pretokenizers": [split("\\p{L}+", "Removed", invert=True),
                                              byte_level()]}})
    add("llama3_no_ignore_merges", "llama3_1", model_set={"ignore_merges": False})
    add("llama3_nfd", "llama3_1", {"normalizer": {"type": "NFD"}})
    add("llama3_nfkd", "llama3_1", {"normalizer": {"type": "NFKD"}})
    add("llama3_nfkc_lowercase_prepend", "llama3_1", {"normalizer": {
        "type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
                                            {"type": "Prepend", "prepend": " "}]}})
    add("llama3_added_flags", "llama3_1", {"normalizer": {"type": "NFKC"}}, added_tokens_append=[
        added(128256, "<mask>", lstrip=True),
        added(128257, "[SEP]", rstrip=True),
        added(128258, "<both>", lstrip=True, rstrip=True, special=True),
        added(128259, "world", single_word=True),
        added(128260, "quick", single_word=True, normalized=True),
        added(128261, "ＡＢＣ", normalized=True),
    ])
    add("llama3_no_post_processor", "llama3_1", {"post_processor": None})
    add("llama3_template_multi", "llama3_1", {"post_processor": {
        "type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "HDR", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": "<|eot_id|>", "type_id": 0}}],
             "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {
                 "HDR": {"id": "HDR", "ids": [128000, 128006],
                         "tokens": ["<|begin_of_text|>", "<|start_header_id|>"]},
                 "<|eot_id|>": {"id": "<|eot_id|>", "ids": [128009], "tokens": ["<|eot_id|>"]}}}]}})
    return v


def apply_variant(base: dict, var: dict) -> dict:
    obj = copy.deepcopy(base)
    obj.update(var["set"])
    obj["model"].update(var["model_set"])
    obj["added_tokens"] = obj["added_tokens"] + var["added_tokens_append"]
    return obj


# 1-based corpus.txt line numbers used for the variants (chosen to cover each feature).
VARIANT_LINES = [1, 2, 4, 5, 7, 8, 9, 12, 14, 15, 19, 20, 21, 25, 28, 32, 35, 36, 37, 40, 45, 47,
                 49, 51, 52, 53, 54, 63, 64, 65, 66, 67, 68, 70, 71, 72, 73, 74, 75, 76, 77, 78,
                 79, 80, 81, 87, 88, 89, 90, 93, 94, 95, 96, 97, 98, 107, 112, 137, 138, 140,
                 144, 166, 167, 168]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers-dir", default=str(HERE.parent.parent.parent / "shared" / "tokenizers"))
    args = ap.parse_args()
    tdir = pathlib.Path(args.tokenizers_dir)
    cases = load_cases()
    version = tokenizers.__version__

    for name in NAMES:
        tok = load(tdir / name / "tokenizer.json")
        items = []
        for text in cases:
            ids = tok.encode(text, add_special_tokens=False).ids
            ids_sp = tok.encode(text, add_special_tokens=True).ids
            items.append({"text": text, "ids": ids, "ids_special": ids_sp,
                          "decoded": tok.decode(ids_sp, skip_special_tokens=False)})
        out = HERE / f"goldens_{name}.json"
        dump_compact({"tokenizers_version": version, "tokenizer": name}, "cases", items, out)
        print(f"{out.name}: {len(items)} cases, {out.stat().st_size} bytes")

    raw_lines = (HERE / "corpus.txt").read_text(encoding="utf-8").split("\n")
    texts = [""] + [decode_line(raw_lines[n - 1]) for n in VARIANT_LINES]
    bases = {}
    items = []
    for var in variants():
        if var["base"] not in bases:
            bases[var["base"]] = json.loads((tdir / var["base"] / "tokenizer.json").read_text("utf-8"))
        tok = load(apply_variant(bases[var["base"]], var))
        var = dict(var)
        var["ids"] = [tok.encode(t, add_special_tokens=True).ids for t in texts]
        items.append(var)
    out = HERE / "goldens_variants.json"
    dump_compact({"tokenizers_version": version, "texts": texts}, "variants", items, out)
    print(f"{out.name}: {len(items)} variants x {len(texts)} texts, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
