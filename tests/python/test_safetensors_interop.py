"""Cross-checks between qtool's formats/ library (through the test-only tool
qtool_st_roundtrip, see tests/tools/st_roundtrip.cpp) and the real Python packages:
safetensors (reader/writer), json (config/index formatting), torch/transformers (tiny model).

The helper is found through $QTOOL_ST_ROUNDTRIP, else build/tests/qtool_st_roundtrip.
"""
import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = os.environ.get("QTOOL_ST_ROUNDTRIP", str(REPO / "build" / "tests" / "qtool_st_roundtrip"))

try:
    import torch
except ImportError:  # torch is optional (not in requirements.txt): the numpy tests still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def run_tool(*args, check=True):
    if not Path(TOOL).exists():
        pytest.fail(f"{TOOL} not found: build the target qtool_st_roundtrip or set QTOOL_ST_ROUNDTRIP")
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr}")
    return r


def parse_dump(text):
    meta, tensors = {}, []
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "meta":
            meta[(int(parts[1]), parts[2])] = parts[3]
        else:
            tensors.append((json.loads(parts[0]), *parts[1:]))
    return meta, tensors


def shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


# ---- a tensor set covering every dtype the Python package knows -----------------------------

NUMPY_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
    "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32, "F64": np.float64,
    "I64": np.int64, "U64": np.uint64, "C64": np.complex64,
}
SHAPES = [[3, 5], [7], [], [0, 4], [2, 3, 2]]


def raw_bytes(rng, dtype_name, nbytes):
    if dtype_name == "BOOL":
        return rng.integers(0, 2, nbytes, dtype=np.uint8).tobytes()
    return rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def numpy_tensors(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for i, (name, dt) in enumerate(NUMPY_DTYPES.items()):
        shape = SHAPES[i % len(SHAPES)]
        n = int(np.prod(shape)) if shape else 1
        b = raw_bytes(rng, name, n * np.dtype(dt).itemsize)
        out[f"t.{name.lower()}"] = (name, shape, b, np.frombuffer(b, dtype=dt).reshape(shape))
    # Names that need escaping, a non-ASCII one, and an empty name.
    b = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    for nm in ['q"uote\\back', "tab\tnew\nline\x01", "caf\u00e9.\u4e2d", "", "slash/\x7f"]:
        out[nm] = ("U8", [8], b, np.frombuffer(b, dtype=np.uint8).reshape([8]))
    return out


def torch_tensors(seed=1):
    rng = np.random.default_rng(seed)
    kinds = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
             "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
             "F32": torch.float32, "I64": torch.int64}
    out = {}
    for i, (name, dt) in enumerate(kinds.items()):
        shape = SHAPES[i % len(SHAPES)]
        n = int(np.prod(shape)) if shape else 1
        itemsize = torch.empty((), dtype=dt).element_size()
        b = rng.integers(0, 256, n * itemsize, dtype=np.uint8).tobytes()
        t = torch.frombuffer(bytearray(b), dtype=dt).reshape(shape) if b else torch.empty(shape, dtype=dt)
        out[f"w.{name.lower()}"] = (name, shape, b, t)
    return out


def write_spec(path, tensors, metadata):
    spec = {"metadata": metadata,
            "tensors": [{"name": k, "dtype": d, "shape": s, "hex": b.hex()} for k, (d, s, b, _) in tensors.items()]}
    path.write_text(json.dumps(spec))


# ---- writer: byte-identical to the reference writer ------------------------------------------

def test_writer_output_is_byte_identical_to_safetensors_numpy_save(tmp_path):
    from safetensors.numpy import save
    tensors = numpy_tensors()
    write_spec(tmp_path / "spec.json", tensors, {"format": "pt"})
    run_tool("write", tmp_path / "spec.json", tmp_path / "q.safetensors")
    ref = save({k: v[3] for k, v in tensors.items()}, metadata={"format": "pt"})
    assert (tmp_path / "q.safetensors").read_bytes() == ref


