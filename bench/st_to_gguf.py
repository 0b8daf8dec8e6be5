#!/usr/bin/env python3
"""Writes a llama-architecture BF16 GGUF holding the same tensors as a (sharded) HF safetensors
Llama checkpoint, so llama.cpp's `llama-quantize` can be timed on identical shapes.

Usage: st_to_gguf.py MODEL_DIR OUT.gguf
Only for the benchmark: q/k rows are not permuted into llama.cpp's rotary order (quantization
time does not depend on it) and the vocabulary is a placeholder.
"""
import json, os, re, struct, sys
import numpy as np
import gguf

def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n

NAME_MAP = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", r"blk.\1.attn_q.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", r"blk.\1.attn_k.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", r"blk.\1.attn_v.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"blk.\1.attn_output.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"blk.\1.ffn_gate.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"blk.\1.ffn_up.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"blk.\1.ffn_down.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
]

def gguf_name(n):
    for pat, rep in NAME_MAP:
        if re.fullmatch(pat, n):
            return re.sub(pat, rep, n)
    raise SystemExit(f"unmapped tensor {n}")

def main():
    model, out = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(model, "config.json")))
    files = sorted(f for f in os.listdir(model) if f.endswith(".safetensors"))
    w = gguf.GGUFWriter(out, "llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-5))
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    vocab = cfg["vocab_size"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"<t{i}>".encode() for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges([])
    for fn in files:
        path = os.path.join(model, fn)
        header, start = read_header(path)
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        for name, info in header.items():
            if name == "__metadata__":
                continue
            assert info["dtype"] == "BF16", (name, info["dtype"])
            b, e = info["data_offsets"]
            arr = mm[start + b:start + e].view(np.uint16).reshape(info["shape"])
            w.add_tensor(gguf_name(name), arr, raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()

if __name__ == "__main__":
    main()
