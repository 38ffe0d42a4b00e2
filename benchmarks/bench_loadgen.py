"""How close does netlab's pure-Python load generator come to wrk? (a script, not a test)

Both load the same nginx (one worker, pinned to core 0) from one core (core 1: `wrk -t1` under
taskset, netlab with processes=1, cpus=[1]), with a connection per request and with keep-alive,
in alternating order. The table gives each pair's rates, each client's CPU use, netlab/wrk
(target >= 0.8), and the same ratio per client CPU-second (what each could do if it were the
limit: robust when other work slows the server's core).
Then accuracy: against netlab's epoll server with a 10 ms backend, netlab's p50 against wrk's
(`--latency`), target within 20%.

    .venv/bin/python benchmarks/bench_loadgen.py [--seconds 3] [--repeats 3] [-c 50]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import netlab  # noqa: E402
from netlab import load  # noqa: E402

SERVER_CORE, CLIENT_CORE = 0, 1

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = / {{ return 200 "Hello from netlab!\\n"; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(d: str) -> tuple:
    port = free_port()
    conf = Path(d) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=d, port=port))
    proc = subprocess.Popen(["taskset", "-c", str(SERVER_CORE), "nginx", "-p", d, "-c", str(conf),
                             "-e", f"{d}/error.log"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"nginx did not start: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    stop(proc)
    raise SystemExit("nginx did not start listening within 10 s")


def stop(proc) -> None:
    """nginx and everything in its session: SIGTERM, then SIGKILL, always reaped."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(3)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def wrk(url: str, conns: int, seconds: float, keepalive: bool, latency=False) -> dict:
    cmd = ["taskset", "-c", str(CLIENT_CORE), "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s"]
    cmd += [] if keepalive else ["-H", "Connection: close"]
    cmd += ["--latency"] if latency else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    r = {"rps": float(m.group(1)), "cpu": cpu / seconds,
         "errors": " ".join(re.findall(r"(?:Socket errors|Non-2xx).*", out))}
    m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if m:
        r["p50_ms"] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return r


def ours(url: str, conns: int, seconds: float, keepalive: bool) -> dict:
    r = load.run(url, conns, duration=seconds, keepalive=keepalive, processes=1,
                 cpus=[CLIENT_CORE])
    return {"rps": r.rps, "p50_ms": r.p50_ms, "cpu": r.client_cpu_s / r.duration_s,
            "errors": "" if not r.error_count else str(dict(r.errors))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-c", "--concurrency", type=int, default=50)
    args = ap.parse_args()
    missing = [t for t in ("wrk", "nginx", "taskset") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"this benchmark needs {', '.join(missing)} (apt-get install wrk nginx)")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this benchmark needs two cores: one for the server, one for the client")
    print(f"{datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"{platform.platform()}  Python {platform.python_version()}  "
          f"{os.cpu_count()} cores  load average {os.getloadavg()[0]:.2f}")
    print(f"nginx on core {SERVER_CORE}, client on core {CLIENT_CORE}; "
          f"{args.concurrency} connections, {args.seconds:g} s per run\n")

    ratios, effs = {}, {}
    with tempfile.TemporaryDirectory(prefix="netlab-bench-") as d:
        proc, url = start_nginx(d)
        try:
            print(f"{'mode':<10} {'run':>3} {'wrk req/s':>10} {'CPU':>5} {'netlab req/s':>12} "
                  f"{'CPU':>5} {'netlab/wrk':>10} {'per CPU-s':>9}")
            for rep in range(args.repeats):
                for keepalive in (False, True):
                    mode = "keepalive" if keepalive else "close"
                    pair = {}
                    order = ("wrk", "netlab") if rep % 2 == 0 else ("netlab", "wrk")
                    for tool in order:
                        fn = wrk if tool == "wrk" else ours
                        pair[tool] = fn(url, args.concurrency, args.seconds, keepalive)
                    w, n = pair["wrk"], pair["netlab"]
                    ratio = n["rps"] / w["rps"]
                    # requests per CPU-second of the client: what each could do if it were
                    # the limit (robust when a noisy neighbour slows the server's core)
                    eff = (n["rps"] / n["cpu"]) / (w["rps"] / w["cpu"])
                    ratios.setdefault(mode, []).append(ratio)
                    effs.setdefault(mode, []).append(eff)
                    print(f"{mode:<10} {rep + 1:>3} {w['rps']:>10,.0f} {w['cpu']:>5.0%} "
                          f"{n['rps']:>12,.0f} {n['cpu']:>5.0%} {ratio:>10.2f} {eff:>9.2f} "
                          f"{w['errors']} {n['errors']}")
        finally:
            stop(proc)
    print()
    for mode, rs in ratios.items():
        print(f"{mode:<10} median netlab/wrk {statistics.median(rs):.2f} "
              f"(range {min(rs):.2f}-{max(rs):.2f}; target >= 0.8); requests per client "
              f"CPU-second, netlab/wrk {statistics.median(effs[mode]):.2f}")

    print("\naccuracy: netlab epoll server, backend_ms=10, 10 connections")
    with netlab.serve("epoll", backend_ms=10) as srv:
        os.sched_setaffinity(srv.pid, {SERVER_CORE})
        for keepalive in (True, False):
            w = wrk(srv.url, 10, args.seconds, keepalive, latency=True)
            n = ours(srv.url, 10, args.seconds, keepalive)
            diff = n["p50_ms"] / w["p50_ms"] - 1
            print(f"{'keepalive' if keepalive else 'close':<10} p50 wrk {w['p50_ms']:.2f} ms, "
                  f"netlab {n['p50_ms']:.2f} ms ({diff:+.0%}; target within 20%)")


if __name__ == "__main__":
    main()