@needs_torch
def test_writer_output_is_byte_identical_to_safetensors_torch_save_file(tmp_path):
    from safetensors.torch import save_file
    tensors = torch_tensors()
    write_spec(tmp_path / "spec.json", tensors, {"format": "pt"})
    run_tool("write", tmp_path / "spec.json", tmp_path / "q.safetensors")
    save_file({k: v[3] for k, v in tensors.items()}, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    assert (tmp_path / "q.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_python_reads_back_what_the_writer_wrote(tmp_path):
    from safetensors import safe_open
    tensors = numpy_tensors(5)
    write_spec(tmp_path / "spec.json", tensors, {"format": "pt", "note": "caf\u00e9"})
    run_tool("write", tmp_path / "spec.json", tmp_path / "q.safetensors")
    with safe_open(str(tmp_path / "q.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt", "note": "caf\u00e9"}
        assert sorted(f.keys()) == sorted(tensors)
        for k, (_, shape, b, arr) in tensors.items():
            got = f.get_tensor(k)
            assert list(got.shape) == shape
            assert got.tobytes() == b, k


# ---- reader: accepts what the reference writer writes ----------------------------------------

def test_reader_dump_matches_python_for_a_file_written_by_python(tmp_path):
    from safetensors.numpy import save_file
    tensors = numpy_tensors(9)
    save_file({k: v[3] for k, v in tensors.items()}, tmp_path / "p.safetensors", metadata={"format": "pt", "a": "b"})
    meta, dump = parse_dump(run_tool("dump", tmp_path / "p.safetensors").stdout)
    assert meta == {(0, "format"): "pt", (0, "a"): "b"}
    got = {name: (dt, shp, sha) for name, dt, shp, sha in dump}
    assert len(dump) == len(tensors)
    for k, (d, s, b, _) in tensors.items():
        assert got[k] == (d, shape_str(s), hashlib.sha256(b).hexdigest()), k


@needs_torch
def test_reader_reads_every_torch_dtype_written_by_python(tmp_path):
    from safetensors.torch import save_file
    tensors = torch_tensors(3)
    save_file({k: v[3] for k, v in tensors.items()}, tmp_path / "p.safetensors")
    _, dump = parse_dump(run_tool("dump", tmp_path / "p.safetensors").stdout)
    got = {name: (dt, shp, sha) for name, dt, shp, sha in dump}
    for k, (d, s, b, _) in tensors.items():
        assert got[k] == (d, shape_str(s), hashlib.sha256(b).hexdigest()), k


def st_file(header, data=b"", n=None):
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h) if n is None else n) + h + data


BAD_FILES = {
    "gap": st_file('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
                   '"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}', b"123456"),
    "overlap": st_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
                       '"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}', b"123456"),
    "size": st_file('{"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,10]}}', b"0" * 10),
    "trailing": st_file('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"123"),
    "truncated": st_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', b"123"),
    "dtype": st_file('{"a":{"dtype":"F8_E4M3FN","shape":[1],"data_offsets":[0,1]}}', b"1"),
    "meta": st_file('{"__metadata__":{"k":1}}'),
    "utf8": st_file(b'{"\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"1"),
    "length": st_file("{}", n=4096),
    "negative": st_file('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}'),
    "json": st_file('{"a":'),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_reader_rejects_what_the_reference_reader_rejects(tmp_path, case):
    from safetensors import safe_open
    p = tmp_path / f"{case}.safetensors"
    p.write_bytes(BAD_FILES[case])
    with pytest.raises(Exception):
        with safe_open(str(p), framework="np"):
            pass
    r = run_tool("dump", p, check=False)
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith("error\tBadFile\t"), r.stderr
    assert str(p) in r.stderr


# ---- JSON files formatted like Python ----------------------------------------------------------

CONFIGS = [
    {"architectures": ["LlamaForCausalLM"], "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
     "initializer_range": 0.02, "vocab_size": 128256, "tie_word_embeddings": False,
     "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "rope_type": "llama3"},
     "eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000, "pad_token_id": None},
    {"a": 0.30000000000000004, "b": 1e16, "c": 1.5e-07, "d": 123456789.0, "e": -0.0, "f": 2 ** 63 - 1,
     "g": -(2 ** 62), "h": [], "i": {}, "j": "caf\u00e9 \U0001f600 \"q\" \\ \n\t\x01", "k": [[1, 2], [3]],
     "Z": True, "_x": 1e-300, "l": 1e300, "m": 0.1, "n": 100.0, "o": 1e22, "p": 1e-5},
]


@pytest.mark.parametrize("idx", range(len(CONFIGS)))
def test_config_json_is_byte_identical_to_python_json_dumps(tmp_path, idx):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(CONFIGS[idx]))
    out = tmp_path / "out"
    out.mkdir()
    run_tool("config", src, out)
    assert (out / "config.json").read_text() == json.dumps(CONFIGS[idx], indent=2, sort_keys=True) + "\n"


def test_index_json_is_byte_identical_to_transformers(tmp_path):
    wm = {f"model.layers.{i}.mlp.down_proj.weight": f"model-0000{i % 3 + 1}-of-00003.safetensors" for i in range(12)}
    wm["lm_head.weight"] = "model-00003-of-00003.safetensors"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"total_size": 16060522496, "weight_map": wm}))
    run_tool("index", spec, tmp_path)
    # transformers save_pretrained: json.dumps(index, indent=2, sort_keys=True) + "\n"
    ref = json.dumps({"metadata": {"total_size": 16060522496}, "weight_map": wm}, indent=2, sort_keys=True) + "\n"
    assert (tmp_path / "model.safetensors.index.json").read_text() == ref


