#!/usr/bin/env python3
"""Soak: a relay under steady chat for a long while, its memory sampled as it goes.

Starts `p2pchat server` (release build) on 127.0.0.1, drives it with `p2pchat bench
--server` (CLIENTS clients, ring pattern, RATE messages a second in all, for MINUTES
minutes), and samples the server's RSS from /proc every INTERVAL seconds. Prints the
samples as a Markdown table row set and a summary: the first and last minute's
average, min and max, and whether it grew. Not part of CI's tests.

Usage: python3 bench/scripts/soak.py [MINUTES] [CLIENTS] [RATE]   (default 10 1000 5000)
Needs: cargo build --release -p p2pchat
"""
import os, re, socket, subprocess, sys, threading, time

BIN = os.environ.get("P2PCHAT_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "p2pchat")
INTERVAL = 5

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def main():
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    seconds = int(minutes * 60)
    srv = subprocess.Popen([BIN, "server", "--bind", "127.0.0.1", "--port", "0",
                            "--max-clients", str(clients + 10), "--max-per-address", "0"],
                           stderr=subprocess.PIPE, text=True)
    port = None
    for line in srv.stderr:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1)); break
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    messages = rate * seconds
    bench = subprocess.Popen([BIN, "bench", "--server", f"127.0.0.1:{port}", "--clients", str(clients),
                              "--pattern", "ring", "--rate", str(rate), "--messages", str(messages),
                              "--max-seconds", str(seconds + 60)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples = []
    t0 = time.time()
    while bench.poll() is None:
        samples.append((time.time() - t0, rss_kib(srv.pid)))
        time.sleep(INTERVAL)
    report = bench.stdout.read().strip().splitlines()
    srv.terminate(); srv.wait()
    print(f"soak: {clients} clients, ring, {rate} msg/s, {minutes:g} min; RSS every {INTERVAL} s")
    print(report[-1] if report else "(no bench report)")
    per_min = {}
    for t, kib in samples:
        per_min.setdefault(int(t // 60), []).append(kib)
    print("| minute | samples | RSS min (KiB) | RSS mean | RSS max |")
    print("|---|---|---|---|---|")
    for m in sorted(per_min):
        v = per_min[m]
        print(f"| {m} | {len(v)} | {min(v)} | {sum(v)//len(v)} | {max(v)} |")
    if len(per_min) >= 3:
        first = per_min[min(per_min) + 1]  # after connecting
        last = per_min[max(per_min)]
        print(f"second minute mean {sum(first)//len(first)} KiB, last minute mean {sum(last)//len(last)} KiB, "
              f"overall max {max(k for _, k in samples)} KiB")

if __name__ == "__main__":
    main()
