"""io_uring against epoll on the same HTTP and harness: the uring model's ratios (a script).

1. System calls per request under ``strace -c`` (an idle twin subtracted), keep-alive and a
   connection per request: uring (batch=True and batch=False) against epoll.
2. Server CPU per request (user, system) and throughput, keep-alive and a connection per
   request, for epoll, uring and uring with io_uring's default interruptions (coop=False):
   each pinned to core 0, wrk on core 1 (netlab's generator if wrk is missing),
   ``--repeats`` runs in alternating order; the ratios uring / epoll, and how busy the server's
   core was (a rate ratio carries only when both cores were the server's limit).
3. 10,000 idle connections held (fewer if the fd limit says so), then busy clients: memory per
   connection, the server's and the kernel's.

Targets (benchmarks/README.md): fewer system calls per request than epoll at keep-alive; the
rest is recorded, not targeted: when io_uring wins and when it does not is the chapter's point.

    .venv/bin/python benchmarks/bench_uring.py [--seconds 3] [--repeats 3]
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
from netlab.experiments import completion

from _pinned import TOOL, pinned_load

MODES = completion.MODES            # name -> keep-alive?


def system_calls():
    if shutil.which("strace") is None:
        print("system calls: not run, strace is missing (apt-get install strace)")
        return
    table = completion.per_request(completion.syscalls())
    print("system calls per request (strace -c, 2,000 requests, 4 clients):")
    print(table.round(2).to_string())
    for mode in MODES:
        ep, ur = table.loc[(mode, "epoll"), "all"], table.loc[(mode, "uring"), "all"]
        print(f"  {mode}: uring / epoll = {ur / ep:.2f} ({ur:.2f} against {ep:.2f})"
              + ("  (target < 1: met)" if mode == "keep-alive" and ur < ep else ""))


CPU_VARIANTS = ("epoll", "uring", "uring, coop=False")


def cpu_and_rate(seconds, repeats):
    runs = {(mode, v): [] for mode in MODES for v in CPU_VARIANTS}
    for rep in range(repeats):
        for mode, keepalive in MODES.items():
            for v in (CPU_VARIANTS if rep % 2 == 0 else CPU_VARIANTS[::-1]):
                model, options = completion.VARIANTS[v]
                with netlab.serve(model, **options) as srv:
                    rps, n, u = pinned_load(srv, seconds, keepalive)
                runs[(mode, v)].append((rps, u.cpu_s / u.seconds,
                                        u.cpu_user_s / n * 1e6, u.cpu_sys_s / n * 1e6))
    print(f"\n50 clients, server on core 0, {TOOL} on core 1 (median of {repeats}):")
    med = {k: [statistics.median(r[i] for r in v) for i in range(4)] for k, v in runs.items()}
    for (mode, v), (rps, busy, user, system) in med.items():
        print(f"  {mode:>24} {v:>17}: {rps:>8,.0f} req/s, server core {busy:.0%} busy, "
              f"{user:.1f} µs user + {system:.1f} µs system per request")
    for mode in MODES:
        for v in CPU_VARIANTS[1:]:
            (re, be, ue, se), (ru, bu, uu, su) = med[(mode, "epoll")], med[(mode, v)]
            bound = min(be, bu) >= 0.9
            print(f"  {mode}: {v} / epoll: CPU per request {(uu + su) / (ue + se):.2f} (user "
                  f"{uu / ue:.2f}, system {su / se:.2f}), rate {ru / re:.2f}"
                  + ("" if bound else " (a server core was under 90% busy: the rate ratio is "
                                      "the load generator's, not the models')"))


def idle():
    df = completion.idle()
    cols = [c for c in ("variant", "held", "uss_kb_per_conn", "kernel_kb_per_conn", "rps",
                        "p99_ms", "limited_by") if c in df.columns]
    print("\nidle connections held, then busy clients:")
    print(df[cols].round(2).to_string(index=False))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if completion.unavailable():
        print(f"uring: not run, {completion.unavailable()}")
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores")
        return 2
    print(f"{datetime.date.today()}, {platform.system()} {platform.release()}, Python "
          f"{platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n")
    system_calls()
    cpu_and_rate(args.seconds, args.repeats)
    idle()
    return 0


if __name__ == "__main__":
    sys.exit(main())
