"""A load generator in pure Python: it gets concurrency from non-blocking sockets in an event loop
(epoll), run in several worker processes, because one Python process cannot saturate a server in C.

    r = netlab.load.run(srv.url, concurrency=50, duration=3, keepalive=True)
    r.rps, r.p99_ms, r.errors

Each worker (netlab/_loadworker.py) is a separate Python process started with subprocess, never
a fork of the caller (often a Jupyter kernel running threads); they connect their idle clients,
then start together on one "go", and report counts, latencies and their own CPU over pipes.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from urllib.parse import urlsplit

from ._loadworker import SLOW_PAUSE_S, SLOW_PIECES
from .arguments import whole
from .env import fd_limit
from .results import ERROR_KINDS, LoadResult, percentile
from .servers import NetlabError

__all__ = ["run", "latency_summary", "ERROR_KINDS", "SLOW_PIECES", "SLOW_PAUSE_S"]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_loadworker.py")
MAX_CONCURRENCY, MAX_IDLE, MAX_REQUESTS, MAX_SECONDS = 50_000, 100_000, 10_000_000, 600.0
PER_SOURCE = 20_000     # connections per client address before spreading over 127.0.0.2, .3, ...
FD_MARGIN = 32          # fds a worker needs besides its connections (pipes, epoll, stdio)
STARTUP_S = 15.0        # time the workers get to start and connect their idle clients


def latency_summary(latencies_ms) -> dict:
    """Mean, p50, p90, p99, p99.9 and max (ms) of latencies in any order: nearest-rank
    percentiles (results.percentile), NaN when there are none."""
    try:
        import numpy as np
        s = np.sort(np.asarray(latencies_ms, dtype=float))
        mean = float(s.mean()) if len(s) else math.nan
    except ImportError:
        s = sorted(latencies_ms)
        mean = math.fsum(s) / len(s) if s else math.nan
    out = {"mean_ms": mean, "max_ms": float(s[-1]) if len(s) else math.nan}
    for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
        out[name] = percentile(s, q)
    return out


def _fail(msg: str):
    raise NetlabError(msg)


def _num(name, v, lo, hi, lo_open=True):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v \
            or not (lo < v if lo_open else lo <= v) or v > hi:
        _fail(f"{name} must be a number of {'more than' if lo_open else 'at least'} {lo:g} "
              f"and at most {hi:g}, not {v!r}")
    return float(v)


def _target(url, path, allow_remote):
    """(host address, port, Host header, request path) of a URL, refusing non-loopback hosts."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        host, port = (parts.hostname, parts.port or 80) if parts else (None, None)
    except ValueError:
        host = None
    if not host or parts.scheme != "http":
        _fail(f"the load generator needs a URL like http://127.0.0.1:8080/ (plain http), "
              f"not {url!r}")
    if host == "localhost":
        addr = "127.0.0.1"
    else:
        try:
            addr = str(ipaddress.ip_address(host))
        except ValueError:
            if not allow_remote:
                addr = None
            else:
                try:
                    addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
                except (OSError, UnicodeError):
                    _fail(f"cannot resolve the host {host!r} of {url}")
    if not allow_remote and (addr is None or not ipaddress.ip_address(addr).is_loopback):
        _fail(f"netlab only loads this machine (127.0.0.1, ::1, localhost), not {host}: to load "
              "a machine you are responsible for, pass allow_remote=True (--allow-remote)")
    target = path if path is not None else (parts.path or "/") + \
        (f"?{parts.query}" if parts.query else "")
    if not isinstance(target, str) or not target.startswith("/") or not target.isascii() \
            or any(ch.isspace() or ord(ch) < 32 for ch in target):
        _fail(f"the path must start with / and be ASCII without spaces, not {target!r}")
    return addr, port, parts.netloc.rpartition("@")[2], target


def _cores() -> list:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))


