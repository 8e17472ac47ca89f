#!/usr/bin/env python3
"""File-transfer benchmark over 127.0.0.1, all in one run so the figures compare:

  raw    socat -b 262144 copying the file over a plain TCP socket (the ceiling)
  direct p2pchat connect /send -> p2pchat listen --auto-accept
  relay  p2pchat join /send ID -> p2pchat server -> p2pchat join --auto-accept
  ... --insecure   the same two with encryption off everywhere, for the cost of
                   encryption (the secure channel, and end to end through the relay)

Each p2pchat figure includes hashing (BLAKE3 on both sides), the receiver's flush to
disk and its rename after verification. Peak RSS of each process comes from
/usr/bin/time -v. Each path runs REPEAT times (default 3), the three paths in turn,
after a `sync` so that no run pays for the previous one's writeback; the table gives
the median time of each path.
Usage: python3 bench/scripts/file_bench.py [SIZE_MIB ...]   (default: 100 1024)
       REPEAT=5 python3 bench/scripts/file_bench.py 1024
Needs: a release build (cargo build --release -p p2pchat), socat, /usr/bin/time.
"""
import os, re, shutil, socket, subprocess, sys, tempfile, time

BIN = os.environ.get("P2PCHAT_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "p2pchat")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def timed(cmd, **kw):
    return subprocess.Popen(["/usr/bin/time", "-v"] + cmd, stderr=subprocess.PIPE, text=True, **kw)

def finish(proc):
    """Waits for a process whose stdin may be closed; returns its stderr."""
    if proc.stdout:
        proc.stdout.read()
    err = proc.stderr.read()
    proc.wait()
    return err

def peak_kib(stderr_text):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr_text)
    return int(m.group(1)) if m else 0

def wait_line(proc, pred, timeout=600):
    deadline = time.time() + timeout
    for line in proc.stdout:
        if pred(line):
            return line
        if time.time() > deadline:
            break
    raise RuntimeError("expected line never came")

def raw(path, size, durable=False):
    """socat over TCP into a file; `durable` adds a `sync`, so that the copy is on disk
    when the clock stops, as p2pchat's is (it flushes before it says "received")."""
    port = free_port()
    out = path + ".raw"
    rx = timed(["socat", "-b", "262144", "-u", f"TCP-LISTEN:{port},reuseaddr", f"OPEN:{out},creat,trunc"])
    time.sleep(0.3)
    t0 = time.time()
    tx = timed(["socat", "-b", "262144", "-u", f"OPEN:{path}", f"TCP:127.0.0.1:{port}"])
    txe = finish(tx); rxe = finish(rx)
    if durable:
        subprocess.run(["sync"])
    dt = time.time() - t0
    os.remove(out)
    return dt, {"sender": peak_kib(txe), "receiver": peak_kib(rxe)}

def raw_durable(path, size):
    return raw(path, size, durable=True)

def direct(path, size, work, insecure=False):
    dl = os.path.join(work, "direct"); os.makedirs(dl, exist_ok=True)
    port = free_port()
    extra = ["--insecure"] if insecure else []
    rx = timed([BIN, "listen", "--bind", "127.0.0.1", "--port", str(port), "--no-history", "--auto-accept",
                "--download-dir", dl] + extra, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    wait_line(rx, lambda l: l.startswith("* listening"))
    tx = timed([BIN, "connect", f"127.0.0.1:{port}", "--no-history"] + extra, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    wait_line(tx, lambda l: l.startswith("* connected"))
    t0 = time.time()
    tx.stdin.write(f"/send {path}\n"); tx.stdin.flush()
    wait_line(tx, lambda l: "delivered" in l)
    dt = time.time() - t0
    tx.stdin.close(); rx.stdin.close()
    txe = finish(tx); rxe = finish(rx)
    shutil.rmtree(dl)
    return dt, {"sender": peak_kib(txe), "receiver": peak_kib(rxe)}

def relay(path, size, work, insecure=False):
    dl = os.path.join(work, "relay"); os.makedirs(dl, exist_ok=True)
    port = free_port()
    extra = ["--insecure"] if insecure else []
    srv = timed([BIN, "server", "--bind", "127.0.0.1", "--port", str(port)] + extra, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    a = timed([BIN, "join", f"127.0.0.1:{port}"] + extra, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    wait_line(a, lambda l: l.startswith("* you are client 0"))
    b = timed([BIN, "join", f"127.0.0.1:{port}", "--auto-accept", "--download-dir", dl] + extra,
              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    wait_line(b, lambda l: l.startswith("* you are client 1"))
    t0 = time.time()
    a.stdin.write(f"/send 1 {path}\n"); a.stdin.flush()
    wait_line(a, lambda l: "delivered" in l)
    dt = time.time() - t0
    a.stdin.close(); b.stdin.close()
    ae = finish(a); be = finish(b)
    # Stop the server itself (not /usr/bin/time, which would die and orphan it).
    subprocess.run(["pkill", "-TERM", "-P", str(srv.pid)])
    se = finish(srv)
    shutil.rmtree(dl)
    return dt, {"sender": peak_kib(ae), "receiver": peak_kib(be), "server": peak_kib(se)}

def direct_insecure(path, size, work):
    return direct(path, size, work, insecure=True)

def relay_insecure(path, size, work):
    return relay(path, size, work, insecure=True)

def main():
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1024]
    missing = [tool for tool in ("socat", "/usr/bin/time") if not shutil.which(tool)]
    if missing:
        sys.exit(f"file_bench: {' and '.join(missing)} not found (apt-get install socat time)")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"file_bench: {BIN} not found (cargo build --release -p p2pchat, or set P2PCHAT_BIN)")
    work = tempfile.mkdtemp(prefix="p2pchat-filebench-")
    try:
        print("| size | path | seconds | MiB/s | vs raw | vs raw + sync | peak RSS (KiB) |")
        print("|---|---|---|---|---|---|---|")
        for mib in sizes:
            path = os.path.join(work, f"file-{mib}.bin")
            with open(path, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(1 << 20))
            size = mib << 20
            hashed = subprocess.run([BIN, "bench", "--hash-file", path], capture_output=True, text=True)
            print(f"<!-- {hashed.stdout.strip()} -->", flush=True)
            paths = (("raw socat", raw), ("raw socat + sync", raw_durable),
                     ("direct", direct), ("direct --insecure", direct_insecure),
                     ("relay", relay), ("relay --insecure", relay_insecure))
            runs = {name: [] for name, _ in paths}
            for _ in range(int(os.environ.get("REPEAT", "3"))):
                for name, run in paths:
                    subprocess.run(["sync"])
                    args = (path, size) if name.startswith("raw") else (path, size, work)
                    runs[name].append(run(*args))
            results = []
            for name, measured in runs.items():
                times = sorted(dt for dt, _ in measured)
                rss = max(measured, key=lambda m: sum(m[1].values()))[1]
                results.append((name, (times[len(times) // 2], rss)))
            base = results[0][1][0]
            durable = results[1][1][0]
            for name, (dt, rss) in results:
                rss_s = ", ".join(f"{k} {v}" for k, v in rss.items())
                print(f"| {mib} MiB | {name} | {dt:.2f} | {mib/dt:.0f} | {base/dt:.2f} | {durable/dt:.2f} | {rss_s} |", flush=True)
            os.remove(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