# ---- tiny model ----------------------------------------------------------------------------

def splitmix_stream(seed, name):
    """Independent re-implementation of the generator described in formats/tiny_model.h."""
    M = (1 << 64) - 1
    state = seed

    def nxt():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & M
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    h = 0xcbf29ce484222325
    for c in name.encode():
        h = ((h ^ c) * 0x100000001b3) & M
    state = nxt() ^ h
    nxt()
    return nxt


def reference_tensor(seed, name, shape, outliers=2, outlier_scale=10.0):
    nxt = splitmix_stream(seed, name)
    rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
    scale = [1.0] * cols
    if name.endswith("_proj.weight"):
        for _ in range(outliers):
            scale[nxt() % cols] = float(np.float32(outlier_scale))
    out = np.empty(rows * cols, dtype=np.float32)
    for i in range(rows * cols):
        s = sum(nxt() >> 11 for _ in range(12))
        n = float(s) * 2.0 ** -53 - 6.0
        v = 1.0 + 0.05 * n if len(shape) == 1 else 0.02 * n * scale[i % cols]
        out[i] = np.float32(v)
    return out.reshape(shape)


def test_tiny_model_weights_match_an_independent_python_generator(tmp_path):
    from safetensors.numpy import load_file
    run_tool("tiny-model", tmp_path, 11, "F32", 1, 0)
    t = load_file(tmp_path / "model.safetensors")
    for name in ["model.layers.0.self_attn.k_proj.weight", "model.layers.1.post_attention_layernorm.weight"]:
        want = reference_tensor(11, name, list(t[name].shape))
        assert t[name].tobytes() == want.tobytes(), name


@needs_torch
@pytest.mark.parametrize("dtype,tdt", [("BF16", "bfloat16"), ("F16", "float16")])
def test_tiny_model_half_weights_are_torch_roundings_of_the_f32_weights(tmp_path, dtype, tdt):
    from safetensors.torch import load_file
    run_tool("tiny-model", tmp_path / "f32", 5, "F32", 1, 0)
    run_tool("tiny-model", tmp_path / "half", 5, dtype, 1, 0)
    full = load_file(tmp_path / "f32" / "model.safetensors")
    half = load_file(tmp_path / "half" / "model.safetensors")
    assert full.keys() == half.keys()
    for k in full:
        want = full[k].to(getattr(torch, tdt))
        assert half[k].dtype == want.dtype
        assert torch.equal(half[k].view(torch.int16), want.view(torch.int16)), k


@needs_torch
def test_tiny_model_loads_and_runs_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file
    run_tool("tiny-model", tmp_path, 3, "BF16", 3, 0)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), torch_dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    sd = model.state_dict()
    for shard in sorted(tmp_path.glob("model-*.safetensors")):
        for k, v in load_file(shard).items():
            assert torch.equal(sd[k], v.float()), k
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ids = tok(" the cat")["input_ids"]
    vocab = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    # Hand-derived: " the" -> "Ġ t" (rank 0), "h e" (1), "Ġt he" (2) -> "Ġthe"; " cat" -> "Ġ","c","at".
    assert ids == [cfg["bos_token_id"], vocab["\u0120the"], vocab["\u0120"], vocab["c"], vocab["at"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), cfg["vocab_size"])
    assert torch.isfinite(logits).all()


@needs_torch
def test_checkpoint_opens_a_sharded_save_pretrained_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file
    run_tool("tiny-model", tmp_path / "src", 4, "BF16", 1, 0)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "src"))
    model.save_pretrained(str(tmp_path / "dst"), max_shard_size="300KB")
    shards = sorted((tmp_path / "dst").glob("model-*.safetensors"))
    assert len(shards) > 1
    meta, dump = parse_dump(run_tool("dump", tmp_path / "dst").stdout)
    want = {}
    for s in shards:
        for k, v in load_file(s).items():
            want[k] = hashlib.sha256(v.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    assert {name: sha for name, _, _, sha in dump} == want
    assert all(v == "pt" for (_, k), v in meta.items() if k == "format")
