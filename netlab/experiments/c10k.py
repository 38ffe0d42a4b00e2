"""C10K: an event loop holds 10,000 idle connections for about a kilobyte of its memory each and
its active clients' latency stays flat; the other models pay a thread each, slow down, or refuse.

How it shows it: per model, one server; helper processes (never the caller, whose own fd limit
may be low: a Jupyter kernel) connect K idle clients that send nothing, K growing. At each K, a
few active clients (netlab.load, a connection per request) measure p50/p99 and errors, and the
server is weighed: RSS, USS and PSS of its process tree, its threads and fds, and the kernel's
memory (slab objects from /proc/slabinfo, or meminfo's Slab where that is unreadable; kernel
stacks, meminfo's KernelStack, which slab leaves out and a thread per connection pays; TCP buffer
pages from /proc/net/sockstat). Memory is measured just before and after each step of holding
(never across the load runs), summed, and divided by the connections held: the server's and its
kernel stacks by those it accepted, the slab by those connected, covering both ends of each
loopback pair (the holder's socket and the server's). A model that cannot hold K (select past fd 1024, iterative
stuck on its first idle client, a full backlog, the fd limit) gets a row with the reason, and
larger K are not tried.

One process holds at most its open-file limit (``ulimit -n``) of sockets and one source address
~28k ephemeral ports: holders take ≤ 15,000 connections each, from 127.0.0.2, .3, ...; beyond
one server process use ``models=("reuseport",)`` (workers are sized to K automatically).

    python -m netlab c10k --models epoll,poll,threaded --held 0,1000,10000
"""

import errno
import json
import math
import os
import selectors
import socket
import subprocess
import sys
import time

from . import LineReader, command, standalone
from ..arguments import comma_ints
from ..env import raise_fd_limit
from ..monitor import server_usage, settle_sockets
from ..progress import Progress
from ..supervisor import Helper

PER_HOLDER = 15_000          # connections per holder process (and per server process)
WINDOW, GIVE_UP = 256, 64    # connects in flight; failed connects before a holder stops trying
FAILS = ("timeout", "refused", "reset", "other", "gave_up")
NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)     # Linux: port picked at connect()
COLUMNS = ["model", "workers", "K", "held", "accepted", "closed", "failed", "p50_ms", "p99_ms",
           "rps", "errors", "rss_kb_per_conn", "uss_kb_per_conn", "pss_kb_per_conn",
           "kernel_kb_per_conn", "kernel_stack_kb_per_conn", "tcp_buf_kb_per_conn", "threads",
           "fds", "procs", "ok", "reason"]


# --- the holder: a helper process that opens idle connections and keeps them -----------------

def _hold(host, port, source, connect_timeout):
    """Obey stdin: each 'N' line means hold N in all; reply with the counts once done (a
    repeated N is a report). Exit, closing everything, at EOF."""
    raise_fd_limit()
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    held, pending, buf, target, fails, due = set(), {}, b"", 0, 0, False
    n = dict(attempted=0, refused=0, reset=0, timeout=0, other=0, closed=0, error="")
    kinds = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.ETIMEDOUT: "timeout"}

    def drop(s, kind):
        n[kind] += 1
        sel.unregister(s)
        s.close()

    while True:
        while due and fails < GIVE_UP and len(pending) < WINDOW and n["attempted"] < target:
            n["attempted"], s = n["attempted"] + 1, None
            try:
                s = socket.socket()
                s.setblocking(False)
                if source:          # any port, chosen at connect(): ~28k per address pair
                    s.setsockopt(socket.IPPROTO_IP, NO_PORT, 1)
                    s.bind((source, 0))
                err = s.connect_ex((host, port))
            except OSError as e:
                err = e.errno
            if err not in (0, errno.EINPROGRESS):       # out of fds or ports: say so, stop
                n["other"], n["error"], fails = n["other"] + 1, f" ({os.strerror(err)})", GIVE_UP
                if s:
                    s.close()
                break
            sel.register(s, selectors.EVENT_WRITE)
            pending[s] = time.monotonic() + connect_timeout
        if due and not pending and (n["attempted"] >= target or fails >= GIVE_UP):
            done = dict(n, held=len(held), gave_up=target - n["attempted"])
            os.write(1, json.dumps(done).encode() + b"\n")
            due = False
        for key, _ in sel.select(0.05 if pending else None):
            s = key.fileobj
            if s == 0:
                chunk = os.read(0, 4096)
                if not chunk:                # the caller is done, or gone: release them all
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    target, fails, due = int(line), 0, True
            elif s in pending:
                del pending[s]
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fails += 1
                    drop(s, kinds.get(err, "other"))
                else:
                    sel.modify(s, selectors.EVENT_READ)
                    held.add(s)
            else:                            # an idle connection became readable: closed
                try:
                    if s.recv(1):
                        continue             # the server said something; still held
                except OSError:
                    pass
                held.discard(s)
                drop(s, "closed")
        now = time.monotonic()
        for s in [s for s, t in pending.items() if t < now]:
            del pending[s]
            fails += 1
            drop(s, "timeout")


