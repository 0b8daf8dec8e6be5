#!/usr/bin/env bash
# Fault-injection tests of qtool's output side (issue #13); not part of the default ctest suite
# (they take about a minute and a few need root). Each case asserts: no incomplete OUT (OUT is
# either absent or complete and byte-identical to a clean run), nothing foreign deleted, nothing
# left behind but what the run says it kept, and a rerun byte-identical to the clean run.
#
#   scripts/fault_tests.sh [QTOOL]     (default build/tools/qtool)
#
# Cases: kill -TERM / -INT / -KILL at several points of a calibrated run (the SIGKILL leftovers
# are removed by the next run, which says so); the QTOOL_FAULT_INJECT point after calibration;
# two concurrent runs on one OUT; a foreign folder created at OUT during a run; a read-only output
# location (a read-only tmpfs when root, chmod 0555 otherwise); a full disk (a small tmpfs, root
# only); a shard truncated while qtool reads it (SIGBUS -> clean I/O error, exit 7).
# Exit status: 0 when every case passed; the failures are listed.
set -uo pipefail
set -m  # job control: background runs get SIGINT (a script's background jobs otherwise ignore it)
cd "$(dirname "$0")/.."
Q=$(realpath "${1:-build/tools/qtool}")
W=$(mktemp -d /tmp/qtool-fault.XXXXXX)
MOUNTS=()
cleanup() {
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null; done
  chmod -R u+w "$W" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
FAILED=()
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1: $2"; FAILED+=("$1"); }
is_root() { [ "$(id -u)" = 0 ]; }

# A model large enough that a run takes a noticeable time (about 70 MB of BF16 weights).
"$Q" tiny-model "$W/m" --hidden 512 --intermediate 2048 --layers 8 --vocab 1024 >/dev/null 2>&1 || { echo "cannot make the model"; exit 2; }
ARGS=(--scheme fp8-static --num-samples 8 --seq-len 64)
OUT="$W/out"
"$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" >/dev/null 2>&1 || { echo "the clean run failed"; exit 2; }
mv "$OUT" "$W/ref"

same_as_ref() { diff -r "$1" "$W/ref" >/dev/null 2>&1; }
# Everything in $W besides the model and the reference, by name (what runs left behind).
leftovers() { (cd "$W" && ls -A | grep -v -x -e m -e ref -e foreign -e ro -e full -e err.txt -e err2.txt | sort | tr '\n' ' '); }
reset_out() { rm -rf "$OUT" "$OUT".qtool-*; }

# ---- kills at several points ----
for sig in TERM INT KILL; do
  for delay in 0.2 0.6 1.2 2.5; do
    name="kill-$sig-after-${delay}s"
    reset_out
    "$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" 2>"$W/err.txt" &
    pid=$!
    sleep "$delay"
    kill -s "$sig" "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
    if [ "$rc" = 0 ]; then
      same_as_ref "$OUT" && pass "$name (finished first)" || fail "$name" "finished but differs from the clean run"
      continue
    fi
    if [ -e "$OUT" ]; then fail "$name" "exit $rc and $OUT exists"; continue; fi
    left=$(leftovers)
    if [ "$sig" != KILL ]; then
      want=$((128 + $(kill -l "$sig")))
      [ "$rc" = "$want" ] || { fail "$name" "exit $rc, expected $want"; continue; }
      grep -q "^qtool: interrupted by SIG$sig" "$W/err.txt" || { fail "$name" "no 'interrupted' line: $(cat "$W/err.txt")"; continue; }
      # Only the calibration statistics may stay (and the run says so).
      case "$left" in
        "" ) ;;
        "out.qtool-stats.zst " ) grep -q "^qtool: kept $OUT.qtool-stats.zst" "$W/err.txt" || { fail "$name" "statistics kept silently"; continue; } ;;
        * ) fail "$name" "left behind: $left"; continue ;;
      esac
    fi
    "$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" 2>"$W/err2.txt" >/dev/null
    rc2=$?
    [ "$rc2" = 0 ] || { fail "$name" "rerun failed ($rc2): $(tail -2 "$W/err2.txt")"; continue; }
    same_as_ref "$OUT" || { fail "$name" "rerun differs from the clean run"; continue; }
    if [ "$sig" = KILL ] && [[ "$left" == *qtool-partial* ]]; then
      grep -q "removed the unfinished output of process" "$W/err2.txt" || { fail "$name" "stale partial folder not announced"; continue; }
    fi
    [ -z "$(leftovers | sed 's/^out $//')" ] || { fail "$name" "rerun left: $(leftovers)"; continue; }
    pass "$name (exit $rc)"
  done
