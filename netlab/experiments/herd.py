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
EAGAIN — how often depends on cores and scheduling (here: rarely with select, for about half the
connections with epoll). Every wasted wake-up is a context switch: that is the signal.

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
    """What a worker blocks in before it calls accept()."""
    if mode == "accept":
        return lambda: None                       # accept() itself blocks
    if mode == "select":
        return lambda: select.select([sock], [], [])
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN | (select.EPOLLEXCLUSIVE if mode == "exclusive"
                                                 else 0))
    return lambda: ep.poll(-1, 1)


def _worker(index, mode, sock, out):
    import resource
    signal.signal(signal.SIGUSR1, signal.default_int_handler)   # "report now": raises
    wait, accepted, eagain = _waiter(mode, sock), 0, 0
    os.write(out, b"ready\n")
    start = resource.getrusage(resource.RUSAGE_SELF)
    try:
        while True:
            wait()
            try:
                conn, _ = sock.accept()
            except BlockingIOError:               # another worker took it first
                eagain += 1
                continue
            accepted += 1
            conn.close()
    except KeyboardInterrupt:
        pass
    end = resource.getrusage(resource.RUSAGE_SELF)
    row = dict(worker=index, pid=os.getpid(), accepted=accepted, eagain=eagain,
               ctx_voluntary=end.ru_nvcsw - start.ru_nvcsw,
               ctx_involuntary=end.ru_nivcsw - start.ru_nivcsw)
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


def measure(mode: str, workers: int, connections: int, timeout: float) -> dict:
    """Fork the workers, make the connections, collect every worker's counts (this process)."""
    from ..servers.forks import fork_all, stop_children
    deadline = time.monotonic() + timeout
    socks = _listeners(mode, workers)
    r, w = os.pipe()
    reports = LineReader(r, "the herd's workers")
    pids: set = set()
    try:
        pids = fork_all([(_worker, (i, mode, socks[i % len(socks)], w)) for i in range(workers)])
        reports.read(workers, deadline)           # every worker is about to wait
        t0 = time.perf_counter()
        for done in range(connections):
            _wait_asleep(pids, deadline)          # each connection meets all of them waiting
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"out of time after {done} connections")
            with socket.create_connection(socks[0].getsockname(), timeout=left) as c:
                c.recv(1)                         # b"": a worker accepted and closed it
        seconds = time.perf_counter() - t0
        _wait_asleep(pids, deadline)              # the last losers' sleeps count too
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        rows = [json.loads(line) for line in reports.read(workers, deadline)]
    finally:
        stop_children(pids)
        for fd in (r, w):
            os.close(fd)
        for s in socks:
            s.close()
    return dict(workers=sorted(rows, key=lambda row: row["worker"]), seconds=seconds)


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


def run(mode: str, workers: int = 4, connections: int = 2000, timeout: float = 120.0):
    """One mode: a DataFrame with a row per worker (accepted, eagain, ctx_voluntary,
    ctx_involuntary); ``df.attrs`` holds mode, workers, connections, seconds, available and
    reason (why not, when the mode cannot run here). ``summary(df)`` makes it one row."""
    import pandas as pd
    if mode not in MODES:
        raise NetlabError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    whole("workers", workers, 1, 256)
    whole("connections", connections, 1, 20000)
    why = unavailable(mode)
    attrs = dict(mode=mode, workers=workers, connections=connections, seconds=float("nan"),
                 available=not why, reason=why)
    rows = []
    if not why:
        out = _run_child(dict(mode=mode, workers=workers, connections=connections,
                              timeout=timeout), timeout)
        rows, attrs["seconds"] = out["workers"], out["seconds"]
    df = pd.DataFrame(rows, columns=["worker", "pid", "accepted", "eagain", "ctx_voluntary",
                                     "ctx_involuntary"])
    df.attrs.update(attrs)
    return df


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
