#!/bin/bash
# One file transfer over 127.0.0.1, with what it cost: the seconds from `/send` to
# "delivered", how busy the machine was meanwhile (from /proc/stat), and each
# process's CPU seconds and minor page faults (from /proc/PID/stat), before -> after.
#
#   bench/scripts/file_cpu.sh direct BIN FILE [--insecure]
#   bench/scripts/file_cpu.sh relay  BIN FILE [--insecure]
#
# BIN is a p2pchat binary (e.g. target/release/p2pchat); the received copy goes to a
# temporary folder that is removed afterwards. To compare builds, see file_compare.sh.
set -u
MODE=$1; BIN=$2; FILE=$3; shift 3
PORT=$((40000 + RANDOM % 20000))
DL=$(mktemp -d /tmp/p2pchat-file-cpu-XXXXXX)
trap 'rm -rf "$DL"' EXIT
stat_of() { awk '{printf "%.2fs/%d", ($14+$15)/100, $10}' "/proc/$1/stat"; }
idle() { awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
wait_for() { local fd=$1 want=$2 line; while read -r line <&"$fd"; do [[ $line == $want ]] && return 0; done; echo "file_cpu: no line like '$want'" >&2; exit 1; }
case $MODE in
direct)
    coproc RX { exec "$BIN" listen --bind 127.0.0.1 --port "$PORT" --no-history --auto-accept --download-dir "$DL" "$@" 2>&1; }
    wait_for "${RX[0]}" "* listening*"
    coproc TX { exec "$BIN" connect "127.0.0.1:$PORT" --no-history "$@" 2>&1; }
    wait_for "${TX[0]}" "* connected*"
    PIDS="$TX_PID $RX_PID"; NAMES="sender receiver"; SEND="/send $FILE" ;;
relay)
    "$BIN" server --bind 127.0.0.1 --port "$PORT" "$@" >"$DL/server.log" 2>&1 & SRV=$!
    for _ in $(seq 100); do grep -q "listening on" "$DL/server.log" && break; sleep 0.05; done
    coproc TX { exec "$BIN" join "127.0.0.1:$PORT" "$@" 2>&1; }
    wait_for "${TX[0]}" "* you are client 0*"
    coproc RX { exec "$BIN" join "127.0.0.1:$PORT" --auto-accept --download-dir "$DL" "$@" 2>&1; }
    wait_for "${RX[0]}" "* you are client 1*"
    PIDS="$TX_PID $SRV $RX_PID"; NAMES="sender server receiver"; SEND="/send 1 $FILE" ;;
*) echo "usage: $0 direct|relay BIN FILE [--insecure]" >&2; exit 2 ;;
esac
read -r i0 a0 < <(idle); before=$(for p in $PIDS; do stat_of "$p"; echo -n " "; done)
t0=$(date +%s.%N)
echo "$SEND" >&"${TX[1]}"
wait_for "${TX[0]}" "*delivered*"
t1=$(date +%s.%N)
read -r i1 a1 < <(idle); after=$(for p in $PIDS; do stat_of "$p"; echo -n " "; done)
echo "$MODE $(echo "$t1 - $t0" | bc) s busy $(echo "scale=2; 1 - ($i1 - $i0) / ($a1 - $a0)" | bc) | $NAMES (CPU/faults) before: $before after: $after"
kill $PIDS 2>/dev/null; wait 2>/dev/null
