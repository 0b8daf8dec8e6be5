#!/usr/bin/env python3
"""Prints why ctest skipped what it skipped: ctest's own summary says only "(Skipped)".

Reads build/Testing/Temporary/LastTest.log (written by every ctest run), finds each test whose
gtest output has a "Skipped" marker, takes the message GTEST_SKIP() printed after it, and prints
one line per distinct reason with the count and the first tests it covers.
Usage: scripts/skip_summary.py [BUILD_DIR]   (default build)
"""
import re
import sys
from collections import OrderedDict
from pathlib import Path

log = Path(sys.argv[1] if len(sys.argv) > 1 else "build") / "Testing/Temporary/LastTest.log"
if not log.exists():
    sys.exit(f"skip_summary: {log} not found (run ctest first)")
reasons: "OrderedDict[str, list[str]]" = OrderedDict()
test = None
lines = log.read_text(errors="replace").splitlines()
for i, line in enumerate(lines):
    m = re.match(r"^\d+/\d+ Test: (.+)$", line)
    if m:
        test = m.group(1)
        continue
    if test and re.search(r": Skipped$", line):
        reason = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if not reason or reason.startswith("[  SKIPPED ]"):
            reason = "(no reason given)"
        reasons.setdefault(reason, []).append(test)
        test = None
total = sum(len(v) for v in reasons.values())
if total == 0:
    print("ctest: no test skipped")
else:
    print(f"ctest: {total} test(s) skipped:")
    for reason, tests in reasons.items():
        more = f" and {len(tests) - 3} more" if len(tests) > 3 else ""
        print(f"  {len(tests):3d} x {reason}\n        ({', '.join(tests[:3])}{more})")