done

# ---- the fault-injection point right after calibration ----
reset_out
QTOOL_FAULT_INJECT=after-calibration "$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" 2>/dev/null
rc=$?
if [ "$rc" = 137 ] && [ ! -e "$OUT" ] && [ -f "$OUT.qtool-stats.zst" ]; then
  "$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" 2>"$W/err.txt" >/dev/null && grep -q "reusing the statistics" "$W/err.txt" &&
    same_as_ref "$OUT" && pass "inject-after-calibration" || fail "inject-after-calibration" "rerun: $(tail -2 "$W/err.txt")"
else
  fail "inject-after-calibration" "exit $rc"
fi

# ---- two concurrent runs on one OUT ----
for i in 1 2 3; do
  reset_out
  "$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" 2>"$W/err.txt" &
  p1=$!
  "$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" 2>"$W/err2.txt" &
  p2=$!
  wait $p1; r1=$?
  wait $p2; r2=$?
  ok=$(( (r1 == 0) + (r2 == 0) ))
  if [ "$ok" != 1 ]; then fail "concurrent-$i" "exits $r1 and $r2 (exactly one must succeed)"; continue; fi
  loser_err=$([ "$r1" = 0 ] && cat "$W/err2.txt" || cat "$W/err.txt")
  echo "$loser_err" | grep -q -e "another qtool run" -e "exists and is not empty" ||
    { fail "concurrent-$i" "the loser's message: $loser_err"; continue; }
  same_as_ref "$OUT" || { fail "concurrent-$i" "OUT differs from the clean run"; continue; }
  [ -z "$(leftovers | sed 's/^out $//')" ] || { fail "concurrent-$i" "left: $(leftovers)"; continue; }
  pass "concurrent-$i (exits $r1, $r2)"
done

# ---- a foreign folder created at OUT while a run writes ----
for delay in 0.3 1.0 2.0; do
  name="foreign-at-out-after-${delay}s"
  reset_out
  "$Q" quantize "$W/m" -o "$OUT" "${ARGS[@]}" 2>"$W/err.txt" &
  pid=$!
  sleep "$delay"
  if mkdir "$OUT" 2>/dev/null; then
    echo theirs >"$OUT/theirs.txt"
    wait "$pid"; rc=$?
    [ "$(cat "$OUT/theirs.txt" 2>/dev/null)" = theirs ] || { fail "$name" "the foreign file is gone"; continue; }
    [ "$(ls -A "$OUT")" = theirs.txt ] || { fail "$name" "OUT has more than the foreign file: $(ls -A "$OUT")"; continue; }
    [ "$rc" != 0 ] || { fail "$name" "the run reported success"; continue; }
    # Refused when the run creates its partial folder (after calibrating) or at publish.
    grep -q -e "$OUT: the output path is taken" -e "$OUT: output folder exists and is not empty" "$W/err.txt" ||
      { fail "$name" "message: $(cat "$W/err.txt")"; continue; }
    [ -z "$(leftovers | sed 's/^out \(out.qtool-stats.zst \)\?$//')" ] || { fail "$name" "left: $(leftovers)"; continue; }
    pass "$name (exit $rc, foreign folder intact)"
  else
    wait "$pid"
    same_as_ref "$OUT" && pass "$name (the run published first)" || fail "$name" "OUT differs"
  fi
done

# ---- a read-only output location: refused before calibrating ----
mkdir -p "$W/ro"
if is_root; then
  mount -t tmpfs -o ro,size=1m tmpfs "$W/ro" && MOUNTS+=("$W/ro")
else
  chmod 0555 "$W/ro"
