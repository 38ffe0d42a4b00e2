"""System calls per request: a server's architecture is visible in what it asks of the kernel.

For one request, the forking model pays a clone (fork) and a wait4, the thread-per-connection
model a clone3, the locked pool futex calls around accept(), and the event loops one
select/poll/epoll_wait per batch of ready sockets besides the accept, recv, send and close every
model makes. Node.js and Java NIO (when installed) sit on epoll_wait like netlab's epoll model.
The uring model makes none of those: its accepts, recvs, sends and closes are entries in a ring,
carried by one io_uring_enter per batch (strace counts that call, not the work inside it).

How it shows it: the server is started under ``strace -f -c`` (strace must start it: attaching
to a running process needs privileges most students lack), and so is a twin, at the same moment.
Both get the same few warm-up requests; then only the first is loaded with N requests. Both are
stopped together (strace writes its table when the server exits) and the twin's counts — start-up,
imports, idle timeouts, shutdown — are subtracted from the loaded server's: what is left is what
the N requests cost, per request. strace slows each system call by microseconds: trust the
counts, not the timings.

    python -m netlab syscalls forking threaded epoll --requests 1000
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from . import command, standalone
from ..progress import Progress
from ..servers import NetlabError

PEERS = ("node", "java", "tokio", "tokio-current", "uvloop")
WARMUP = 20                      # requests both servers get before the measured load
NOISE = 0.01                     # calls per request below this are start-up noise: dropped
COLUMNS = ["syscall", "calls", "calls_per_request", "errors", "errors_per_request", "seconds",
           "us_per_call"]


def sizes() -> dict:
    """Class sizes, or small ones in quick mode (NETLAB_QUICK)."""
    from ..env import quick_mode
    return dict(requests=300 if quick_mode() else 2000, concurrency=4)


def strace() -> str:
    """The strace executable; one sentence if it is missing."""
    exe = shutil.which("strace")
    if exe is None:
        raise NetlabError("strace is not installed: apt-get install strace")
    return exe


def parse(text: str) -> dict:
    """strace -c's table → {syscall: (calls, errors, seconds)}."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 5 or not f[0][0].isdigit() or f[-1] == "total":
            continue
        try:
            out[f[-1]] = (int(f[3]), int(f[4]) if len(f) > 5 else 0, float(f[1]))
        except ValueError:
            continue
    return out


def _start(target, wrap, serve_kwargs):
    """A model (by name) via netlab.serve, or a peer (node, java) from netlab.peers, either way
    as the child of ``wrap``."""
    if target not in PEERS:
        from ..lifecycle import Server
        return Server(target, wrap=wrap, **serve_kwargs).start()
    from .. import peers
    reason = dict((n, r) for n, _, r in peers.available_peers()).get(target)
    if reason:
        raise NetlabError(reason)
    if serve_kwargs:
        raise NetlabError(f"the {target} peer takes no options, not {sorted(serve_kwargs)}")
    return peers.PEERS[target].factory(wrap=wrap)


def _end_traced(srv) -> None:
    """Stop the traced server first and let strace exit after it, writing its summary. The
    usual stop (SIGTERM to the whole group) reaches strace too, and strace ended by a signal
    left an empty summary in 2 of 4 runs on a loaded machine."""
    import psutil
    from ..monitor import wait_until
    try:
        for tracee in psutil.Process(srv.pid).children():
            tracee.terminate()
    except psutil.Error:
        pass
    wait_until(lambda: not srv.alive, timeout=10)
    srv.stop(check=False)       # reaps strace, and whatever is left of the group


def _traced(target, requests, concurrency, keepalive, serve_kwargs):
    """Run the loaded server and its idle twin under strace: (loaded table, twin table, load)."""
    from .. import load
    exe = strace()
    with tempfile.TemporaryDirectory(prefix="netlab-strace-") as d:
        outs = [os.path.join(d, name) for name in ("loaded", "twin")]
        started = []
        try:
            for out in outs:
                started.append(_start(target, [exe, "-f", "-c", "-q", "-o", out], serve_kwargs))
            for srv in started:
                load.run(srv.url, 1, requests=WARMUP, keepalive=keepalive, timeout=10)
            lr = load.run(started[0].url, concurrency, requests=requests, keepalive=keepalive,
                          timeout=10, max_seconds=300)
        finally:
            for srv in started:
                _end_traced(srv)
        tables = []
        for out in outs:
            with open(out) as f:
                tables.append(parse(f.read()))
    if not tables[0]:
        raise NetlabError(f"strace wrote no summary for {target}: {started[0].log()[-300:]}")
    return tables[0], tables[1], lr


