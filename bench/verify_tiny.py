#!/usr/bin/env python3
"""Runs `qtool verify` on the tiny model for every scheme and prints the markdown tables of
bench/RESULTS.md ("verify on the tiny model").

Usage: python3 bench/verify_tiny.py [QTOOL] [WORKDIR]
  QTOOL    the qtool binary (default build/tools/qtool)
  WORKDIR  scratch folder for the model and its quantized copies (default /tmp/qtool-verify-tiny)

Each scheme: `qtool quantize tiny -o q-SCHEME --scheme SCHEME` (static schemes calibrate on the
built-in set), then `qtool verify q-SCHEME --reference tiny --json -j 1` with the default gates.
Standard library only.
"""
import json
import os
import shutil
import subprocess
import sys

QTOOL = sys.argv[1] if len(sys.argv) > 1 else "build/tools/qtool"
WORK = sys.argv[2] if len(sys.argv) > 2 else "/tmp/qtool-verify-tiny"
SCHEMES = ["fp8-dynamic", "fp8-block", "int8-dynamic", "w8a16", "w4a16", "fp8-w8a16", "fp8-static", "int8-static"]


def run(args):
    print("$ " + " ".join(args), file=sys.stderr)
    return subprocess.run(args, capture_output=True, text=True)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    tiny = os.path.join(WORK, "tiny")
    assert run([QTOOL, "tiny-model", tiny]).returncode == 0
    reports = {}
    for s in SCHEMES:
        out = os.path.join(WORK, "q-" + s)
        q = run([QTOOL, "-q", "quantize", tiny, "-o", out, "--scheme", s])
        assert q.returncode == 0, q.stderr
        v = run([QTOOL, "verify", out, "--reference", tiny, "--json", "-j", "1"])
        assert v.returncode in (0, 1), v.stderr
        reports[s] = (v.returncode, json.loads(v.stdout))

    short = lambda m: m.replace("model.layers.", "L").replace("self_attn.", "").replace("mlp.", "")
    print("| scheme | min weight SQNR dB (layer) | max GEMM err (layer) | max act err | kernels vs cpu_ref "
          "| ppl ref -> quant | KL mean | KL p99 | top-1 | exit | failed gates |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in SCHEMES:
        rc, j = reports[s]
        L = j["layers"]
        w = min(L, key=lambda l: l["weight"]["sqnr_db"])
        g = max(L, key=lambda l: l["gemm_err"])
        act = max(l["act_err"] for l in L)
        agree = [a for l in L for a in l["agreement"]]
        exact = [a for a in agree if a["required_exact"]]
        ag = f"{sum(a['ok'] for a in agree)}/{len(agree)} ok"
        if exact:
            ag += f", {sum(a['bit_exact'] for a in exact)}/{len(exact)} bit-exact"
        else:
            ag += f", max {max(a['max_bound_ratio'] for a in agree):.3f} x bound"
        m = j["model"]
        kinds = {"weight SQNR": "SQNR", "GEMM error": "GEMM err", "mean KL": "KL", "top-1": "top-1",
                 "disagrees": "kernel agreement", "structure": "structure"}
        fails = {}
        for f in j["failures"]:
            k = next((v for key, v in kinds.items() if key in f), "other")
            fails[k] = fails.get(k, 0) + 1
        fails = ", ".join(f"{k} x{n}" for k, n in sorted(fails.items())) or "-"
        print(f"| {s} | {w['weight']['sqnr_db']:.2f} ({short(w['module'])}) | {g['gemm_err']:.4f} ({short(g['module'])}) "
              f"| {act:.3g} | {ag} | {m['ppl_ref']:.2f} -> {m['ppl_quant']:.2f} | {m['kl_mean']:.2e} | {m['kl_p99']:.2e} "
              f"| {100 * m['top1']:.1f} % | {rc} | {fails} |")

    print()
    shapes = []
    for row in reports[SCHEMES[0]][1]["bench"]["rows"]:
        shapes.append((row["N"], row["K"], row["M"]))
    print("| N x K | M | " + " | ".join(SCHEMES) + " | Eigen f32 |")
    print("|---|---:|" + "---:|" * (len(SCHEMES) + 1))
    for (N, K, M) in shapes:
        cells, eig = [], []
        for s in SCHEMES:
            rows = [r for r in reports[s][1]["bench"]["rows"] if (r["N"], r["K"], r["M"]) == (N, K, M)]
            cells.append(f"{rows[0]['kernel_gflops_best']:.1f} / {rows[0]['kernel_gflops_median']:.1f}" if rows else "-")
            eig += [r["eigen_f32_gflops_best"] for r in rows]
        print(f"| {N} x {K} | {M} | " + " | ".join(cells) + f" | {max(eig):.1f} |")


if __name__ == "__main__":
    main()