fi
"$Q" quantize "$W/m" -o "$W/ro/out" "${ARGS[@]}" 2>"$W/err.txt" >/dev/null
rc=$?
if [ "$rc" = 7 ] && grep -q "^qtool: error: $W/ro: the output location is not writable" "$W/err.txt" && ! grep -q "^calibration:" "$W/err.txt"; then
  pass "read-only-output (exit 7 before calibrating)"
else
  fail "read-only-output" "exit $rc: $(cat "$W/err.txt")"
fi

# ---- disk full (root: a small tmpfs) ----
if is_root; then
  mkdir -p "$W/full"
  if mount -t tmpfs -o size=40m tmpfs "$W/full"; then
    MOUNTS+=("$W/full")
    # Preflight sees too little space: refused before anything is written.
    "$Q" quantize "$W/m" -o "$W/full/out" "${ARGS[@]}" 2>"$W/err.txt" >/dev/null
    rc=$?
    if [ "$rc" = 7 ] && grep -q "not enough free disk space" "$W/err.txt" && [ -z "$(ls -A "$W/full")" ]; then
      pass "disk-full-preflight (exit 7, nothing left)"
    else
      fail "disk-full-preflight" "exit $rc: $(cat "$W/err.txt"); left: $(ls -A "$W/full")"
    fi
    # Space that runs out while writing: a filler grabs it right after the run starts.
    umount "$W/full" && mount -t tmpfs -o size=150m tmpfs "$W/full"
    "$Q" quantize "$W/m" -o "$W/full/out" --scheme fp8-dynamic 2>"$W/err.txt" >/dev/null &
    pid=$!
    sleep 0.3
    fallocate -l 120m "$W/full/filler" 2>/dev/null || dd if=/dev/zero of="$W/full/filler" bs=1M count=120 2>/dev/null
    wait "$pid"; rc=$?
    rm -f "$W/full/filler"
    if [ "$rc" = 0 ]; then
      [ -f "$W/full/out/qtool_manifest.json" ] && pass "disk-full-while-writing (the run finished first)" || fail "disk-full-while-writing" "exit 0 but OUT incomplete"
    elif [ "$rc" = 7 ] && [ ! -e "$W/full/out" ] && [ -z "$(ls -A "$W/full")" ]; then
      pass "disk-full-while-writing (exit 7, nothing left)"
    else
      fail "disk-full-while-writing" "exit $rc: $(tail -2 "$W/err.txt"); left: $(ls -A "$W/full")"
    fi
  else
    echo "skip disk-full (mount failed)"
  fi
else
  echo "skip disk-full (needs root for a tmpfs)"
fi

# ---- a shard truncated while qtool reads it ----
got_bus=0
for delay in 0.05 0.15 0.3 0.6; do
  rm -rf "$W/t" "$W/tout" "$W"/tout.qtool-*
  cp -r "$W/m" "$W/t"
  "$Q" quantize "$W/t" -o "$W/tout" --scheme fp8-dynamic --no-hash -q 2>"$W/err.txt" &
  pid=$!
  sleep "$delay"
  truncate -s 4096 "$W/t/model.safetensors"
  wait "$pid"; rc=$?
  if [ "$rc" = 7 ] && grep -q "$W/t/model.safetensors: cannot read: the file was truncated while qtool read it" "$W/err.txt"; then
    [ ! -e "$W/tout" ] && ! ls -d "$W"/tout.qtool-* >/dev/null 2>&1 && got_bus=1 && break
    fail "truncated-input" "exit 7 but left: $(ls -d "$W"/tout*)"
    break
  elif [ "$rc" != 0 ] && [ "$rc" != 3 ] && [ "$rc" != 7 ]; then
    fail "truncated-input" "exit $rc: $(cat "$W/err.txt")"
    break
  fi
done
rm -rf "$W/t" "$W/tout" "$W"/tout.qtool-*
[ "$got_bus" = 1 ] && pass "truncated-input (SIGBUS -> exit 7 naming the shard, nothing left)" || echo "note truncated-input: no run was caught mid-read (timing); covered by test_output_folder"

echo
if [ "${#FAILED[@]}" -eq 0 ]; then echo "fault_tests: all passed"; exit 0; fi
echo "fault_tests: ${#FAILED[@]} failed: ${FAILED[*]}"
exit 1
