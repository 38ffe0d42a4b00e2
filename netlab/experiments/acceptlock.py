"""Accept-lock contention: a pre-threaded pool takes turns on accept() under one mutex.

The claim (course notes, pre-threaded pool): the mutex around accept() is contended. This runs the ``prethreaded`` model's own code, its mutex one
that counts its waits, across pool sizes under a fixed load (concurrent clients, a connection per
request) and reports per connection: thread-time spent waiting for the lock, the share of
acquisitions that found it taken, the server's context switches and CPU, and the throughput with
what limited it. ``lock=False`` is the same pool with no mutex, for comparison.

What it shows: every thread not serving a connection queues on the lock (its holder sits in
accept()), so the time waited per connection grows with the pool (about queued threads divided
by throughput) and many acquisitions find the lock taken. Not all: CPython's lock is not fair,
and a thread back from a connection can take it before the waiter woken for it runs.

Whether the lock costs *throughput*, only a run the server's CPU limits can say. With a trivial
handler netlab's load generator needs about as much CPU per connection as this server (both are
Python: ~80-100 µs each, here), so runs are often client-bound, and a client-bound run compares
clients, not locks. ``cpu_us`` of work per
request, ``pin=True`` (the server on core 0, the clients on the others) and enough clients that
a connection is always waiting make the server the limit. Each row says what limited it
(``limited_by``) and how many cores other processes kept busy meanwhile (``others_cores``).

The server runs in its own process group; asked on stdin, it answers with its lock counts and
getrusage() (every thread), so only the load's window is counted. Closing its stdin ends it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from . import LineReader, command, standalone
from ..arguments import comma_counts, whole
from ..progress import Progress
from ..servers import NetlabError
from ..supervisor import Helper

POOL_SIZES = (1, 2, 4, 8, 16, 32, 64)


def sizes() -> dict:
    """Class sizes, or small ones in quick mode (NETLAB_QUICK)."""
    from ..env import quick_mode
    if quick_mode():
        return dict(pool_sizes=(1, 4, 16), connections=300, concurrency=8)
    return dict(pool_sizes=POOL_SIZES, connections=2000, concurrency=8)


class CountingLock:
    """A mutex that counts acquisitions, those that found it taken, and the thread-time spent
    waiting for it — waits still in progress included, so any window can be measured."""

    def __init__(self):
        self._lock = threading.Lock()
        self._book = threading.Lock()             # guards the counts, held only briefly
        self._waiting = {}                        # thread id -> when it began to wait
        self.acquired = self.waited = 0
        self.wait_s = 0.0

    def __enter__(self):
        if not self._lock.acquire(blocking=False):   # taken: wait, and time it
            me, t0 = threading.get_ident(), time.perf_counter()
            with self._book:
                self._waiting[me] = t0
            self._lock.acquire()
            with self._book:
                del self._waiting[me]
                self.wait_s += time.perf_counter() - t0
                self.waited += 1
        self.acquired += 1                        # we hold the lock: no race

    def __exit__(self, *exc):
        self._lock.release()

    def snapshot(self) -> dict:
        with self._book:
            now = time.perf_counter()
            ongoing = sum(now - t for t in self._waiting.values())
            return dict(acquired=self.acquired, waited=self.waited, wait_s=self.wait_s + ongoing)


# -- in the measured server's process ---------------------------------------------------------

def _report(lock) -> None:
    """Answer each line on stdin with our counts; at end-of-stdin, exit."""
    import resource
    while sys.stdin.readline():
        ru = resource.getrusage(resource.RUSAGE_SELF)   # every thread of this process
        snap = lock.snapshot() if lock else {}
        print(json.dumps(dict(snap, vol=ru.ru_nvcsw, invol=ru.ru_nivcsw,
                              cpu=ru.ru_utime + ru.ru_stime)), flush=True)
    os._exit(0)


def _announce(listen, pool: int) -> None:
    """Say the port only once the whole pool is up and queued on the lock: a load that starts
    earlier would be counted against a pool still being created."""
    deadline = time.monotonic() + 10
    while threading.active_count() < pool + 3 and time.monotonic() < deadline:
        time.sleep(0.005)      # main + reporter + announcer + the pool
    time.sleep(0.05)
    print(json.dumps(dict(port=listen.getsockname()[1])), flush=True)


def _server_main() -> None:
    from ..sockets import open_listener
    from ..servers import forks, prethreaded
    from ..workload import App, Workload
    spec = json.loads(sys.argv[1])
    forks.die_with_parent(spec["parent"])
    listen = open_listener("127.0.0.1", 0)
    lock = CountingLock() if spec["lock"] else False
    threading.Thread(target=_report, args=(lock,), daemon=True).start()
    threading.Thread(target=_announce, args=(listen, spec["pool"]), daemon=True).start()
    prethreaded.serve(listen, App(Workload(backend_ms=spec["backend_ms"],
                                                cpu_us=spec.get("cpu_us", 0.0))),
                      workers=spec["pool"], lock=lock)


# -- in the caller: start it, load it, ask it -------------------------------------------------

_CHILD = "from netlab.experiments.acceptlock import _server_main; _server_main()"


def _ask(child, answers, deadline: float, question: bytes = b"") -> dict:
    """One answer from the measured server; if it died, one sentence with its last log line."""
    try:
        if question:
            child.proc.stdin.write(question)
            child.proc.stdin.flush()
        return json.loads(answers.line(deadline))
    except (BrokenPipeError, NetlabError) as e:
        why = child.last_line() or str(e)
        raise NetlabError(f"the measured prethreaded server failed: {why}") from None


def measure(pool: int, lock: bool, connections: int, concurrency: int,
            backend_ms: float = 0.0, cpu_us: float = 0.0, pin: bool = False,
            processes=None, timeout: float = 120.0) -> dict:
    """One pool size: start the server, load it with netlab's load generator (``concurrency``
    clients, a connection per request, ``connections`` requests), return one row.

    ``cpu_us`` of CPU work per request and ``pin=True`` (the server on core 0, the clients on the
    others) make the server, not the client, the limit: only such a run can say what the lock
    costs in throughput. ``processes``: load-generator processes (default: one per client core).
    """
    from .. import load
    from ..harness import _machine_busy, _own_cpu
    from ..monitor import pin as pin_tree
    from ..results import limited_by
    spec = dict(pool=pool, lock=lock, backend_ms=backend_ms, cpu_us=cpu_us, parent=os.getpid())
    deadline = time.monotonic() + timeout
    cpus = os.cpu_count() or 1
    server_cpus, client_cpus = ([0], list(range(1, cpus))) if pin else (None, None)
    if pin and cpus < 2:
        raise NetlabError("pin=True needs at least 2 cores (the server on one, the clients on "
                          "the others); use pin=False")
    with Helper("acceptlock", "-c", _CHILD, json.dumps(spec), stdin=subprocess.PIPE).start() \
            as child:
        answers = LineReader(child.proc.stdout, "the measured prethreaded server")
        port = _ask(child, answers, deadline)["port"]
        if pin:
            pin_tree(child.proc.pid, server_cpus)      # every thread of the pool, too
        before = []

        def started():              # the clients are connected: count from here
            before.append((_ask(child, answers, deadline, b"?\n"), _machine_busy(), _own_cpu()))

        lr = load.run(f"http://127.0.0.1:{port}/", concurrency, requests=connections,
                      processes=processes, cpus=client_cpus,
                      timeout=max(1.0, min(10.0, deadline - time.monotonic())),
                      max_seconds=max(1.0, deadline - time.monotonic()), on_start=started)
        after = _ask(child, answers, deadline, b"?\n")
    (first, busy0, own0), seconds = before[0], max(lr.duration_s, 1e-9)
    n = max(lr.requests, 1)
    d = {k: after.get(k, 0) - first.get(k, 0) for k in after}
    # what the rest of the machine did meanwhile (other processes, this one): a busy neighbour
    # takes cores the server and the clients could have used
    # (this process, which asks and collects, is part of measuring, not other: but the cores it
    # took were not there for the server or the clients either)
    own = max(0.0, _own_cpu() - own0)
    others = max(0.0, _machine_busy() - busy0 - own - d["cpu"] - lr.client_cpu_s) / seconds
    # one Python process: one core at most, whatever its threads (the GIL)
    verdict, why = limited_by(lr.duration_s, d["cpu"], 1.0, lr.client_cpu_s, lr.client_cores,
                              cpus, others + own / seconds)
    if others >= 0.5:
        why += (f"; other processes kept {others:.1f} core(s) busy meanwhile, so the numbers are "
                "disturbed: rerun on a quieter machine")
    return dict(pool=pool, lock=lock, concurrency=concurrency, backend_ms=backend_ms,
                cpu_us=cpu_us, pinned=pin, connections=connections, served=lr.requests,
                errors=lr.error_count, seconds=lr.duration_s, rps=lr.rps,
                lock_wait_us_per_conn=d.get("wait_s", 0.0) / n * 1e6,
                waited=d.get("waited", 0),
                waited_share=d.get("waited", 0) / max(d.get("acquired", 0), 1),
                ctx_vol_per_conn=d["vol"] / n, ctx_invol_per_conn=d["invol"] / n,
                server_cpu_us_per_conn=d["cpu"] / n * 1e6, server_cpu_s=d["cpu"],
                client_cpu_s=lr.client_cpu_s, client_cores=lr.client_cores,
                others_cores=round(others, 3), limited_by=verdict, why=why)


def run(pool_sizes=None, connections=None, lock=True, concurrency=None, backend_ms=0.0,
        cpu_us=0.0, pin=False, processes=None, repeats=1, progress=False):
    """One row per pool size (per lock setting, if ``lock=(True, False)``; per repeat): lock
    wait per connection (µs), acquisitions that waited, context switches and server CPU per
    connection, throughput, and what limited it. ``cpu_us``, ``pin`` and ``processes`` go to
    ``measure``: with them the server, not the client, can be the limit. With and without the
    lock alternate at each pool size, and repeats come round after round, each round in the
    opposite order to the one before (with, without; without, with; ...): a machine that gets
    busier or quieter meanwhile disturbs both alike, and the runs of one repeat make a pair to
    compare, neither always first. Defaults: class sizes, or quick ones (NETLAB_QUICK)."""
    import pandas as pd
    d = sizes()
    pool_sizes = tuple(pool_sizes or d["pool_sizes"])
    connections = connections or d["connections"]
    concurrency = concurrency or d["concurrency"]
    locks = (lock,) if isinstance(lock, bool) else tuple(lock)
    for name, v, top in [("pool size", n, 1024) for n in pool_sizes] + [
            ("connections", connections, 100000), ("concurrency", concurrency, 1000),
            ("repeats", repeats, 20)]:
        whole(name, v, 1, top)
    if not locks or not all(isinstance(v, bool) for v in locks):
        raise NetlabError(f"lock must be True, False or (True, False), not {lock!r}")
    if not isinstance(pin, bool):
        raise NetlabError(f"pin must be True or False, not {pin!r}")
    rows = []
    todo = [(rep, n, lk) for rep in range(repeats) for n in pool_sizes
            for lk in (locks if rep % 2 == 0 else locks[::-1])]
    with Progress(progress, len(todo), "accept lock") as bar:
        for rep, n, lk in todo:
            bar.step(f"pool {n}, lock {'on' if lk else 'off'}"
                     + (f", repeat {rep + 1}" if repeats > 1 else ""))
            row = measure(n, lk, connections, concurrency, backend_ms, cpu_us, pin, processes)
            rows.append(dict(row, repeat=rep))
    return pd.DataFrame(rows)


def plot(df):
    """Lock wait per connection, context switches per connection and throughput against pool
    size (log x), with and without the lock (the median of the repeats, if any)."""
    import matplotlib.pyplot as plt
    if not len(df):
        raise NetlabError("nothing to plot: the table is empty")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("lock_wait_us_per_conn", "time waiting for the accept lock\nper connection (µs)"),
              ("ctx_vol_per_conn", "voluntary context switches\nper connection"),
              ("rps", "throughput (connections / s)"))
    for ax, (col, label) in zip(axes, panels):
        for lk, g in df.groupby("lock", sort=False):
            g = g.groupby("pool")[col].median()
            ax.plot(g.index, g.values, "o-", label="with the lock" if lk else "no lock")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("threads in the pool (log)")
        ax.set_title(label, fontsize="small")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    limits = "/".join(sorted(df["limited_by"].unique()))
    cpu = float(df["cpu_us"].iloc[0]) if "cpu_us" in df else 0.0
    pinned = bool(df["pinned"].iloc[0]) if "pinned" in df else False
    fig.suptitle(f"Accept-lock contention: prethreaded pool, {int(df['concurrency'].iloc[0])} "
                 f"clients, a connection per request" + (f", {cpu:g} µs CPU each" if cpu else "")
                 + (", server pinned to a core" if pinned else "")
                 + f" (limited by: {limits})", fontsize="medium")
    fig.tight_layout()
    return fig


# -- command line: python -m netlab acceptlock ... --------------------------------------------

def _arguments(p):
    d = sizes()
    p.add_argument("--pool-sizes", type=comma_counts, default=d["pool_sizes"], metavar="N,N,...",
                   help="threads in the pool (default %s)" % ",".join(map(str, d["pool_sizes"])))
    p.add_argument("--connections", type=int, default=d["connections"],
                   help="connections per pool size")
    p.add_argument("--concurrency", type=int, default=d["concurrency"], help="client threads")
    p.add_argument("--no-lock", action="store_true", help="no mutex around accept()")
    p.add_argument("--both", action="store_true", help="with and without the lock")
    p.add_argument("--cpu-us", type=float, default=0.0, help="CPU work per request (µs)")
    p.add_argument("--pin", action="store_true",
                   help="server on core 0, the load generator on the others")
    p.add_argument("--repeats", type=int, default=1, help="runs of each setting")
    p.add_argument("--json", action="store_true", help="machine-readable output")


TABLE = {"pool": "pool", "lock": "lock", "served": "served", "lock_wait_us_per_conn":
         "lock wait µs/conn", "waited_share": "had to wait", "ctx_vol_per_conn": "vol ctx/conn",
         "ctx_invol_per_conn": "invol ctx/conn", "rps": "conn/s", "limited_by": "limited by"}


def _cmd(args) -> int:
    lock = (True, False) if args.both else not args.no_lock
    df = run(args.pool_sizes, args.connections, lock, args.concurrency, cpu_us=args.cpu_us,
             pin=args.pin, repeats=args.repeats, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(df.to_json(orient="records", indent=2))
        return 0
    print(table(df))
    return 0


def table(df) -> str:
    """The rows as a plain-text table (what the CLI prints)."""
    fmt = {"lock wait µs/conn": "{:.0f}".format, "had to wait": "{:.0%}".format,
           "conn/s": "{:.0f}".format}
    return (f"prethreaded pool, {df['concurrency'].iloc[0]} clients, a connection per request\n"
            + df[list(TABLE)].rename(columns=TABLE).to_string(index=False, formatters=fmt,
                                                              float_format="{:.2f}".format))


def add_cli(subparsers) -> None:
    """Add ``acceptlock`` to netlab's command line."""
    command(subparsers, "acceptlock", "accept-lock contention against pool size", _arguments, _cmd)


def main(argv=None) -> int:
    return standalone("acceptlock", __doc__, _arguments, _cmd, argv)


if __name__ == "__main__":
    sys.exit(main())
