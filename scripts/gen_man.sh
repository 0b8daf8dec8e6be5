#!/usr/bin/env bash
# Regenerates man/*.N from man/*.N.md with pandoc; SCHEMES_TABLE is replaced by the table that
# `qtool schemes --markdown` prints (the one schemes table in libquant/schemes.cpp).
# Run after changing a page or the schemes table; commit the .1 files. `-smart`: keep "--option"
# as two hyphens (smart punctuation would turn it into an en dash).
set -euo pipefail
cd "$(dirname "$0")/.."
Q=${QTOOL:-build/tools/qtool}
table=$($Q schemes --markdown)
for md in man/*.[1-9].md; do
  out=${md%.md}
  python3 - "$md" "$table" > "$out.tmp.md" <<'PY'
import sys
src, table = sys.argv[1], sys.argv[2]
print(open(src).read().replace("SCHEMES_TABLE", table), end="")
PY
  pandoc -s -f markdown-smart -t man "$out.tmp.md" -o "$out"
  rm -f "$out.tmp.md"
done
echo "man pages regenerated"
