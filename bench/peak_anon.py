#!/usr/bin/env python3
"""Runs a command and reports wall time and peak anonymous memory (RssAnon, not page cache).

Usage: peak_anon.py [--label NAME] -- CMD ARGS...
Prints one JSON line: {"label", "seconds", "peak_rss_anon_mib", "peak_rss_mib", "exit"}.
RssAnon is sampled from /proc/PID/status (and the children's) every 20 ms.
"""
import json, os, subprocess, sys, time

def anon_of(pid):
    anon = rss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"): anon = int(line.split()[1])
                elif line.startswith("VmRSS:"): rss = int(line.split()[1])
    except OSError:
        pass
    return anon, rss

def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []

def main():
    args = sys.argv[1:]
    label = "run"
    if args[:1] == ["--label"]:
        label, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    t0 = time.perf_counter()
    p = subprocess.Popen(args)
    peak_anon = peak_rss = 0
    while p.poll() is None:
        pids = [p.pid] + children(p.pid)
        a = r = 0
        for q in pids:
            x, y = anon_of(q); a += x; r += y
        peak_anon, peak_rss = max(peak_anon, a), max(peak_rss, r)
        time.sleep(0.02)
    dt = time.perf_counter() - t0
    print(json.dumps({"label": label, "seconds": round(dt, 2), "peak_rss_anon_mib": round(peak_anon / 1024, 1),
                      "peak_rss_mib": round(peak_rss / 1024, 1), "exit": p.returncode}))
    sys.exit(p.returncode)

if __name__ == "__main__":
    main()
