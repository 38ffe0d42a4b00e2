"""Watch a server's whole process tree while load runs: CPU, memory, processes, threads, fds and
context switches, sampled with psutil from a background thread of the measuring process.

Why a tree: the forking and pre-forked models do their work in children, and a model is only
honestly measured with them. CPU time is exact even for children that came and went between
samples (the kernel adds a reaped child's CPU to its parent's "children" counters). Context
switches are counted per thread by the kernel and /proc shows only live threads, so for a
netlab server the monitor asks the server itself (SIGUSR2: it answers with getrusage, which
includes its ended threads and reaped children) at the start and the end of a run. Memory,
threads and fds are what the samples saw: a child that lived for less than one sampling
interval is missed by those.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Optional

from .results import Usage
from .servers import NetlabError

MB = 1024 * 1024


def _psutil():
    try:
        import psutil
        return psutil
    except ImportError:                                    # pragma: no cover
        raise NetlabError("the monitor needs psutil: pip install psutil") from None


def server_cores(server, cpus: Optional[int] = None) -> float:
    """How many cores a server can keep busy: the cores it may run on, capped by its processes.

    One Python process counts as one core whatever its threads (the GIL); models that work in
    several processes (forking, pre-forked, reuseport, event loops with workers) get up to one
    core per process.
    """
    psutil = _psutil()
    cpus = cpus or os.cpu_count() or 1
    try:
        allowed = len(psutil.Process(server.pid if hasattr(server, "pid") else server)
                      .cpu_affinity())
    except (psutil.Error, AttributeError, TypeError, ValueError, OSError):
        allowed = cpus
    model = getattr(server, "model", None)
    workers = getattr(server, "workers", 1) or 1
    try:
        from .servers import get
        kind = get(model).workers if isinstance(model, str) else ""
    except NetlabError:
        kind = ""
    if model == "forking":
        return float(allowed)
    if kind == "processes" or (workers > 1 and kind != "threads"):
        return float(min(workers, allowed))
    return float(min(getattr(server, "cores", 1) or 1, allowed))


def _task_ctx(proc) -> tuple:
    """(voluntary, involuntary) context switches of every live thread of a process (psutil's
    num_ctx_switches reads only the main thread's /proc/PID/status)."""
    vol = invol = 0
    try:
        tasks = os.listdir(f"/proc/{proc.pid}/task")
    except OSError:
        c = proc.num_ctx_switches()
        return c.voluntary, c.involuntary
    for tid in tasks:
        try:
            with open(f"/proc/{proc.pid}/task/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith(b"nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return vol, invol


def _signal_main_thread(pid: int, sig: int) -> None:
    """Deliver ``sig`` to the process's main thread, the one that runs Python signal handlers
    (a process-directed signal may land on a thread blocked elsewhere and wait there)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.tgkill(pid, pid, sig) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.kill(pid, sig)


def ask_usage(server, timeout: float = 1.0) -> Optional[dict]:
    """The server's own getrusage (self, and reaped children), or None if it cannot answer."""
    path = getattr(server, "stats_path", None)
    if not path or not getattr(server, "alive", False) or not hasattr(signal, "SIGUSR2"):
        return None

    def read():
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    old = (read() or {}).get("seq", 0)
    try:
        _signal_main_thread(server.pid, signal.SIGUSR2)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = read()
        if data and data.get("seq", 0) > old:
            return data
        time.sleep(0.005)
    return None


class Monitor:
    """``with Monitor(srv) as mon: ...`` then ``mon.usage`` (a results.Usage).

    ``interval`` is the sampling period; CPU totals do not depend on it, peaks do. USS/PSS
    (which read /proc/PID/smaps, slow for big trees) are sampled at most every ``full_every``
    seconds and only for trees of up to 64 processes.
    """

    def __init__(self, server, interval: float = 0.1, cores: Optional[float] = None,
                 full_every: float = 0.5):
        self.server = server
        psutil = _psutil()
        pid = server.pid if hasattr(server, "pid") else server
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise NetlabError(f"Monitor needs a running server or a process id, not {server!r}")
        try:
            self._root = psutil.Process(pid)
        except psutil.Error:
            raise NetlabError(f"no process {pid} to monitor: is the server running?") from None
        if not (isinstance(interval, (int, float)) and 0.005 <= interval <= 10):
            raise NetlabError(f"interval must be between 0.005 and 10 seconds, not {interval!r}")
        self.pid = pid
        self.interval, self.full_every = float(interval), float(full_every)
        self.cores = float(cores) if cores else server_cores(server)
        self.samples: list = []          # one dict per sample: t, cpu_s, rss_mb, procs, threads, fds
        self.usage: Optional[Usage] = None
        self._procs: dict = {}           # pid -> psutil.Process (cached: cpu_times needs the same object)
        self._ctx_last: dict = {}        # pid -> (voluntary, involuntary) last seen
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_full = 0.0

    # -- one sample -----------------------------------------------------------------------------
    def _tree(self):
        psutil = _psutil()
        try:
            kids = self._root.children(recursive=True)
        except psutil.Error:
            kids = []
        procs = [self._root]
        for k in kids:
            procs.append(self._procs.setdefault(k.pid, k))
        return procs

    def _sample(self, ctx: bool = False) -> dict:
        psutil = _psutil()
        now = time.monotonic()
        procs = self._tree()
        full = (len(procs) <= 64 and now - self._last_full >= self.full_every)
        if full:
            self._last_full = now
        cpu_user = cpu_sys = rss = uss = pss = 0.0
        threads = fds = alive = 0
        seen = set()
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    if p.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu_user += t.user
                    cpu_sys += t.system
                    if p.pid == self.pid:     # reaped descendants, summed by the kernel
                        cpu_user += t.children_user
                        cpu_sys += t.children_system
                    rss += p.memory_info().rss
                    threads += p.num_threads()
                    try:
                        fds += p.num_fds()
                    except (AttributeError, psutil.AccessDenied):
                        pass
                    if ctx and p.pid != self.pid:
                        self._ctx_last[p.pid] = _task_ctx(p)
                    if full:
                        try:
                            m = p.memory_full_info()
                            uss += m.uss
                            pss += getattr(m, "pss", 0.0)
                        except (psutil.AccessDenied, AttributeError):
                            full = False
                    alive += 1
                    seen.add(p.pid)
            except psutil.Error:
                continue
        vol = invol = None
        if ctx:
            self._ctx_last = {pid: c for pid, c in self._ctx_last.items() if pid in seen}
            answer = ask_usage(self.server)
            if answer:                   # the root's own count: ended threads, reaped children
                vol = sum(answer[k]["voluntary"] for k in ("self", "children"))
                invol = sum(answer[k]["involuntary"] for k in ("self", "children"))
            elif self.pid in seen:
                vol, invol = _task_ctx(self._root)
            if vol is not None:
                vol += sum(v for v, _ in self._ctx_last.values())
                invol += sum(i for _, i in self._ctx_last.values())
        s = dict(t=now, cpu_user=cpu_user, cpu_sys=cpu_sys, rss_mb=rss / MB, procs=alive,
                 threads=threads, fds=fds, ctx_vol=vol, ctx_invol=invol,
                 uss_mb=uss / MB if full else None, pss_mb=pss / MB if full and pss else None)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            s = self._sample()
            if s["procs"]:
                self.samples.append(s)

    # -- start / stop ---------------------------------------------------------------------------
    def start(self) -> "Monitor":
        if self._thread is not None:
            raise NetlabError("this monitor was already started; create a new one")
        self._last_full = 0.0
        first = self._sample(ctx=True)
        if not first["procs"]:
            raise NetlabError(f"process {self.pid} is gone: the server stopped before the run")
        self.samples.append(first)
        self._thread = threading.Thread(target=self._run, name="netlab-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Usage:
        if self._thread is None:
            raise NetlabError("start the monitor before stopping it")
        if self.usage is not None:
            return self.usage
        self._stop.set()
        self._thread.join()
        self._last_full = 0.0
        last = self._sample(ctx=True)
        if last["procs"]:
            self.samples.append(last)
        first, end = self.samples[0], self.samples[-1]

        def peak(key):
            vals = [s[key] for s in self.samples if s[key] is not None]
            return max(vals) if vals else None

        self.usage = Usage(
            pid=self.pid, seconds=end["t"] - first["t"],
            cpu_user_s=max(0.0, end["cpu_user"] - first["cpu_user"]),
            cpu_sys_s=max(0.0, end["cpu_sys"] - first["cpu_sys"]),
            rss_peak_mb=peak("rss_mb"), rss_start_mb=first["rss_mb"],
            uss_peak_mb=peak("uss_mb"), pss_peak_mb=peak("pss_mb"),
            procs_max=peak("procs"), threads_max=peak("threads"), fds_max=peak("fds"),
            ctx_voluntary=max(0, (end["ctx_vol"] or 0) - (first["ctx_vol"] or 0)),
            ctx_involuntary=max(0, (end["ctx_invol"] or 0) - (first["ctx_invol"] or 0)),
            samples=len(self.samples), cores=self.cores)
        return self.usage

    def frame(self):
        """The samples as a DataFrame (seconds since start), for timelines."""
        import pandas as pd
        df = pd.DataFrame(self.samples)
        if len(df):
            df["t"] -= df["t"].iloc[0]
        return df

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._thread is not None and self.usage is None:
            self.stop()


def pin(server, cpus) -> None:
    """Pin every process of a server's tree to ``cpus``. Children forked later inherit it; the
    tree is walked until it stops changing, since a pool may still be forking as we pin."""
    psutil = _psutil()
    pid = server.pid if hasattr(server, "pid") else server
    cpus = list(cpus)
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        raise NetlabError(f"no process {pid} to pin: is the server running?") from None
    done: set = set()
    for _ in range(20):
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        todo = [p for p in procs if p.pid not in done]
        if not todo and len(done) > 0:
            return
        for p in todo:
            done.add(p.pid)
            try:
                p.cpu_affinity(cpus)
                for t in p.threads():       # threads started before pinning keep their mask
                    try:
                        os.sched_setaffinity(t.id, cpus)
                    except (OSError, AttributeError):
                        pass
            except (psutil.Error, AttributeError, ValueError, OSError):
                pass
        time.sleep(0.02)


def server_usage(pid: int, full: bool = True) -> dict:
    """A snapshot of the server tree: RSS, USS, PSS (bytes), threads, fds, processes and distinct
    sockets (a socket shared by forked workers counts once). ``full=False`` skips USS/PSS, which
    read smaps and are slow for big trees."""
    psutil = _psutil()
    root = psutil.Process(pid)
    procs = [root] + root.children(recursive=True)
    u = dict(rss=0, uss=0, pss=0, threads=0, fds=0, procs=0)
    socks = set()
    full = full and len(procs) <= 2000
    for p in procs:
        try:
            with p.oneshot():
                u["rss"] += p.memory_info().rss
                u["threads"] += p.num_threads()
                u["fds"] += p.num_fds()
                if full:
                    m = p.memory_full_info()
                    u["uss"] += m.uss
                    u["pss"] += getattr(m, "pss", math.nan)
            u["procs"] += 1
            for fd in os.listdir(f"/proc/{p.pid}/fd"):
                link = os.readlink(f"/proc/{p.pid}/fd/{fd}")
                if link.startswith("socket:"):
                    socks.add(link)
        except (psutil.Error, OSError):
            pass
    if not full:
        u["uss"] = u["pss"] = math.nan
    u["sockets"] = len(socks) if sys.platform.startswith("linux") else u["fds"]
    return u


def settle_sockets(pid: int, until: float, want: Optional[int] = None,
                   stall: float = 0.3) -> int:
    """Wait until the server holds ``want`` sockets, or (without ``want``, or if it never gets
    there) until its count has not changed for ``stall`` s, or the monotonic deadline ``until``;
    return the last count.

    Why: a client's connect() returns once the kernel has queued the connection; the server
    accepts it (and closes a finished one) later, in its own time. Counting right after the
    client acted races the server."""
    last, since = -1, time.monotonic()
    while True:
        n = server_usage(pid, full=False)["sockets"]
        now = time.monotonic()
        if want is not None and n >= want or now >= until:
            return n
        if n != last:
            last, since = n, now
        elif now - since >= stall:
            return n
        time.sleep(0.05)


def wait_until(condition, timeout: float = 10.0, interval: float = 0.05):
    """Call ``condition()`` until it returns something true or ``timeout`` s pass; return its
    last value. A process that something else starts, reaps or accepts for gets there in its own
    time: poll for the state instead of sleeping a guess. Errors from processes that vanish
    between two looks (psutil.NoSuchProcess) count as "not yet"."""
    psutil = _psutil()
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except psutil.NoSuchProcess:
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