def _sources(sources, addr, conns, allow_remote):
    """Client source addresses: as given, or 127.0.0.1, .2, ... beyond PER_SOURCE connections
    (ephemeral ports run out at ~28k per address pair)."""
    if sources is None:
        ip = ipaddress.ip_address(addr)
        if conns <= PER_SOURCE or ip.version != 4 or not ip.is_loopback:
            return None
        return [f"127.0.0.{i}" for i in range(1, -(-conns // PER_SOURCE) + 1)]
    if isinstance(sources, str) or not isinstance(sources, (list, tuple)) or not sources:
        _fail(f"sources must be a list of local addresses such as ['127.0.0.2'], not {sources!r}")
    family = ipaddress.ip_address(addr).version
    for s in sources:
        try:
            ip = ipaddress.ip_address(s)
        except ValueError:
            ip = None
        if ip is None or ip.version != family or not (ip.is_loopback or allow_remote):
            _fail(f"each source must be a loopback address of the target's family, not {s!r}")
    return [str(s) for s in sources]


def _plan(url, concurrency, requests, duration, keepalive, slow, idle, think_ms, processes,
          timeout, path, expect_status, allow_remote, sources, cpus, max_seconds, progress):
    """Check every argument (one sentence each) and split the clients over the workers."""
    if not isinstance(allow_remote, bool):
        _fail(f"allow_remote must be True or False, not {allow_remote!r}")
    addr, port, netloc, target = _target(url, path, allow_remote)
    whole("concurrency", concurrency, 1, MAX_CONCURRENCY)
    if requests is not None and duration is not None:
        _fail("give requests (a count) or duration (seconds), not both")
    if requests is not None:
        whole("requests", requests, 1, MAX_REQUESTS)
    if duration is None and requests is None:
        duration = 2.0
    if duration is not None:
        duration = _num("duration", duration, 0, MAX_SECONDS)
    whole("slow", slow, 0, concurrency)
    whole("idle", idle, 0, MAX_IDLE)
    think_s = _num("think_ms", think_ms, 0, 60_000, lo_open=False) / 1000
    timeout = _num("timeout", timeout, 0, MAX_SECONDS)
    max_seconds = _num("max_seconds", max_seconds, 0, MAX_SECONDS)
    whole("expect_status", expect_status, 100, 599)
    if not (isinstance(progress, bool) or callable(progress)):
        _fail(f"progress must be True, False or a function, not {progress!r}")
    allowed = _cores()
    if cpus is not None:
        if not hasattr(os, "sched_setaffinity"):
            _fail("cpus= needs os.sched_setaffinity, which only Linux has; leave cpus=None")
        if isinstance(cpus, int) or not isinstance(cpus, (list, tuple, set)) or not cpus or \
                any(isinstance(c, bool) or not isinstance(c, int) or c not in allowed for c in cpus):
            _fail(f"cpus must be a list of this process's cores (from {allowed}), not {cpus!r}")
        cpus = sorted(set(cpus))
    conns = concurrency + idle
    soft = (fd_limit() or (0, 0))[0]
    if processes is None:
        processes = min(max(1, len(cpus or allowed) - (0 if cpus else 1)), concurrency)
        if soft:    # more workers when one cannot hold its share of the connections
            processes = max(processes, -(-conns // max(1, soft - FD_MARGIN)))
    else:
        whole("processes", processes, 1, 256)
        processes = min(processes, conns)
    if soft and -(-concurrency // processes) + -(-idle // processes) + FD_MARGIN > soft:
        need = -(-concurrency // processes) + -(-idle // processes) + FD_MARGIN
        _fail(f"{conns:,} connections over {processes} process(es) need {need:,} fds in each, "
              f"but the open-file limit is {soft:,}: use more processes or fewer connections")
    srcs = _sources(sources, addr, conns, allow_remote)
    request = f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\n" + \
        ("" if keepalive else "Connection: close\r\n") + "\r\n"
    share = [requests // concurrency + (g < requests % concurrency) for g in range(concurrency)] \
        if requests is not None else None
    pick = (lambda i: srcs[i % len(srcs)]) if srcs else (lambda i: None)
    specs = []
    for w in range(processes):
        mine = range(w, concurrency, processes)
        specs.append(dict(
            host=addr, port=port, request=request, keepalive=keepalive, timeout=timeout,
            think_s=think_s, expect=expect_status, cpus=cpus,
            clients=[(g < slow, pick(g)) for g in mine],
            idle=[pick(concurrency + i) for i in range(w, idle, processes)],
            quota=sum(share[g] for g in mine) if share else None,
            seconds=duration if duration is not None else max_seconds))
    params = dict(requests=requests, duration=duration, path=target, timeout=timeout,
                  expect_status=expect_status, max_seconds=max_seconds, processes=processes,
                  cpus=cpus, sources=srcs, slow_pieces=SLOW_PIECES,
                  slow_pause_ms=SLOW_PAUSE_S * 1000, allow_remote=allow_remote)
    cores = min(processes, len(cpus or allowed))
    return specs, params, cores


class _Worker:
    """A running worker process and what it has told us so far."""

    def __init__(self, spec: dict):
        self.log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", WORKER], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self.log, close_fds=True,
                start_new_session=os.name == "posix")   # Ctrl-C reaches us; we stop them
        except BaseException as e:
            self.log.close()
            if isinstance(e, OSError):
                raise NetlabError(f"cannot start a load worker process: {e.strerror or e}") \
                    from None
            raise
        self.buf, self.idle, self.ok, self.errs, self.result, self.lat = bytearray(), None, 0, 0, None, None
        spec = dict(spec, parent=os.getpid(),
                    die_with_parent=threading.current_thread() is threading.main_thread())
        self.send(json.dumps(spec).encode() + b"\n")

    def send(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError:
            pass        # it died: reading its pipe says so

    def take(self, chunk: bytes) -> None:
        """Parse the worker's messages: ready N / p OK ERR / done JSON + latency bytes."""
        self.buf += chunk
        while self.lat is None:
            if self.result is not None:
                n = self.result["nlat"] * 4
                if len(self.buf) >= n:
                    self.lat = array("f", bytes(self.buf[:n]))
                return
            line, nl, rest = self.buf.partition(b"\n")
            if not nl:
                return
            self.buf = rest
            word, _, arg = bytes(line).partition(b" ")
            if word == b"ready":
                self.idle = int(arg)
            elif word == b"p":
                self.ok, self.errs = map(int, arg.split())
            elif word == b"done":
                self.result = json.loads(arg)

    def tail(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self.proc.poll()}"

    def stop(self) -> None:
        """Close its stdin (it exits, dropping its idle connections); kill it if it lingers."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass
        except BaseException:   # interrupted while waiting: still kill it below
            self.proc.kill()
            self.proc.wait()
            self.log.close()
            raise
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _pump(workers, until, deadline: float, what: str, tick=None) -> None:
    """Read every worker's pipe until ``until(worker)`` holds for all of them."""
    with selectors.DefaultSelector() as sel:
        for w in workers:
            sel.register(w.proc.stdout.fileno(), selectors.EVENT_READ, w)
        while not all(until(w) for w in workers):
            left = deadline - time.monotonic()
            if left <= 0:
                _fail(f"the load workers did not {what} in time: is the machine overloaded?")
            for key, _ in sel.select(min(left, 0.25)):
                w = key.data
                chunk = os.read(key.fd, 1 << 20)
                if not chunk:
                    w.proc.wait()
                    _fail(f"a load worker failed before it could {what}: {w.tail()}")
                w.take(chunk)
            if tick:
                tick()


class _Progress:
    """About once a second: a one-line update on stderr, or a call to the given function."""

    def __init__(self, workers, show):
        self.workers, self.show, self.t0 = workers, show, time.monotonic()
        self.last_t, self.last_ok, self.shown = self.t0, 0, False

    def __call__(self, final: bool = False) -> None:
        now = time.monotonic()
        if now - self.last_t < 1.0 and not final:
            return
        ok = sum(w.result["ok"] if w.result else w.ok for w in self.workers)
        errs = sum(sum(w.result["errors"].values()) if w.result else w.errs for w in self.workers)
        rate = (ok - self.last_ok) / max(now - self.last_t, 1e-9)
        self.last_t, self.last_ok = now, ok
        info = dict(elapsed_s=now - self.t0, requests=ok, errors=errs, rps=rate)
        if callable(self.show):
            self.show(info)
        elif not final:
            sys.stderr.write(f"\r[netlab.load] {info['elapsed_s']:5.1f} s  {ok:>10,} ok  "
                             f"{errs:,} errors  {rate:>9,.0f} req/s ")
            sys.stderr.flush()
            self.shown = True
        elif self.shown:
            sys.stderr.write("\n")


def run(url, concurrency=10, requests=None, duration=None, *, keepalive=False, slow=0, idle=0,
        think_ms=0.0, processes=None, timeout=5.0, path=None, expect_status=200,
        allow_remote=False, sources=None, cpus=None, max_seconds=120.0,
        progress=False, on_start=None) -> LoadResult:
    """Load ``url`` with ``concurrency`` clients, for ``requests`` requests or ``duration``
    seconds (neither: 2 s); returns a LoadResult.

    Each client loops: connect (once, with ``keepalive``), GET, read the whole response, record
    its latency (connect to last byte; send to last byte with keep-alive), pause ``think_ms``.
    ``slow`` of them send each request in SLOW_PIECES pieces SLOW_PAUSE_S apart; ``idle`` more
    connections are opened first and held, silent, for the whole run. ``processes`` workers
    (default: one per core but one, left for the server), pinned to ``cpus`` if given. Only
    loopback targets unless ``allow_remote``; a count run stops at ``max_seconds`` anyway.
    ``on_start()`` is called when every worker is connected (idle connections held) and just
    before the clients start: ``netlab.measure`` starts watching the server there, so the
    idle connections' accepts are not counted against the requests.
    ``progress``: True for a line on stderr each second, or a function given a dict
    (elapsed_s, requests, errors, rps) each second and once at the end.
    Latencies are those of the requests answered with ``expect_status``.
    """
    specs, params, cores = _plan(url, concurrency, requests, duration, keepalive, slow, idle,
                                 think_ms, processes, timeout, path, expect_status,
                                 allow_remote, sources, cpus, max_seconds, progress)
    workers = []
    try:
        for spec in specs:
            workers.append(_Worker(spec))
        _pump(workers, lambda w: w.idle is not None, time.monotonic() + STARTUP_S + timeout,
              "start")
        if on_start is not None:
            on_start()
        for w in workers:
            w.send(b"go\n")
        show = _Progress(workers, progress) if progress else None
        _pump(workers, lambda w: w.lat is not None,
              time.monotonic() + specs[0]["seconds"] + timeout + STARTUP_S, "finish", show)
        if show:
            show(final=True)
    finally:
        for w in workers:
            w.stop()
    return _result(url, concurrency, keepalive, slow, idle, think_ms, workers, params, cores)


def _result(url, concurrency, keepalive, slow, idle, think_ms, workers, params, cores):
    rs = [w.result for w in workers]
    lat = array("f")
    for w in workers:
        lat.extend(w.lat)
    try:
        import numpy as np
        lat = np.frombuffer(lat, dtype=np.float32) / 1000.0
    except ImportError:
        lat = [x / 1000.0 for x in lat]
    ok = sum(r["ok"] for r in rs)
    elapsed = max(r["elapsed"] for r in rs)
    timeline = [0] * max(len(r["timeline"]) for r in rs)
    for r in rs:
        for i, n in enumerate(r["timeline"]):
            timeline[i] += n
    stops = {r["stopped_by"] for r in rs}
    params = dict(params, stopped_by="deadline" if "deadline" in stops else stops.pop(),
                  idle_connected=sum(r["idle_connected"] for r in rs),
                  issued=sum(r["issued"] for r in rs))
    return LoadResult(
        tool="netlab", url=url, mode="keepalive" if keepalive else "close",
        concurrency=concurrency, requests=ok,
        errors={k: sum(r["errors"][k] for r in rs) for k in ERROR_KINDS},
        duration_s=elapsed, rps=ok / elapsed if elapsed > 0 else 0.0,
        timeline=tuple(timeline), client_cpu_s=sum(r["cpu"] for r in rs),
        client_cores=float(cores), client_procs=len(workers), slow=slow, idle=idle,
        think_ms=float(think_ms), params=params, **latency_summary(lat))
