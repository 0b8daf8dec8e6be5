#!/usr/bin/env bash
# Which compressed-tensors releases load qtool's output, and which config keys they need.
#
# Usage: scripts/ct_compat.sh QTOOL [WORKDIR]
#   QTOOL    a qtool binary (e.g. build/tools/qtool)
#   WORKDIR  scratch folder, created by this script (default: a new mktemp -d under /tmp);
#            an existing WORKDIR must be empty or one this script made (it has .ct_compat)
# Environment:
#   CT_RELEASES  space-separated "CT:TRANSFORMERS" pairs to test
#                (default: "0.13.0:4.57.6 0.15.0:5.16.1 0.17.0:5.22.2 0.20.1:5.25.0")
#   CT_VENVS     where the throwaway venvs go (default: /tmp/ct-compat-venvs); kept between
#                runs so a second run does not reinstall
#   CT_JOBS      releases checked at the same time (default 1)
#   PYTHON       interpreter for the venvs (default: python3, needs >= 3.11 for CT >= 0.20)
#
# What it does: `qtool tiny-model`, then `qtool quantize` once per scheme of `qtool schemes
# --json`; three variants of every output that differ only in config.json:
#   asis      qtool's output as written (global `format` only)
#   pergroup  + `format` copied into every config group (what llm-compressor 0.14 writes)
#   grouponly per-group `format` and no global `format`
# Then one venv per release: a shared base venv holds torch (CPU use; the PyPI wheel) and each
# release venv sees it through a .pth file, so only compressed-tensors, transformers and their
# small dependencies are installed per release. In each, scripts/ct_compat_check.py runs the
# checks (validate / dequant / hf, see that file) and the script prints one table per variant:
# rows = scheme, columns = release x check, cells = ok or the error. Raw JSON lines go to
# WORKDIR/results.jsonl. Not part of the default test suite (network, minutes, ~3 GB disk).
set -euo pipefail

