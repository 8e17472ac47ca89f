#!/bin/bash
# Relay CPU a message, encrypted against raw frames, 100 clients flat out (issue #20):
# N alternating runs of each, medians and their ratio (BENCHMARKS.md).
# usage: bench/scripts/encrypted_ratio.sh target/release/p2pchat [N] [FLAG]
#   FLAG: the encrypted clients: none for real clients (the default bench, sealed end
#   to end), --sealed-frames for the cheapest encrypted client (the frames of
#   --raw-frames in records: the encrypted relay loaded as hard as the raw one).
BIN=$1; N=${2:-5}; FLAG=${3:-}
enc=(); raw=()
for i in $(seq $N); do
  e=$($BIN bench --clients 100 --messages 2000000 $FLAG 2>&1 | tail -1 | grep -oE "\(([0-9]+) ns a message" | grep -oE "[0-9]+")
  r=$($BIN bench --clients 100 --messages 2000000 --raw-frames 2>&1 | tail -1 | grep -oE "\(([0-9]+) ns a message" | grep -oE "[0-9]+")
  enc+=($e); raw+=($r)
done
me=$(printf "%s\n" "${enc[@]}" | sort -n | sed -n "$(( (N+1)/2 ))p")
mr=$(printf "%s\n" "${raw[@]}" | sort -n | sed -n "$(( (N+1)/2 ))p")
echo "encrypted${FLAG:+ $FLAG}: ${enc[*]} (median $me) | raw: ${raw[*]} (median $mr) | ratio $(echo "scale=2; $me/$mr" | bc)"
