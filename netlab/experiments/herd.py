"""The thundering herd: pre-forked workers sharing one accept() — who is woken per connection?

The claim (course notes, pre-forked children): processes waiting on one listening socket contend
for it, the thundering herd. Whether they do depends on *how* they wait. N forked workers wait;
a client connects once every worker sleeps (its state in /proc) and waits until one accepted
and closed it, N times over. Voluntary context switches (a worker going to sleep) per accepted
connection count the workers each connection woke:

    accept     blocking accept(): the kernel queues accept() waiters exclusively, wakes one  ≈ 1
    select     select(), then a non-blocking accept(): select wakes every waiter          ≈ N
    epoll      each worker's own level-triggered epoll on the shared socket: all wake       ≈ N
    exclusive  the same with EPOLLEXCLUSIVE: one wakes (≈ 1), but the kernel wakes the same one
               again and again, so one worker takes (nearly) every connection
    reuseport  one SO_REUSEPORT socket per worker, each with its own epoll: the kernel hashes a
               connection to one socket, so one worker wakes (≈ 1), and the split is even

Why not count EAGAIN (failed non-blocking accepts): a worker woken for a connection another one
took often never learns of it. select() and epoll_wait() re-check readiness in the kernel and,
finding nothing, sleep again; only a worker back in user space before the winner's accept() sees
EAGAIN — how often depends on cores and scheduling. Every wasted wake-up is a context switch:
that is the signal.

Who wins, with plain epoll: the kernel wakes the workers in a fixed order (``woken_first``), but
waking is not running. Each woken worker is queued on a core, all within microseconds; each core
then runs the worker its scheduler picks, and the first to reach accept() wins. So the split is
uneven, and differs from run to run. Traced here with ftrace (4 workers, 2 cores, 18 runs of
1,000-2,000 connections): the wake order was 3, 2, 1, 0 on every connection; the winner was the
first worker to run in 94-99.7% of them; the worker woken last won most often in 15 of 18 runs
and the first woken least (why the scheduler favours the latest wake-up is not established here;
which core the winner ran on followed no rule). A loser running on another core at the
same time as the winner can pass epoll_wait()'s re-check before the winner's accept() empties
the queue: its own accept() fails, an EAGAIN (99-100% of EAGAINs ran on another core than the
winner's). ``run(mode, log=True)`` and ``races(df)`` show this per connection: the winner, its
core, and the failed accepts with their cores.

The caller never forks (it may be a Jupyter kernel with threads): a child process forks the
workers, drives the client and prints JSON, within a deadline, leaving nothing behind.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time

from . import LineReader, command, standalone
from ..arguments import whole
from ..progress import Progress
from ..servers import FEATURES, NetlabError
from ..supervisor import Helper

MODES = ("accept", "select", "epoll", "exclusive", "reuseport")
NEEDS = {"accept": ("fork",), "select": ("fork",), "epoll": ("fork", "epoll"),
         "exclusive": ("fork", "epoll", "exclusive"), "reuseport": ("fork", "reuseport")}
EVEN = 0.2            # "even": every worker within ±20% of an equal share


def unavailable(mode: str) -> str:
    """Why ``mode`` cannot run here ('' when it can)."""
    return next((FEATURES[n][1] for n in NEEDS[mode] if not FEATURES[n][0]), "")


def sizes() -> dict:
    """Class sizes, or smaller ones in quick mode (NETLAB_QUICK)."""
    from ..env import quick_mode
    return dict(workers=4, connections=1000 if quick_mode() else 2000)


# -- in the experiment's own process: the workers and the client ------------------------------

def _waiter(mode, sock):
    """What a worker blocks in before it calls accept(). The epoll modes' instances are made
    (and the socket registered in them) by the parent, in worker order, before it forks: so
    the order of the socket's wait queue is known (see WOKEN_FIRST)."""
    if mode == "accept":
        return lambda: None                       # accept() itself blocks
    if mode == "select":
        return lambda: select.select([sock], [], [])
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN | (select.EPOLLEXCLUSIVE if mode == "exclusive"
                                                 else 0))
    wait = lambda: ep.poll(-1, 1)                 # noqa: E731
    wait.close = ep.close
    return wait


def _cpu_reader():
    """A function returning the core this process runs on (glibc's sched_getcpu), or -1."""
    try:
        import ctypes
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
        getcpu.restype = ctypes.c_int
        getcpu()
        return getcpu
    except (OSError, AttributeError, TypeError):
        return lambda: -1