usage() { sed -n '4,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$1" in -h|--help) usage ;; esac
QTOOL=$(readlink -f "$1")
[ -x "$QTOOL" ] || { echo "ct_compat: $1 is not an executable qtool binary" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
CHECK="$HERE/ct_compat_check.py"
RELEASES=${CT_RELEASES:-"0.13.0:4.57.6 0.15.0:5.16.1 0.17.0:5.22.2 0.20.1:5.25.0"}
VENVS=${CT_VENVS:-/tmp/ct-compat-venvs}
PY=${PYTHON:-python3}
JOBS=${CT_JOBS:-1}

if [ $# -eq 2 ]; then
  W=$2
  if [ -e "$W" ] && [ ! -e "$W/.ct_compat" ] && [ -n "$(ls -A "$W")" ]; then
    echo "ct_compat: $W exists, is not empty and was not made by this script" >&2; exit 2
  fi
  mkdir -p "$W"
else
  W=$(mktemp -d /tmp/ct-compat.XXXXXX)
fi
W=$(readlink -f "$W"); touch "$W/.ct_compat"
echo "ct_compat: work folder $W"

# 1. qtool outputs, one per scheme
rm -rf "$W/tiny" "$W/asis" "$W/pergroup" "$W/grouponly" "$W"/results*.jsonl
"$QTOOL" tiny-model "$W/tiny" >/dev/null
SCHEMES=$("$QTOOL" schemes --json | "$PY" -c 'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin)))')
echo "ct_compat: schemes: $SCHEMES"
mkdir -p "$W/asis"
for s in $SCHEMES; do
  "$QTOOL" quantize "$W/tiny" -o "$W/asis/$s" --scheme "$s" --no-hash >"$W/quantize-$s.log" 2>&1 ||
    { echo "ct_compat: qtool quantize --scheme $s failed, see $W/quantize-$s.log" >&2; exit 1; }
done

# 2. the config variants (tensors shared through symlinks)
"$PY" - "$W" $SCHEMES <<'EOF'
import json, os, sys
w, schemes = sys.argv[1], sys.argv[2:]
for variant in ("pergroup", "grouponly"):
    for s in schemes:
        src, dst = f"{w}/asis/{s}", f"{w}/{variant}/{s}"
        os.makedirs(dst)
        for f in os.listdir(src):
            if f != "config.json":
                os.symlink(f"{src}/{f}", f"{dst}/{f}")
        cfg = json.load(open(f"{src}/config.json"))
        qc = cfg["quantization_config"]
        for g in qc["config_groups"].values():
            g["format"] = qc["format"]
        if variant == "grouponly":
            del qc["format"]
        json.dump(cfg, open(f"{dst}/config.json", "w"), indent=2)
EOF

# 3. venvs: torch once in a base venv, each release on top of it
mkdir -p "$VENVS"
BASE="$VENVS/base"
if ! "$BASE/bin/python" -c 'import torch, numpy' 2>/dev/null; then
  echo "ct_compat: installing torch into $BASE (once; large download)"
  "$PY" -m venv "$BASE"
  "$BASE/bin/pip" install -q torch numpy
fi
READY=""
# requirements of compressed-tensors and transformers without extras, minus torch (from base)
SMALL_DEPS='
from importlib.metadata import requires
for p in ("compressed-tensors", "transformers"):
    for r in requires(p) or []:
        if "extra ==" in r or r.split(";")[0].strip().lower().startswith("torch"):
            continue
        print(r.split(";")[0].strip() if ";" not in r else r)'
BASE_SP=$("$BASE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for pair in $RELEASES; do
  ct=${pair%%:*}; tf=${pair##*:}; v="$VENVS/ct$ct-tf$tf"
  if ! "$v/bin/python" -c 'import compressed_tensors, transformers' 2>/dev/null; then
    echo "ct_compat: installing compressed-tensors==$ct transformers==$tf into $v"
    # torch comes from the base venv through a .pth file; pip does not count it as installed,
    # so the two packages go in with --no-deps and their other (small) requirements after;
    # accelerate (transformers 4.x needs it to load a quantized model) likewise
    if ! { "$PY" -m venv "$v" &&
           echo "$BASE_SP" > "$("$v/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ct_compat_base.pth" &&
           "$v/bin/pip" install -q --no-deps "compressed-tensors==$ct" "transformers==$tf" &&
           "$v/bin/python" -c "$SMALL_DEPS" > "$v/small-deps.txt" &&
           "$v/bin/pip" install -q -r "$v/small-deps.txt" psutil &&
           "$v/bin/pip" install -q --no-deps accelerate; } >"$W/pip-$ct.log" 2>&1; then
      echo "ct_compat: could not make the venv for $ct, skipped; see $W/pip-$ct.log" >&2; continue
    fi
  fi
  READY="$READY $ct:$v"
done
# the checks, CT_JOBS releases at a time
for entry in $READY; do
  ct=${entry%%:*}; v=${entry#*:}
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  echo "ct_compat: checking compressed-tensors $ct"
  ( "$v/bin/python" "$CHECK" asis="$W/asis" pergroup="$W/pergroup" grouponly="$W/grouponly" \
      >"$W/results-$ct.jsonl" 2>"$W/check-$ct.log" ||
      echo "ct_compat: checker failed for $ct, see $W/check-$ct.log" >&2 ) &
done
wait
cat "$W"/results-*.jsonl > "$W/results.jsonl"

# 4. the matrix
"$PY" - "$W/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rels = sorted({(r["release"], r["transformers"]) for r in rows},
              key=lambda x: [int(p) for p in x[0].split(".")])
checks = ["validate", "dequant", "hf"]
def short(res):
    return "ok" if res.startswith("ok") else res
for variant in ("asis", "pergroup", "grouponly"):
    sub = [r for r in rows if r["variant"] == variant]
    if not sub:
        continue
    schemes = list(dict.fromkeys(r["scheme"] for r in sub))
    print(f"\n### variant: {variant}\n")
    head = ["scheme"] + [f"ct {c} / tf {t}: {k}" for c, t in rels for k in checks]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for s in schemes:
        cells = [s]
        for c, t in rels:
            for k in checks:
                hit = [r["result"] for r in sub if r["scheme"] == s and r["release"] == c and r["check"] == k]
                cells.append(short(hit[0]) if hit else "-")
        print("| " + " | ".join(cells) + " |")
    # the per-group format each release ends up with (from the validate detail)
    print()
    for c, t in rels:
        det = sorted({r["result"] for r in sub if r["release"] == c and r["check"] == "validate"})
        print(f"- ct {c}, validate details: {'; '.join(det)}")
EOF
