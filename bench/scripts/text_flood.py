#!/usr/bin/env python3
"""Plain-text flood from outside p2pchat: nc-like clients against a relay.

Each of N clients joins with one line (so IDs follow connection order), then writes
L lines `TO SEQ TIMESTAMP` to the next client as fast as the relay takes them, and
reads what the previous client sends it. Every received line is checked whole: the
right sender, the next sequence number, three fields, a timestamp. This is the
experiment of issue #20 (lines split in two under load), run against p2pchat's
relay and the minimal reference relay (`p2pchat bench --serve-reference`) in turn,
with the relay's CPU read from /proc.

    python3 bench/scripts/text_flood.py [--clients 100] [--lines 20000]
        [--rounds 1] [--binary target/release/p2pchat]

Prints one line per relay and round: lines/s, lines split or malformed, relay CPU
(user + system, whole run) and CPU per line. The generator is one Python process;
on two cores it competes with the relay, so compare relays within one run only.
"""

import argparse
import os
import re
import selectors
import socket
import subprocess
import sys
import time


def start_relay(binary, kind):
    """Starts the relay; returns (process, port)."""
    if kind == "p2pchat":
        args = [binary, "server", "--bind", "127.0.0.1", "--port", "0",
                "--max-clients", "20000", "--max-per-address", "0",
                "--message-rate", "0", "--insecure"]
        pattern = re.compile(r"listening on [0-9.]+:(\d+)")
    else:
        args = [binary, "bench", "--serve-reference"]
        pattern = re.compile(r"listening on [0-9.]+:(\d+)")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = pattern.search(line)
        if m:
            # Keep draining stderr so that the relay never blocks on its log.
            os.set_blocking(proc.stderr.fileno(), False)
            return proc, int(m.group(1))
    proc.kill()
    sys.exit(f"text_flood: {kind} did not say where it listens")


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000 // os.sysconf("SC_CLK_TCK")


def drain_stderr(proc):
    try:
        while proc.stderr.read(65536):
            pass
    except (BlockingIOError, TypeError, ValueError):
        pass


def run_once(binary, kind, clients, lines):
    proc, port = start_relay(binary, kind)
    socks = []
    try:
        # Join in order: each client's first line is an empty one, and the relay's
        # answer (its ID) is awaited before the next connects.
        for i in range(clients):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"\n")
            buf = b""
            while b"you are client" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"text_flood: {kind} closed client {i} before its welcome")
                buf += chunk
            m = re.search(rb"you are client (\d+)", buf)
            if not m or int(m.group(1)) != i:
                sys.exit(f"text_flood: client {i} got another ID: {buf[:200]!r}")
            s.setblocking(False)
            # What came after the welcome (the roster line, which at 800+ clients
            # is longer than one read) is read on as the start of the stream.
            socks.append((s, buf))
        cpu_before = cpu_ms(proc.pid)
        sel = selectors.DefaultSelector()
        state = []
        for i, (s, joined) in enumerate(socks):
            st = {
                "i": i, "to": (i + 1) % clients, "from": (i - 1) % clients,
                "next_seq": 0, "out": b"", "sent": 0, "inbuf": joined, "got": 0,
            }
            state.append(st)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
        bad = []
        total = clients * lines
        received = 0
        started = time.time()
        lat = []
        while received < total:
            if time.time() - started > 300:
                sys.exit(f"text_flood: {kind} stalled at {received} of {total} lines")
            for key, events in sel.select(timeout=1):
                st = key.data
                s = key.fileobj
                if events & selectors.EVENT_WRITE:
                    if not st["out"] and st["sent"] < lines:
                        now = time.monotonic_ns() // 1000
                        end = min(lines, st["sent"] + 500)
                        st["out"] = "".join(
                            f"{st['to']} {seq} {now}\n" for seq in range(st["sent"], end)
                        ).encode()
                        st["sent"] = end
                    if st["out"]:
                        try:
                            n = s.send(st["out"])
                            st["out"] = st["out"][n:]
                        except BlockingIOError:
                            pass
                    if not st["out"] and st["sent"] >= lines:
                        sel.modify(s, selectors.EVENT_READ, st)
                if events & selectors.EVENT_READ:
                    try:
                        chunk = s.recv(262144)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sys.exit(f"text_flood: {kind} closed client {st['i']}")
                    data = st["inbuf"] + chunk
                    parts = data.split(b"\n")
                    st["inbuf"] = parts.pop()
                    now = time.monotonic_ns() // 1000
                    for line in parts:
                        if line.startswith(b"* "):
                            continue
                        f = line.split(b" ")
                        ok = (
                            len(f) == 3
                            and f[0] == str(st["from"]).encode()
                            and f[1] == str(st["next_seq"]).encode()
                            and f[2].isdigit()
                        )
                        if not ok:
                            bad.append((st["i"], line[:80]))
                            continue
                        st["next_seq"] += 1
                        received += 1
                        if received % 97 == 0:
                            lat.append(now - int(f[2]))
            drain_stderr(proc)
        elapsed = time.time() - started
        cpu_after = cpu_ms(proc.pid)
        lat.sort()
        p50 = lat[len(lat) // 2] if lat else 0
        p99 = lat[len(lat) * 99 // 100] if lat else 0
        return {
            "rate": total / elapsed, "elapsed": elapsed, "bad": bad,
            "cpu": cpu_after - cpu_before, "p50": p50, "p99": p99, "total": total,
        }
    finally:
        for s, _ in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--binary", default="target/release/p2pchat")
    ap.add_argument("--relays", default="p2pchat,reference")
    a = ap.parse_args()
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"text_flood: no binary at {a.binary} (cargo build --release -p p2pchat)")
    failed = False
    for r in range(1, a.rounds + 1):
        for kind in a.relays.split(","):
            res = run_once(a.binary, kind, a.clients, a.lines)
            per = res["cpu"] * 1e6 / res["total"]
            print(
                f"round {r} {kind:9} {a.clients} clients: {res['total']} lines in "
                f"{res['elapsed']:.2f} s = {res['rate']:.0f} lines/s | latency p50 "
                f"{res['p50']} us p99 {res['p99']} us | split or malformed {len(res['bad'])} | "
                f"relay CPU {res['cpu']} ms = {per:.0f} ns a line",
                flush=True,
            )
            for who, line in res["bad"][:5]:
                print(f"    client {who} got {line!r}")
            failed |= bool(res["bad"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
