"""How does netlab's epoll model compare with real servers under the same load? (a script)

wrk (one thread, pinned to core 1) loads each server (pinned to core 0): netlab's `epoll`
model, nginx with one worker, and the course notes' Node.js hello world, with keep-alive and
with a connection per request, servers in alternating order, `--repeats` times. Reports each
server's median rate, its ratio to nginx and to Node.js, and what limited it (the server's CPU
on its core, measured with netlab's monitor, against wrk's).
Targets (benchmarks/README.md): epoll ≥ 0.5× nginx keep-alive, ≥ 0.8× nginx per connection,
≥ 1.0× Node.js in both modes — the architecture matters more than the language.

    .venv/bin/python benchmarks/bench_server.py [--seconds 3] [--repeats 3] [-c 50]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys

import netlab
from netlab import loadtools, peers
from netlab.monitor import Monitor, pin

TARGETS = {("keepalive", "nginx"): 0.5, ("close", "nginx"): 0.8,
           ("keepalive", "node"): 1.0, ("close", "node"): 1.0}


def start(name):
    if name == "epoll":
        return netlab.serve("epoll")
    return peers.PEERS[name].factory()


def one(name, mode, seconds, conc):
    with start(name) as srv:
        pin(srv, [0])
        loadtools.wrk(srv.url, conc, 1, keepalive=mode == "keepalive", cpus=[1])   # warm-up
        with Monitor(srv, cores=1) as mon:
            r = loadtools.wrk(srv.url, conc, seconds, keepalive=mode == "keepalive", cpus=[1])
        return r, mon.usage


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("-c", "--concurrency", type=int, default=50)
    args = p.parse_args(argv)
    if (os.cpu_count() or 1) < 2 or not shutil.which("wrk"):
        print("needs 2 cores and wrk (apt-get install wrk)")
        return 2
    names = ["epoll"] + [n for n in ("nginx", "node") if shutil.which(n)]
    rates = {}
    for rep in range(args.repeats):
        for mode in ("keepalive", "close"):
            for name in (names if rep % 2 == 0 else names[::-1]):
                r, u = one(name, mode, args.seconds, args.concurrency)
                busy = u.cpu_s / r.duration_s
                wrk_busy = r.client_cpu_s / r.duration_s
                rates.setdefault((mode, name), []).append(r.rps)
                print(f"{rep} {mode:<9} {name:<6} {r.rps:>9,.0f} req/s  errors {r.error_count}  "
                      f"server core {busy:.0%} busy, wrk {wrk_busy:.0%}", flush=True)
    print(f"\n{datetime.date.today()} · {platform.node()} · Linux {platform.release()} · "
          f"Python {platform.python_version()} · {os.cpu_count()} cores · "
          f"{args.concurrency} connections, {args.seconds:g} s × {args.repeats}")
    failed = 0
    for mode in ("keepalive", "close"):
        med = {n: statistics.median(rates[(mode, n)]) for n in names}
        line = f"{mode:<9} " + "  ".join(f"{n} {med[n]:,.0f}" for n in names)
        for peer in names[1:]:
            ratio = med["epoll"] / med[peer]
            target = TARGETS[(mode, peer)]
            ok = ratio >= target
            failed += not ok
            line += f"  | epoll/{peer} {ratio:.2f} (target ≥ {target}: {'ok' if ok else 'MISSED'})"
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
