#!/bin/bash
# Interleaved rounds of file_cpu.sh for several builds, then each build's median
# seconds and median CPU (all its processes' user + system seconds).
#
#   bench/scripts/file_compare.sh direct FILE ROUNDS BIN_A BIN_B ...
#
# One build after the other in each round, a `sync` before each run: these machines
# drift by 2x over minutes, so only figures taken side by side compare.
set -u
MODE=$1; FILE=$2; ROUNDS=$3; shift 3
HERE=$(dirname "$0")
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for _ in $(seq "$ROUNDS"); do
    for bin in "$@"; do
        sync; sleep 0.5
        echo "$bin	$("$HERE/file_cpu.sh" "$MODE" "$bin" "$FILE" 2>/dev/null)" >>"$OUT"
    done
done
python3 - "$OUT" "$@" <<'PY'
import re, statistics, sys
rows = [line.rstrip("\n").split("\t", 1) for line in open(sys.argv[1])]
for bin in sys.argv[2:]:
    runs = [r for b, r in rows if b == bin and " s busy " in r]
    if not runs:
        print(bin, "no run finished"); continue
    secs = [float(r.split()[1]) for r in runs]
    def cpu(r):
        before, after = r.split("before: ")[1].split(" after: ")
        value = lambda s: [float(x.split("s/")[0]) for x in s.split()]
        return sum(b - a for a, b in zip(value(before), value(after)))
    cpus = [cpu(r) for r in runs]
    print(f"{bin}: median {statistics.median(secs):.3f} s, CPU {statistics.median(cpus):.2f} s"
          f" | runs {' '.join(f'{s:.3f}' for s in secs)} | CPU {' '.join(f'{c:.2f}' for c in cpus)}")
PY