def _worker(index, mode, wait, sock, out, log):
    import resource
    signal.signal(signal.SIGUSR1, signal.default_int_handler)   # "report now": raises
    accepted = eagain = 0
    events, clock, cpu = [], time.monotonic_ns, _cpu_reader()
    os.write(out, b"ready\n")
    start = resource.getrusage(resource.RUSAGE_SELF)
    try:
        while True:
            wait()
            try:
                conn, _ = sock.accept()
            except BlockingIOError:               # another worker took it first
                eagain += 1
                if log:                           # after the race: it cannot change who won
                    events.append((clock(), cpu(), 0))
                continue
            accepted += 1
            if log:
                events.append((clock(), cpu(), 1))
            conn.close()
    except KeyboardInterrupt:
        pass
    end = resource.getrusage(resource.RUSAGE_SELF)
    row = dict(worker=index, pid=os.getpid(), accepted=accepted, eagain=eagain,
               ctx_voluntary=end.ru_nvcsw - start.ru_nvcsw,
               ctx_involuntary=end.ru_nivcsw - start.ru_nivcsw)
    if log:
        row["events"] = events
    os.write(out, (json.dumps(row) + "\n").encode())


def _listeners(mode, workers):
    """One listening socket, or (reuseport) one per worker, all on the same port."""
    socks, addr = [], ("127.0.0.1", 0)
    for _ in range(workers if mode == "reuseport" else 1):
        s = socket.socket()
        if mode == "reuseport":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(addr)
        s.listen(4096)
        s.setblocking(mode == "accept")
        socks.append(s)
        addr = s.getsockname()
    return socks


def _wait_asleep(pids, deadline):
    """Until every worker sleeps: state S in /proc/PID/stat (without /proc: a short pause)."""
    if not os.path.isdir("/proc/self"):
        time.sleep(0.001)
        return
    while time.monotonic() < deadline and not all(_state(pid) in b"SZ" for pid in pids):
        time.sleep(0)


def _state(pid) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]      # after "pid (name)"
    except FileNotFoundError:
        return b"Z"


def measure(mode: str, workers: int, connections: int, timeout: float, log: bool = False) -> dict:
    """Fork the workers, make the connections, collect every worker's counts (this process).
    With ``log``, each worker also lists its accept() attempts (time, core, 1 if it got the
    connection) and the client each connection's start (time, core)."""
    from ..servers.forks import fork_all, stop_children
    deadline = time.monotonic() + timeout
    socks = _listeners(mode, workers)
    r, w = os.pipe()
    reports = LineReader(r, "the herd's workers")
    pids: set = set()
    waits = []
    clock, cpu, connects = time.monotonic_ns, _cpu_reader(), []
    try:
        # registered here, in worker order: the socket's wait queue has a known order
        waits = [_waiter(mode, socks[i % len(socks)]) for i in range(workers)]
        pids = fork_all([(_worker, (i, mode, waits[i], socks[i % len(socks)], w, log))
                         for i in range(workers)])
        for wait in waits:                        # the workers hold their own copies
            getattr(wait, "close", lambda: None)()
        reports.read(workers, deadline)           # every worker is about to wait
        t0 = time.perf_counter()
        for done in range(connections):
            _wait_asleep(pids, deadline)          # each connection meets all of them waiting
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"out of time after {done} connections")
            if log:
                connects.append((clock(), cpu()))
            with socket.create_connection(socks[0].getsockname(), timeout=left) as c:
                c.recv(1)                         # b"": a worker accepted and closed it
        seconds = time.perf_counter() - t0
        _wait_asleep(pids, deadline)              # the last losers' sleeps count too
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        rows = [json.loads(line) for line in reports.read(workers, deadline)]
    finally:
        stop_children(pids)
        for wait in waits:
            getattr(wait, "close", lambda: None)()
        for fd in (r, w):
            os.close(fd)
        for s in socks:
            s.close()
    out = dict(workers=sorted(rows, key=lambda row: row["worker"]), seconds=seconds)
    if log:
        out["connects"] = connects
    return out


def _child_main() -> None:
    try:
        print(json.dumps(measure(**json.loads(sys.argv[1]))), flush=True)
    except Exception as e:
        print(json.dumps(dict(error=f"{type(e).__name__}: {e}")), flush=True)


# -- in the caller: run that process, make tables, plot ---------------------------------------