class Holders:
    """Idle connections to host:port held by helper processes, ≤ PER_HOLDER each, each from its
    own source address on Linux loopback (127.0.0.2, .3, ...). ``close()`` stops them; so does
    their watchdog when the caller dies, and a holder exits by itself at end-of-stdin."""

    STEP = 2000      # connections added at once when the server's pid is known (half the backlog)

    def __init__(self, host, port, connect_timeout=1.0, pid=None):
        self.host, self.port, self.connect_timeout = host, port, connect_timeout
        self.pid = pid
        self.procs, self.shares = [], []      # the holders (netlab.supervisor.Helper)
        self._answers = []

    def grow(self, k, timeout=60.0) -> dict:
        """Hold ``k`` in all (filling holder 0 first); their summed counts (also: a report).

        With the server's ``pid``, return only once the server has accepted them (or its count
        of sockets has stopped growing for 2 s: a server that cannot take more). A client's
        connect() returns as soon as the kernel has queued the connection, long before a busy
        server accepts it. And grow STEP at a time, letting the server accept each step before
        the next: a slow acceptor (a thread per connection) would otherwise see its listen
        backlog overflow, and connections the client believes open never reach it."""
        if self.pid is None:
            return self._grow(k, timeout)
        current = sum(self.shares)
        deadline = time.monotonic() + timeout
        own = server_usage(self.pid, full=False)["sockets"] - current   # listener and the like
        for step in list(range(current + self.STEP, k, self.STEP)) + [k]:
            got = self._grow(step, max(1.0, deadline - time.monotonic()))
            settle_sockets(self.pid, until=deadline, want=own + step, stall=2.0)
        return got

    def _grow(self, k, timeout) -> dict:
        while len(self.procs) * PER_HOLDER < k:
            i = len(self.procs)
            src = f"127.0.0.{2 + i}" if sys.platform.startswith("linux") and \
                self.host.startswith("127.") else ""
            holder = Helper(f"c10k holder {i}", "-m", "netlab.experiments.c10k", "--hold",
                            self.host, str(self.port), src, str(self.connect_timeout),
                            stdin=subprocess.PIPE)
            self.procs.append(holder.start())
            self._answers.append(LineReader(holder.proc.stdout, f"c10k holder {i}"))
        self.shares = [min(PER_HOLDER, max(0, k - i * PER_HOLDER)) for i in range(len(self.procs))]
        for p, share in zip(self.procs, self.shares):
            p.proc.stdin.write(b"%d\n" % share)
            p.proc.stdin.flush()
        total, deadline = {}, time.monotonic() + timeout
        for answers in self._answers:                      # one line per request
            for key, v in json.loads(answers.line(deadline)).items():
                total[key] = total.get(key, "" if isinstance(v, str) else 0) + v
        return total

    def report(self) -> dict:
        """The holders' counts now: held, attempted, and failures by kind."""
        return self._grow(sum(self.shares), 60.0)

    def close(self):
        try:
            for p in self.procs:
                p.stop()
        finally:
            for p in self.procs:
                p.stop(check=False)             # the rest, even if one of them failed
            self.procs, self._answers = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- what the server and the kernel use -------------------------------------------------------

