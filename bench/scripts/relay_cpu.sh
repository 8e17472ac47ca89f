#!/usr/bin/env bash
# Relay CPU per message, several relays driven by one generator, rounds interleaved.
#
#   bench/scripts/relay_cpu.sh ROUNDS CLIENTS MESSAGES GENERATOR LABEL=BINARY:MODE ...
#
# MODE is text (plain-text lines, relay --insecure), raw (--raw-frames, relay
# --insecure), insecure (p2pchat clients in the clear), enc (p2pchat clients,
# encrypted as by default) or ref (the minimal reference relay of BINARY, driven in
# text), sealed (--sealed-frames: the frames of raw, in records on an encrypted
# link). Every relay is driven by GENERATOR's `p2pchat bench --server`, so the load
# is the same; the relay's CPU (user + system, from /proc) covers the whole bench
# run: connecting, the load, and the clients closing. Prints one line per run and
# the medians per label. With PIN=1 the relay runs on CPU 0 and the generator on
# CPU 1 (taskset), so that neither takes the other's core: on two cores, how often
# the relay finds work waiting (and so its cost per message) otherwise depends on
# how fast the generator is.
set -u
relay_cpu=""; gen_cpu=""
if [ "${PIN:-0}" = 1 ]; then relay_cpu="taskset -c 0"; gen_cpu="taskset -c 1"; fi
rounds=$1; clients=$2; messages=$3; gen=$4; shift 4
results=$(mktemp)
for r in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    label=${spec%%=*}; rest=${spec#*=}; bin=${rest%%:*}; mode=${rest#*:}
    case $mode in
      raw) ins=--insecure; flags=--raw-frames ;;
      insecure) ins=--insecure; flags=--insecure ;;
      text|ref) ins=--insecure; flags=--text ;;
      enc) ins=; flags= ;;
      sealed) ins=; flags=--sealed-frames ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    log=$(mktemp)
    if [ "$mode" = ref ]; then
      $relay_cpu "$bin" bench --serve-reference 2>"$log" &
    else
      $relay_cpu "$bin" server --bind 127.0.0.1 --port 0 --max-clients $((clients + 16)) \
        --max-per-address 0 --message-rate 0 $ins 2>"$log" </dev/null &
    fi
    pid=$!
    for _ in $(seq 50); do grep -q 'listening on' "$log" && break; sleep 0.1; done
    addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log" | head -1 | awk '{print $3}')
    cpu() { awk '{print ($14 + $15) * 10}' "/proc/$pid/stat"; }
    before=$(cpu)
    line=$($gen_cpu "$gen" bench --server "$addr" --clients "$clients" --messages "$messages" $flags 2>&1 | tail -1)
    sleep 0.3
    after=$(cpu)
    kill -TERM "$pid"; wait "$pid" 2>/dev/null; rm -f "$log"
    rate=$(echo "$line" | grep -o '= [0-9]* msg/s' | grep -o '[0-9]*')
    errors=$(echo "$line" | grep -o 'errors [0-9]*' | grep -o '[0-9]*')
    delivered=$(echo "$line" | grep -o 'delivered [0-9]*' | grep -o '[0-9]*')
    cpu_ms=$((after - before))
    ns=$((cpu_ms * 1000000 / (delivered > 0 ? delivered : 1)))
    echo "round $r $label: $rate msg/s, relay CPU $cpu_ms ms = $ns ns a message, errors ${errors:-?}"
    echo "$label $rate $ns" >> "$results"
  done
done
echo "medians over $rounds rounds ($clients clients, $messages messages):"
for spec in "$@"; do
  label=${spec%%=*}
  rates=$(awk -v l="$label" '$1 == l {print $2}' "$results" | sort -n)
  nss=$(awk -v l="$label" '$1 == l {print $3}' "$results" | sort -n)
  n=$(echo "$rates" | wc -l)
  mid=$(( (n + 1) / 2 ))
  echo "  $label: $(echo "$rates" | sed -n "${mid}p") msg/s, $(echo "$nss" | sed -n "${mid}p") ns a message"
done
rm -f "$results"