def _run_child(spec: dict, timeout: float) -> dict:
    code = "from netlab.experiments.herd import _child_main; _child_main()"
    with Helper("herd", "-c", code, json.dumps(spec)).start() as child:
        out = child.output(timeout + 10)
        err = child.log()
    last = (out.decode().strip().splitlines() or ["{}"])[-1]
    result = json.loads(last) if last.startswith("{") else {}
    if "workers" not in result:
        why = result.get("error") or err.strip()[-500:]
        raise NetlabError(f"the herd experiment ({spec['mode']}) failed: {why}")
    return result


def woken_first(mode: str, workers: int):
    """The worker the kernel wakes first for each connection, where that order is fixed.

    Each worker's epoll instance (made by the parent, in worker order) has one entry in the
    listening socket's wait queue, and a connection walks that queue from its head. A plain
    registration goes in at the head (the kernel's add_wait_queue), so the last one, worker
    N − 1, is woken first; an EPOLLEXCLUSIVE one at the tail (add_wait_queue_exclusive), so
    worker 0 is first — and, the wait being exclusive, the only one. None for the other modes:
    select() and accept() queue their caller afresh on every call, and with reuseport each
    worker has a queue of its own."""
    return {"epoll": workers - 1, "exclusive": 0}.get(mode)


def run(mode: str, workers: int = 4, connections: int = 2000, timeout: float = 120.0,
        log: bool = False):
    """One mode: a DataFrame with a row per worker (accepted, eagain, ctx_voluntary,
    ctx_involuntary); ``df.attrs`` holds mode, workers, connections, seconds, available and
    reason (why not, when the mode cannot run here), and woken_first. ``summary(df)`` makes it
    one row. ``log=True`` also keeps who took each connection, on which core, and the failed
    accepts (``races(df)`` makes them a row per connection)."""
    import pandas as pd
    if mode not in MODES:
        raise NetlabError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    whole("workers", workers, 1, 256)
    whole("connections", connections, 1, 20000)
    if not isinstance(log, bool):
        raise NetlabError(f"log must be True or False, not {log!r}")
    why = unavailable(mode)
    attrs = dict(mode=mode, workers=workers, connections=connections, seconds=float("nan"),
                 available=not why, reason=why, woken_first=woken_first(mode, workers))
    rows = []
    if not why:
        out = _run_child(dict(mode=mode, workers=workers, connections=connections,
                              timeout=timeout, log=log), timeout)
        rows, attrs["seconds"] = out["workers"], out["seconds"]
        if log:
            attrs["connects"] = out["connects"]
            attrs["attempts"] = [[row["worker"], *e] for row in rows for e in row["events"]]
    df = pd.DataFrame(rows, columns=["worker", "pid", "accepted", "eagain", "ctx_voluntary",
                                     "ctx_involuntary"])
    df.attrs.update(attrs)
    return df


def races(df):
    """A ``run(..., log=True)`` as a row per connection: who took it (``winner``), on which core
    (``winner_core``) against the core the client connected from (``client_core``), whether the
    winner was the worker woken first (``first_woken``, where that is known), the failed accepts
    it caused (``eagain``) and how many of those ran on another core than the winner
    (``eagain_other_core``), and the time from connect() to the winner's accept (``accept_us``).

    Connections are made one at a time, each once every worker sleeps, so every accept attempt
    between one connection's start and the next belongs to it."""
    import bisect
    import pandas as pd
    a = df.attrs
    if "connects" not in a:
        raise NetlabError("races() needs a run with log=True: herd.run(mode, log=True)")
    starts = [t for t, _ in a["connects"]]
    rows = [dict(connection=i, client_core=core, winner=-1, winner_core=-1, eagain=0,
                 eagain_cores=[], accept_us=float("nan")) for i, (_, core) in enumerate(a["connects"])]
    for worker, t, core, ok in sorted(a["attempts"], key=lambda e: e[1]):
        i = bisect.bisect_right(starts, t) - 1
        if i < 0:
            continue
        row = rows[i]
        if ok:
            row.update(winner=worker, winner_core=core, accept_us=(t - starts[i]) / 1000)
        else:
            row["eagain"] += 1
            row["eagain_cores"].append(core)
    out = pd.DataFrame(rows)
    out["same_core"] = out["winner_core"] == out["client_core"]
    out["eagain_other_core"] = [sum(c != w for c in cs)
                                for cs, w in zip(out["eagain_cores"], out["winner_core"])]
    first = a.get("woken_first")
    out["first_woken"] = out["winner"] == first if first is not None else float("nan")
    return out.drop(columns="eagain_cores")