def kernel_usage() -> dict:
    """Kernel slab bytes (active objects in /proc/slabinfo if readable, else meminfo's Slab),
    kernel stack bytes (meminfo's KernelStack: a thread's kernel stack is not slab, and on
    x86-64 it is 16 KiB a thread) and TCP buffer bytes (/proc/net/sockstat); NaN where there is
    no /proc."""
    out = dict(slab=math.nan, kstack=math.nan, tcp_buf=math.nan)
    try:
        with open("/proc/meminfo") as f:
            out["kstack"] = next(int(ln.split()[1]) * 1024 for ln in f
                                 if ln.startswith("KernelStack:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        with open("/proc/slabinfo") as f:
            rows = [ln.split() for ln in f.readlines()[2:]]
        out["slab"] = sum(int(r[1]) * int(r[3]) for r in rows)
    except (OSError, ValueError, IndexError):
        try:
            with open("/proc/meminfo") as f:
                out["slab"] = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("Slab:"))
        except (OSError, StopIteration):
            pass
    try:
        with open("/proc/net/sockstat") as f:
            tcp = next(ln.split() for ln in f if ln.startswith("TCP:"))
        out["tcp_buf"] = int(tcp[tcp.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, StopIteration, ValueError):
        pass
    return out


# --- the experiment ---------------------------------------------------------------------------

def sizes() -> dict:
    """Class sizes, or small ones in quick mode (NETLAB_QUICK): K up to 1,000, seconds."""
    from ..env import quick_mode
    if quick_mode():
        return dict(held=(0, 100, 1000), active=4, duration=0.5, timeout=1.0)
    return dict(held=(0, 1000, 5000, 10000), active=4, duration=2.0, timeout=2.0)


def _problems(got, accepted, srv, lr, timeout) -> list:
    """What went wrong at this K, one clause each: the row's reason."""
    out = []
    if got.get("closed"):
        said = [ln.split("WARNING", 1)[1].strip() for ln in srv.log().splitlines()
                if "WARNING" in ln][-1:]          # e.g. select's "refusing ... fd 1024"
        out.append(f"the server closed {got['closed']:,} of them" +
                   "".join(f" ({w})" for w in said))
    if accepted < got.get("held", 0) * 0.99 - 1:
        out.append(f"the server accepted {max(accepted, 0):,} of the {got['held']:,} connected; "
                   "the rest wait in its listen backlog")
    fails = [f"{got[w]:,} {w.replace('_', ' ')}" for w in FAILS if got.get(w)]
    if fails:
        out.append("connects failed: " + ", ".join(fails) + got.get("error", "") +
                   (" (a full listen backlog drops them)" if got.get("timeout") else ""))
    kinds = ", ".join(f"{v:,} {e}" for e, v in lr.errors.items() if v)
    if not lr.requests:
        out.append(f"no active request succeeded: {kinds}" if kinds else
                   f"no active request was answered within {timeout:g} s")
    elif kinds:
        out.append(f"{lr.error_count:,} active requests failed: {kinds}")
    if not srv.alive:
        out.append(f"the server died: {srv.log().strip()[-200:]}")
    return out


def _why_not(name, k, cap, nproc, need) -> str:
    """Why K should not even be tried ('' if it should): the fds or memory it would need."""
    import psutil
    if k > cap and name != "forking":
        return (f"{nproc} server process(es) hold at most ~{cap:,} connections (ulimit -n); "
                "use the reuseport model, with workers")
    if need > 0.5 * psutil.virtual_memory().available:
        return f"it would need ~{need / 2**30:.1f} GiB more memory than is free"
    return ""


def _grow(srv, holders, k, grown) -> tuple:
    """Hold k; add what that cost the server and the kernel to ``grown``; (holders' counts,
    sockets the server has accepted)."""
    s0, k0 = server_usage(srv.pid), kernel_usage()
    holders.grow(k, timeout=20 + k / 500)          # returns once the server has accepted them
    got, s1, k1 = holders.report(), server_usage(srv.pid), kernel_usage()
    for key, a, b in (("rss", s0, s1), ("uss", s0, s1), ("pss", s0, s1), ("slab", k0, k1),
                      ("kstack", k0, k1), ("tcp_buf", k0, k1)):
        grown[key] = grown.get(key, 0) + b[key] - a[key]
    return got, s1["sockets"]


def _model_rows(name, held, active, duration, workers, timeout, bar) -> list:
    """One server of model ``name``; K grows through ``held``; a row per K."""
    from .. import load
    from ..lifecycle import Server
    from ..servers import NetlabError, get
    model = get(name)
    if model.reuseport and workers is None:        # enough processes for the largest K
        workers = max(model.default_workers, -(-max(held) // PER_HOLDER))
    nproc = (workers or 1) if model.workers == "processes" else 1
    rows, stop, srv = [], model.reason, None

    def row(k, **kw):
        rows.append(dict(dict.fromkeys(COLUMNS, math.nan), **dict(
            dict(model=name, workers=workers or 1, K=k, ok=False, reason=stop), **kw)))

    try:
        if stop:
            raise NetlabError(stop)
        cap = nproc * (raise_fd_limit() - 64)
        srv = Server(name, workers=workers).start()
        load.run(srv.url, active, duration=0.3, timeout=timeout)        # warm-up: not recorded
        settle_sockets(srv.pid, until=time.monotonic() + 2)
        base, grown, conn, mine = server_usage(srv.pid), {}, 0, 0     # conn: client side
        with Holders(srv.host, srv.port, timeout, pid=srv.pid) as holders:
            for k in held:
                bar.step(f"{name}, K = {k:,}")
                need = (grown.get("uss", 0) + grown.get("slab", 0)) / max(conn, 1) * (k - conn)
                why = stop or _why_not(name, k, cap, nproc, need)
                if why:
                    row(k, reason=why)
                    continue
                got, accepted = {}, 0
                if k:
                    got, sockets = _grow(srv, holders, k, grown)
                    accepted = sockets - base["sockets"]
                    conn, mine = got["held"], max(0, min(got["held"], accepted))
                lr = load.run(srv.url, active, duration=duration, timeout=timeout)
                problems = _problems(got, accepted, srv, lr, timeout)
                s = server_usage(srv.pid) if srv.alive else dict.fromkeys(base, math.nan)
                per = lambda key, n: grown[key] / n / 1024 if k and n >= 10 else math.nan  # noqa
                row(k, held=mine if k else 0, accepted=accepted, closed=got.get("closed", 0),
                    failed=sum(got.get(w, 0) for w in FAILS), p50_ms=lr.p50_ms,
                    p99_ms=lr.p99_ms, rps=lr.rps, errors=lr.error_count,
                    rss_kb_per_conn=per("rss", mine), uss_kb_per_conn=per("uss", mine),
                    pss_kb_per_conn=per("pss", mine), kernel_kb_per_conn=per("slab", conn),
                    kernel_stack_kb_per_conn=per("kstack", mine),
                    tcp_buf_kb_per_conn=per("tcp_buf", conn), threads=s["threads"],
                    fds=s["fds"], procs=s["procs"], ok=not problems, reason="; ".join(problems))
                if problems and k or not srv.alive:
                    stop = f"not tried: it could not hold {k:,}"
    except (NetlabError, OSError, RuntimeError) as e:   # it would not start; a holder failed
        for k in held[len(rows):]:
            row(k, reason=str(e))
    finally:
        if srv is not None:
            srv.stop(check=False)
    return rows


def run(models=("epoll",), held=None, active=None, duration=None, *, workers=None,
        timeout=None, progress=False):
    """A row per model and K in ``held``: what holding K idle connections cost the server and
    the kernel, and what ``active`` clients (each ``duration`` s) saw meanwhile (COLUMNS:
    ``held`` = open at both ends, ``accepted`` = server sockets, ``closed`` = by the server,
    ``failed`` = connects that failed; ``*_kb_per_conn``; the server tree's threads, fds,
    procs). ``ok`` is False, with a ``reason``, when the model could not hold K or answer its
    active clients. ``workers``: server processes for models that have them."""
    import pandas as pd
    from ..servers import NetlabError, get
    d = sizes()
    active, duration = active or d["active"], duration or d["duration"]
    timeout = timeout or d["timeout"]
    models = [models] if isinstance(models, str) else list(models)
    held = sorted(set(d["held"] if held is None else [held] if isinstance(held, int) else held))
    if not models or not held or any(isinstance(k, bool) or not isinstance(k, int) or
                                     not 0 <= k <= 200_000 for k in held):
        raise NetlabError(f"c10k needs models and held counts from 0 to 200,000, not {held!r}")
    for m in models:
        get(m)                                    # an unknown name is one sentence, up front
    with Progress(progress, len(models) * len(held), "c10k") as bar:
        rows = [r for m in models
                for r in _model_rows(m, held, active, duration, workers, timeout, bar)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(active=active, duration=duration, kernel_memory="slabinfo" if os.access(
        "/proc/slabinfo", os.R_OK) else "meminfo Slab")
    return df


def plot(df):
    """Active clients' p99 against idle connections held (log x), and memory per connection."""
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (model, g) in enumerate(df.groupby("model", sort=False)):
        c, rest = f"C{i}", g[g["K"] > 0]
        good, bad = rest[rest["ok"]], rest[~rest["ok"].astype(bool)]
        a1.plot(good["K"], good["p99_ms"], "o-", color=c, label=model)
        a1.plot(bad["K"], bad["p99_ms"].fillna(df["p99_ms"].max()), "x", color=c, ms=9)
        base = g.loc[g["K"] == 0, "p99_ms"].dropna()
        if len(base):
            a1.axhline(base.iloc[0], color=c, ls=":", lw=1)
        h = rest[rest["held"] > 0]
        a2.plot(h["K"], h["uss_kb_per_conn"].fillna(h["rss_kb_per_conn"]), "o-", color=c,
                label=f"{model}: server (USS)")
        a2.plot(h["K"], h["kernel_kb_per_conn"], "s--", color=c, mfc="white",
                label=f"{model}: kernel, both ends")
    a1.set(xscale="log", xlabel="idle connections held", ylabel="active clients' p99 (ms)",
           title="latency (dotted: none held; x: could not hold)")
    a2.set(xscale="log", yscale="log", xlabel="idle connections held",
           ylabel="kB per held connection", title="memory per held connection")
    a1.legend(fontsize="small")
    a2.legend(fontsize="x-small", ncol=2)
    fig.suptitle(f"C10K: {df.attrs.get('active', '?')} active clients (a connection per request) "
                 "while K idle connections are held", fontsize="medium")
    fig.tight_layout()
    return fig


# --- command line: python -m netlab c10k ------------------------------------------------------

def _arguments(p):
    p.add_argument("--models", default="epoll", help="comma-separated, e.g. epoll,poll,threaded")
    p.add_argument("--held", type=comma_ints, help="idle connections, e.g. 0,1000,10000")
    p.add_argument("--active", type=int, help="active clients measuring latency (default 4)")
    p.add_argument("--duration", type=float, help="seconds of active load per point")
    p.add_argument("--workers", type=int, help="server processes (reuseport: sized to K)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd(args) -> int:
    df = run(args.models.split(","), args.held, args.active, args.duration, workers=args.workers,
             progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(df.to_json(orient="records", indent=2))
        return 0
    cols = ["model", "K", "held", "p50_ms", "p99_ms", "errors", "uss_kb_per_conn",
            "kernel_kb_per_conn", "kernel_stack_kb_per_conn", "threads", "fds"]
    print(df[cols].round(2).to_string(index=False))
    for r in df[df["reason"] != ""].itertuples():
        print(f"{r.model} K={r.K:,}: {r.reason}")
    return 0


def add_cli(subparsers) -> None:
    """Add ``c10k`` to netlab's command line."""
    command(subparsers, "c10k", "hold K idle connections; latency and memory per model", _arguments, _cmd)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--hold"]:                   # a holder process (see Holders)
        host, port, source, t = argv[1:5]
        _hold(host, int(port), source, float(t))
        return 0
    return standalone("c10k", __doc__, _arguments, _cmd, argv)


if __name__ == "__main__":
    sys.exit(main())