def profile(model_or_peer="epoll", requests=None, concurrency=None, keepalive=False,
            **serve_kwargs):
    """System calls per request of a model (netlab.serve keywords allowed) or a peer (node,
    java): a row per syscall with calls, calls_per_request, errors and strace's seconds, after
    subtracting an idle twin's counts (see the module docstring). Sorted by calls."""
    import pandas as pd
    d = sizes()
    requests, concurrency = requests or d["requests"], concurrency or d["concurrency"]
    if model_or_peer not in PEERS:
        from ..servers import get
        get(model_or_peer)                        # an unknown name: one sentence, up front
    loaded, twin, lr = _traced(model_or_peer, requests, concurrency, keepalive, serve_kwargs)
    n = max(lr.requests, 1)
    rows = []
    for name, (calls, errors, seconds) in loaded.items():
        c0, e0, s0 = twin.get(name, (0, 0, 0.0))
        calls, errors, seconds = calls - c0, errors - e0, max(seconds - s0, 0.0)
        if calls / n >= NOISE:
            rows.append((name, calls, calls / n, max(errors, 0), max(errors, 0) / n, seconds,
                         seconds / calls * 1e6))
    df = pd.DataFrame(rows, columns=COLUMNS).sort_values("calls", ascending=False,
                                                         ignore_index=True)
    df.attrs.update(model=model_or_peer, requests=lr.requests, errors=lr.error_count,
                    concurrency=concurrency, mode="keep-alive" if keepalive else
                    "a connection per request", baseline="an idle twin under strace, subtracted")
    return df


def compare(models=("forking", "threaded", "prethreaded", "epoll"), requests=None,
            concurrency=None, keepalive=False, progress=False):
    """Calls per request, a column per model (or peer) and a row per syscall; 0 where none."""
    import pandas as pd
    frames = {}
    with Progress(progress, len(models), "syscalls") as bar:
        for m in models:
            bar.step(f"{m} under strace")
            frames[m] = profile(m, requests, concurrency, keepalive)
    wide = pd.concat({m: f.set_index("syscall")["calls_per_request"] for m, f in frames.items()},
                     axis=1).fillna(0.0)
    wide = wide.loc[wide.max(axis=1).sort_values(ascending=False).index]
    wide.attrs.update(next(iter(frames.values())).attrs, model=", ".join(models))
    return wide


def plot(df, top: int = 12):
    """Horizontal bars: calls per request of the ``top`` most frequent syscalls of a profile."""
    import matplotlib.pyplot as plt
    if not len(df):
        raise NetlabError("nothing to plot: the profile has no system calls")
    d = df.nlargest(top, "calls_per_request").iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(d) + 1.5))
    ax.barh(d["syscall"], d["calls_per_request"], color="C0")
    ax.set_xlabel("system calls per request (strace -f -c, idle twin subtracted)")
    a = df.attrs
    ax.set_title(f"{a.get('model', '?')}: {a.get('requests', '?'):,} requests, "
                 f"{a.get('concurrency', '?')} clients, {a.get('mode', '')}", fontsize="medium")
    fig.tight_layout()
    return fig


# --- command line: python -m netlab syscalls MODEL... -----------------------------------------

def _arguments(p):
    d = sizes()
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help=f"models, or peers: {', '.join(PEERS)} (several: one wide table)")
    p.add_argument("-n", "--requests", type=int, default=d["requests"], help="requests measured")
    p.add_argument("-c", "--concurrency", type=int, default=d["concurrency"], help="clients")
    p.add_argument("--keepalive", action="store_true", help="reuse connections")
    p.add_argument("--top", type=int, default=15, help="syscalls shown (default 15)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd(args) -> int:
    if len(args.models) == 1:
        df = profile(args.models[0], args.requests, args.concurrency, args.keepalive)
        if args.json:
            print(df.to_json(orient="records", indent=2))
            return 0
        print(f"{df.attrs['model']}: {df.attrs['requests']:,} requests, {args.concurrency} "
              f"clients, {df.attrs['mode']}; {df.attrs['baseline']}")
        print(df.head(args.top).round(3).to_string(index=False))
        return 0
    wide = compare(args.models, args.requests, args.concurrency, args.keepalive,
                   progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(wide.reset_index().to_json(orient="records", indent=2))
        return 0
    print(f"system calls per request ({args.requests:,} requests, {args.concurrency} clients, "
          f"{wide.attrs['mode']}; {wide.attrs['baseline']})")
    print(wide.head(args.top).round(2).to_string())
    return 0


def add_cli(subparsers) -> None:
    """Add ``syscalls`` to netlab's command line."""
    command(subparsers, "syscalls", "system calls per request, by model (strace)", _arguments, _cmd)


def main(argv=None) -> int:
    return standalone("syscalls", __doc__, _arguments, _cmd, argv)


if __name__ == "__main__":
    sys.exit(main())