def summary(df) -> dict:
    """One mode's run as one row: accepted, ctx_per_conn (voluntary context switches of all
    workers / accepted), eagain, the split (counts, min/max share) and whether it was even."""
    a = df.attrs
    s = {k: a[k] for k in ("mode", "workers", "connections", "available", "reason")}
    if not a["available"] or not len(df):
        nan = float("nan")
        return dict(s, accepted=0, ctx_per_conn=nan, invol_per_conn=nan, eagain=0, split="",
                    min_share=nan, max_share=nan, even=False, seconds=nan)
    acc = df["accepted"]
    total, fair = int(acc.sum()), acc.sum() / len(acc)
    return dict(s, accepted=total, ctx_per_conn=df["ctx_voluntary"].sum() / max(total, 1),
                invol_per_conn=df["ctx_involuntary"].sum() / max(total, 1),
                eagain=int(df["eagain"].sum()), split="/".join(str(int(v)) for v in acc),
                min_share=acc.min() / max(total, 1), max_share=acc.max() / max(total, 1),
                even=bool(total and ((acc - fair).abs() <= EVEN * fair).all()),
                seconds=a["seconds"])


def run_all(modes=MODES, workers: int = 4, connections: int = 2000, progress=False):
    """Every mode in turn: one summary row each (an unavailable mode says why)."""
    import pandas as pd
    rows = []
    with Progress(progress, len(modes), "herd") as bar:
        for m in modes:
            bar.step(f"{m}, {workers} workers, {connections:,} connections")
            rows.append(summary(run(m, workers, connections)))
    return pd.DataFrame(rows)


def plot(summary_df):
    """Wake-ups per connection for each mode, and how each mode split the connections."""
    import matplotlib.pyplot as plt
    df = summary_df[summary_df["available"]]
    if not len(df):
        raise NetlabError("nothing to plot: no mode ran here")
    n = int(df["workers"].max())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(df["mode"], df["ctx_per_conn"], color="C0")
    ax1.axhline(1, color="C2", ls="--", label="one worker woken")
    ax1.axhline(n, color="C3", ls="--", label=f"all {n} workers woken")
    ax1.set(ylabel="voluntary context switches / connection", title="wake-ups per connection")
    ax1.legend(fontsize="small")
    counts = [[int(c) for c in split.split("/")] + [0] * n for split in df["split"]]
    bottom = [0.0] * len(df)
    for w in range(n):
        shares = [c[w] / max(sum(c), 1) for c in counts]
        ax2.bar(df["mode"], shares, bottom=bottom, label=f"worker {w}")
        bottom = [b + s for b, s in zip(bottom, shares)]
    ax2.set(ylabel="share of connections accepted", title="who accepted them")
    ax2.legend(fontsize="x-small", loc="lower right")
    fig.suptitle(f"Thundering herd: {n} forked workers, {int(df['connections'].max())} "
                 "connections made one at a time", fontsize="medium")
    fig.tight_layout()
    return fig


# -- command line: python -m netlab herd ... --------------------------------------------------

def _arguments(p):
    d = sizes()
    p.add_argument("--mode", choices=MODES + ("all",), default="all",
                   help="how the workers wait (default: all)")
    p.add_argument("--workers", type=int, default=d["workers"], help="forked workers")
    p.add_argument("--connections", type=int, default=d["connections"],
                   help="connections, made one at a time")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd(args) -> int:
    modes = MODES if args.mode == "all" else (args.mode,)
    frames = []
    with Progress(not args.json and sys.stderr.isatty(), len(modes), "herd") as bar:
        for m in modes:
            bar.step(m)
            frames.append(run(m, args.workers, args.connections))
    rows = [dict(summary(df), per_worker=df.to_dict("records")) for df in frames]
    if args.json:
        print(json.dumps(rows, indent=2, default=int))
        return 0
    print(f"{args.workers} workers, {args.connections} connections made one at a time\n"
          f"{'mode':<10} {'ctx/conn':>8} {'eagain':>7}  {'even':<5} accepted per worker")
    for r in rows:
        print(f"{r['mode']:<10} unavailable: {r['reason']}" if not r["available"] else
              f"{r['mode']:<10} {r['ctx_per_conn']:>8.2f} {r['eagain']:>7}  "
              f"{'yes' if r['even'] else 'no':<5} {r['split']}")
    return 0


def add_cli(subparsers) -> None:
    """Add ``herd`` to netlab's command line."""
    command(subparsers, "herd", "thundering herd: workers woken per connection", _arguments, _cmd)


def main(argv=None) -> int:
    return standalone("herd", __doc__, _arguments, _cmd, argv)


if __name__ == "__main__":
    sys.exit(main())
