#!/usr/bin/env bash
# What --calib-precision bf16 changes against f32 on the tiny mixture-of-experts models
# (`qtool tiny-model --arch mixtral|qwen3_moe|qwen2_moe`, bf16, 2 layers, 8 experts, top-2):
# fp8-static --kv-cache fp8 calibrated both ways under both --moe-calibration policies, then
#   * the written static scales (bf16 tensors): bench/compare_calib_precision.py (count, bf16 ulps);
#   * the raw statistics (--save-stats, f32): how many input / KV maxima differ and by how many f32
#     ulps, and how many routed-token counts moved (bf16 products can flip a near-tie top-k).
# Usage: bench/moe_calib_precision.sh [QTOOL] [WORKDIR]   (WORKDIR is created and removed)
set -euo pipefail
cd "$(dirname "$0")/.."
Q=$(realpath "${1:-build/tools/qtool}")
W=${2:-$(mktemp -d /tmp/moe-calib-precision.XXXXXX)}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
for arch in mixtral qwen3_moe qwen2_moe; do
  "$Q" -q tiny-model "$W/$arch" --arch "$arch"
  for policy in all routed; do
    for p in f32 bf16; do
      "$Q" -q quantize "$W/$arch" -o "$W/$arch-$policy-$p" --scheme fp8-static --kv-cache fp8 --no-hash \
        --num-samples 16 --seq-len 128 --moe-calibration "$policy" --moe-min-tokens 0 \
        --calib-precision "$p" --save-stats "$W/$arch-$policy-$p.stats.zst" 2>/dev/null
      zstd -q -d -f "$W/$arch-$policy-$p.stats.zst" -o "$W/$arch-$policy-$p.stats.json"
    done
    echo "== $arch, --moe-calibration $policy: written scales (bf16), f32 vs bf16 calibration"
    python3 bench/compare_calib_precision.py "$W/$arch-$policy-f32" "$W/$arch-$policy-bf16" | tail -1
    echo "== $arch, --moe-calibration $policy: statistics (f32), f32 vs bf16 calibration"
    python3 - "$W/$arch-$policy-f32.stats.json" "$W/$arch-$policy-bf16.stats.json" <<'PY'
import json, struct, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def bits(x):
    return struct.unpack("<i", struct.pack("<f", x))[0]
out = {}
for key in ("input_absmax", "k_absmax", "v_absmax"):
    d = [abs(bits(a[key][m]) - bits(b[key][m])) for m in sorted(a[key])]  # positive floats: ulps = bit distance
    rel = [abs(a[key][m] - b[key][m]) / a[key][m] for m in sorted(a[key])]
    experts = [abs(bits(a[key][m]) - bits(b[key][m])) for m in sorted(a[key]) if ".experts." in m]
    out[key] = {"n": len(d), "differ": sum(x > 0 for x in d), "max_f32_ulps": max(d), "max_relative": round(max(rel), 6),
                "median_f32_ulps_of_differing": sorted(x for x in d if x)[len([x for x in d if x]) // 2] if any(d) else 0}
    if experts:
        out[key]["experts"] = {"n": len(experts), "differ": sum(x > 0 for x in experts), "max_f32_ulps": max(experts),
                               "max_relative": round(max(r for m, r in zip(sorted(a[key]), rel) if ".experts." in m), 6)}
moved = sum(abs(x - y) for blk in a["routed_tokens"] for x, y in zip(a["routed_tokens"][blk], b["routed_tokens"][blk])) // 2
total = sum(sum(v) for v in a["routed_tokens"].values())
out["routed_tokens"] = {"assignments": total, "moved": moved}
print(json.dumps(out))
PY
  done
done
