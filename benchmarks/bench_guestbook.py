"""The guestbook's throughput by style, and netlab's epoll against Tokio on one core (a script).

1. ``GET /guestbook`` (three Redis calls) under 20 clients, on ``threaded`` (blocking calls),
   ``epoll`` (the calls on the loop's own Redis socket) and ``asyncio`` (awaited), with Redis
   next door and 5 ms away (netlab's delay proxy): the median rate of ``--repeats`` runs each,
   in alternating order, and the loop's ratio to the blocking model's.
2. netlab's ``epoll`` model against Tokio's current-thread runtime (one thread, the same
   design), each pinned to core 0, keep-alive, wrk on core 1 (netlab's generator if wrk is
   missing): the ratio, by rate and by server CPU per request. Target (benchmarks/README.md):
   epoll ≥ 0.6× Tokio on one core. A third row, a bare Python epoll loop with no protocol
   (``bare_loop``), shows where the gap is: in the protocol work, not in the loop.

    .venv/bin/python benchmarks/bench_guestbook.py [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys

import netlab
from netlab import peers
from netlab.experiments import ripping

from _pinned import TOOL, pinned_load

TOKIO_TARGET = 0.6


def guestbook(seconds, repeats):
    rates = {}
    for delay in (0.0, 5.0):
        for rep in range(repeats):
            styles = list(ripping.STYLES) if rep % 2 == 0 else list(ripping.STYLES)[::-1]
            df = ripping.load(concurrency=20, delay_ms=delay, duration=seconds, styles=styles)
            for r in df.itertuples():
                rates.setdefault((delay, r.style), []).append((r.rps, r.limited_by))
    print("GET /guestbook, 20 clients, a connection per request (median of runs):")
    print(f"{'Redis':>10} {'style':>20} {'req/s':>9}  limited by")
    for (delay, style), runs in sorted(rates.items()):
        rps = statistics.median(r for r, _ in runs)
        print(f"{(f'{delay:g} ms away' if delay else 'next door'):>10} {style:>20} {rps:>9,.0f}  "
              f"{', '.join(sorted({lim for _, lim in runs}))}")
    for delay in (0.0, 5.0):
        block = statistics.median(r for r, _ in rates[(delay, "blocking")])
        loop = statistics.median(r for r, _ in rates[(delay, "states on the loop")])
        print(f"Redis {delay:g} ms away: the loop / blocking = {loop / block:.2f}")


ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
          b"Connection: keep-alive\r\n\r\nHello from netlab!\n")


def bare_loop(listen, app):
    """The floor: netlab's epoll design with no protocol at all (a canned answer per blank line,
    no parser, no session, no driver). Only for this measurement: it checks nothing."""
    import select
    listen.setblocking(False)
    ep, conns = select.epoll(), {}
    ep.register(listen.fileno(), select.EPOLLIN)
    while True:
        for fd, _ in ep.poll():
            if fd == listen.fileno():
                sock, _ = listen.accept()
                sock.setblocking(False)
                conns[fd := sock.fileno()] = sock
                ep.register(fd, select.EPOLLIN)
                continue
            try:
                data = conns[fd].recv(65536)
            except OSError:
                data = b""
            if data:
                conns[fd].send(ANSWER * data.count(b"\r\n\r\n"))
            else:
                ep.unregister(fd)
                conns.pop(fd).close()


SERVERS = {"epoll": lambda: netlab.serve("epoll"),
           "tokio-current": lambda: peers.PEERS["tokio-current"].factory(),
           "bare Python loop": lambda: netlab.serve(bare_loop)}


def tokio(seconds, repeats):
    why = dict((n, r) for n, _, r in peers.available_peers())["tokio-current"]
    if why:
        print(f"Tokio: not run, {why}")
        return
    runs = {name: [] for name in SERVERS}
    for rep in range(repeats):
        for name in (list(SERVERS) if rep % 2 == 0 else list(SERVERS)[::-1]):
            with SERVERS[name]() as srv:
                rps, requests, usage = pinned_load(srv, seconds)
            runs[name].append((rps, usage.cpu_s / usage.seconds, usage.cpu_s / requests * 1e6))
    print(f"\nkeep-alive, 50 connections, server on core 0, {TOOL} on core 1 "
          f"(median of {repeats}):")
    med = {name: [statistics.median(run[i] for run in rs) for i in range(3)]
           for name, rs in runs.items()}
    for name, (rps, busy, us) in med.items():
        print(f"  {name:>16}: {rps:>9,.0f} req/s, server core {busy:.0%} busy, "
              f"{us:.1f} µs of server CPU per request")
    by_rate = med["epoll"][0] / med["tokio-current"][0]
    by_cpu = med["tokio-current"][2] / med["epoll"][2]
    # judged by capacity: one wrk core cannot saturate Tokio, so its rate understates it
    print(f"  epoll / Tokio (current thread) = {by_rate:.2f} by rate, {by_cpu:.2f} by server CPU "
          f"per request, i.e. by capacity (target ≥ {TOKIO_TARGET}: "
          f"{'met' if by_cpu >= TOKIO_TARGET else 'NOT met'}; the rate ratio flatters epoll "
          "whenever Tokio's core is less than fully busy)")
    bare = med["tokio-current"][2] / med["bare Python loop"][2]
    print(f"  the bare Python loop / Tokio = {bare:.2f} by server CPU per request: the loop "
          "itself is not the gap, the protocol is")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores")
        return 2
    print(f"{datetime.date.today()}, {platform.system()} {platform.release()}, Python "
          f"{platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n")
    if netlab.peers.redis_binary()[0] is None:
        print(f"guestbook: not run, {netlab.peers.redis_binary()[1]}")
    else:
        guestbook(args.seconds, args.repeats)
    tokio(args.seconds, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
