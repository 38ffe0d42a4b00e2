"""Real servers and reference load tools: nginx, Node.js, Java NIO, http.server; wrk and ab.

Why peers: to compare netlab's models with real servers under the same load. The lesson is that
the architecture matters more than the language. nginx (an epoll loop per worker process, in C),
the course notes' Node.js server (one libuv loop, in JavaScript) and their Java NIO selector loop
are the same design as netlab's ``epoll`` and ``reactor`` models, and they behave alike when the
same clients load them. ``python -m http.server``, the notes' baseline (a thread per
connection behind a listen backlog of 5), is there to show where the course starts.

    from netlab import external
    with external.nginx() as srv:                 # the same surface as netlab.serve(...)
        print(external.wrk(srv.url, concurrency=10, duration=3).rps)

Why reference load tools: ``netlab.load`` measures from Python, so it needs checking against
tools that are not Python. wrk and ab are small C load generators; when netlab's numbers agree
with theirs on the same server, trust them. Both adapters return a ``netlab.results.LoadResult``
like netlab's own generator does.

Everything here is optional. A missing tool is one sentence with its install command, and the
rest of netlab runs without it. Loads target loopback only (``allow_remote=True`` to override,
for a machine you are allowed to load) and are bounded in time and count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from string import Template
from typing import Callable, NamedTuple, Optional
from urllib.parse import urlsplit

from .env import TOOLS
from .http import HELLO
from .lifecycle import (POSIX, ServerError, _accepts, _bind, _check_port, _kill_group,
                        _proc_group, tree_cpu_seconds, url_of, wait_group_gone)
from .results import ERROR_KINDS, LoadResult
from .servers import NetlabError

PEERS_DIR = Path(__file__).resolve().parent / "peers"

MAX_SECONDS = 600            # no load runs longer than this
MAX_REQUESTS = 10_000_000    # nor sends more requests than this
MAX_CONCURRENCY = 100_000
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


# ---------------------------------------------------------------------------------------------
# Checking what we were asked for
# ---------------------------------------------------------------------------------------------

def _need(tool: str, without: str) -> str:
    """The tool's path, or one sentence saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        hint = TOOLS.get(tool, ("", f"install {tool}"))[1]
        raise NetlabError(f"{tool} is not installed: {hint} ({without})")
    return path


def _number(name: str, value, lo: float, hi: float, integer: bool = False):
    kind = "a whole number" if integer else "a number"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not ok or not lo <= value <= hi:
        raise NetlabError(f"{name} must be {kind} from {lo:g} to {hi:g}, not {value!r}")
    return value


def _whole_seconds(name: str, value, hi: float) -> int:
    """wrk and ab take whole seconds: 0.3 becomes 1, 2.6 becomes 3."""
    _number(name, value, 0.001, hi)
    return max(1, round(value))


def _target(url, allow_remote: bool, tool: str) -> str:
    """An http:// URL with a path, on loopback unless allow_remote."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        host = parts.hostname if parts else None
        if parts:
            parts.port                  # noqa: B018 -- a bad port raises ValueError here
    except ValueError:
        parts = host = None
    if not parts or parts.scheme != "http" or not host:
        raise NetlabError(f"{tool} needs a URL like http://127.0.0.1:8080/, not {url!r}")
    if not allow_remote and not _is_loopback(host):
        raise NetlabError(f"{tool} loads loopback targets only (127.0.0.1, ::1, localhost), not "
                          f"{host}; pass allow_remote=True only for a machine you may load")
    return url if parts.path else url + "/"


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_cpus(cpus) -> Optional[list]:
    """``cpus`` as a sorted list of cores this process may use, or None (not pinned)."""
    if cpus is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise NetlabError("pinning to cores (cpus=...) needs Linux; leave cpus=None here")
    allowed = os.sched_getaffinity(0)
    try:
        chosen = sorted(set(cpus))
    except TypeError:
        chosen = None
    if not chosen or not all(isinstance(c, int) and not isinstance(c, bool) for c in chosen) \
            or not set(chosen) <= allowed:
        raise NetlabError(f"cpus must be a list of cores from {sorted(allowed)}, such as [1], "
                          f"not {cpus!r}")
    return chosen


@contextmanager
def _pinned(cpus: Optional[list]):
    """Run the body (a Popen) with this thread pinned to ``cpus``: the child inherits the mask
    from the thread that starts it, before it runs a single instruction (no preexec_fn, and no
    race with the threads wrk starts)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _run_tool(argv: list, limit_s: float, cpus: Optional[list]) -> tuple:
    """Run a load tool to completion: (exit status, stdout, stderr, its user+system CPU seconds).

    The tool runs in its own process group; it is killed after ``limit_s`` or when we are
    interrupted (Ctrl-C in a notebook), so it never outlives the call. Its CPU time comes from
    wait4(), which reports what the process and all its threads used.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with _pinned(cpus):
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=POSIX, close_fds=True)
        deadline = time.monotonic() + limit_s
        pause = 0.002
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    _kill_group(proc, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        except BaseException:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)   # reaped: Popen must not wait
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(errors="replace"),
                err.read().decode(errors="replace"), usage.ru_utime + usage.ru_stime)


def _last_line(*texts) -> str:
    for text in texts:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return "no output"


def _no_errors() -> dict:
    return {kind: 0 for kind in ERROR_KINDS}


def _ms(us) -> float:
    return float("nan") if us is None else us / 1000.0


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------

WRK_SCRIPT = PEERS_DIR / "wrk-report.lua"


def _wrk_errors(connect: int, read: int, write: int, status: int, timeout: int,
                refused: bool) -> dict:
    """wrk's five error counts as netlab's kinds.

    wrk connects without blocking, so a refused connection surfaces at its first write: write
    errors are refusals when the target no longer listens (``refused``), otherwise the server
    reset or closed the connection under the request. Its connect errors are local failures
    (no free port or file descriptor). A read error is a connection that ended, by reset or
    end-of-file, before a whole response; wrk does not say which. status = a 4xx/5xx answer;
    timeout = a request older than the timeout (counted again at each 2-second check).
    """
    errors = _no_errors()
    errors["other"] += connect
    errors["refused" if refused else "reset"] += write
    errors["short_read"] += read
    errors["bad_status"] += status
    errors["timeout"] += timeout
    return errors


def wrk(url: str, concurrency: int = 10, duration: float = 3.0, *, keepalive: bool = True,
        threads: int = 1, cpus=None, timeout: float = 5.0,
        allow_remote: bool = False) -> LoadResult:
    """Load ``url`` with wrk: ``concurrency`` connections for ``duration`` seconds.

    ``keepalive=False`` sends ``Connection: close``, so every request pays for a new connection.
    ``threads`` are wrk's threads (each a separate epoll loop); ``cpus=[1]`` pins wrk to core 1.
    wrk counts whole seconds (duration and timeout are rounded, at least 1 s).

    ``requests`` counts answers with a 2xx/3xx status. Latency percentiles are wrk's own,
    exact to the microsecond (read from its histogram by a small Lua report); wrk measures from
    the request's write, so with ``keepalive=False`` the connect is not in the latency, and a
    request slower than the timeout is counted as a timeout, not in the percentiles.
    """
    url = _target(url, allow_remote, "wrk")
    _number("concurrency", concurrency, 1, MAX_CONCURRENCY, integer=True)
    _number("threads", threads, 1, min(concurrency, 1024), integer=True)
    seconds = _whole_seconds("duration", duration, MAX_SECONDS)
    timeout_s = _whole_seconds("timeout", timeout, MAX_SECONDS)
    pinned = _check_cpus(cpus)
    _check_fds(concurrency, "wrk")
    exe = _need("wrk", "netlab.load.run measures without it")
    argv = [exe, "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s",
            "--timeout", f"{timeout_s}s", "--latency", "-s", str(WRK_SCRIPT)]
    if not keepalive:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    status, out, err, cpu_s = _run_tool(argv, seconds + timeout_s + 30, pinned)
    match = re.search(r"^NETLAB (\{.*\})\s*$", out, re.M)
    if not match:
        why = _last_line(err, out)
        if "Connection refused" in why:
            raise NetlabError(f"wrk found nothing listening at {url}: is the server stopped?")
        raise NetlabError(f"wrk could not load {url} (exit status {status}): {why}")
    r = json.loads(match.group(1))
    completed = r["requests"]
    refused = bool(r["write"] or r["connect"]) and not _listening(url)
    errors = _wrk_errors(r["connect"], r["read"], r["write"], r["status"], r["timeout"], refused)
    ok = max(0, completed - r["status"])
    seconds_run = r["duration_us"] / 1e6
    lat = (lambda key: _ms(r[key])) if completed else (lambda key: float("nan"))
    cores = min(threads, len(pinned)) if pinned else threads
    return LoadResult(
        tool="wrk", url=url, mode="keepalive" if keepalive else "close",
        concurrency=concurrency, requests=ok, errors=errors, duration_s=seconds_run,
        rps=ok / seconds_run if seconds_run > 0 else float("nan"),
        mean_ms=lat("mean"), p50_ms=lat("p50"), p90_ms=lat("p90"), p99_ms=lat("p99"),
        p999_ms=lat("p999"), max_ms=lat("max"),
        client_cpu_s=cpu_s, client_cores=float(cores), client_procs=1,
        params={"threads": threads, "cpus": pinned, "duration_s": seconds,
                "timeout_s": timeout_s, "completed": completed, "bytes": r["bytes"],
                "wrk_errors": {k: r[k] for k in ("connect", "read", "write", "status",
                                                 "timeout")}})


def _check_fds(connections: int, tool: str) -> None:
    soft = _fd_limits()[0]
    if connections + 32 > soft:
        raise NetlabError(f"{tool} needs a file descriptor per connection and this process may "
                          f"open {soft}: raise it (ulimit -n) or use at most {max(soft - 32, 1)} "
                          "connections")


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    return _accepts(parts.hostname, parts.port or 80)


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _wrk_time_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise NetlabError(f"cannot read {text!r} as a wrk time")
    return float(m.group(1)) * _UNITS_US[m.group(2)]


def parse_wrk(text: str, *, mode: str = "keepalive") -> LoadResult:
    """A LoadResult from wrk's plain text output (with or without ``--latency``).

    The text is rounded (three significant digits), so these numbers are coarser than what
    :func:`wrk` reads from wrk itself. Without ``--latency`` the percentiles are unknown (NaN);
    p99.9 always is. wrk's text does not say whether it sent ``Connection: close``: pass
    ``mode``. The duration comes from requests / Requests/sec (the printed seconds are rounded).
    """
    if mode not in ("keepalive", "close"):
        raise NetlabError(f"mode must be 'keepalive' or 'close', not {mode!r}")

    def find(pattern, cast=str, default=None):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else default

    head = re.search(r"Running .* test @ (\S+)\s+(\d+) threads? and (\d+) connections?", text)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+), ", text, re.M)
    if not head or not total:
        raise NetlabError("this is not wrk's output: no 'Running ... test @' and "
                          "'N requests in' lines")
    url, threads, conns = head.group(1), int(head.group(2)), int(head.group(3))
    completed = int(total.group(1))
    lat = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+", text, re.M)
    dist = dict(re.findall(r"^\s*(50|75|90|99)%\s+(\S+)\s*$", text, re.M))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    connect, read, write, timeout = map(int, sock.groups()) if sock else (0, 0, 0, 0)
    status = find(r"Non-2xx or 3xx responses: (\d+)", int, 0)
    per_s = find(r"^Requests/sec:\s+([\d.]+)", float)
    seconds = completed / per_s if per_s else _wrk_time_us(total.group(2)) / 1e6
    ok = max(0, completed - status)

    def pct(key):
        return _wrk_time_us(dist[key]) / 1000 if key in dist and completed else float("nan")

    nan = float("nan")
    return LoadResult(
        tool="wrk", url=url, mode=mode, concurrency=conns, requests=ok,
        errors=_wrk_errors(connect, read, write, status, timeout, refused=False),
        duration_s=seconds, rps=ok / seconds if seconds > 0 else nan,
        mean_ms=_wrk_time_us(lat.group(1)) / 1000 if lat and completed else nan,
        p50_ms=pct("50"), p90_ms=pct("90"), p99_ms=pct("99"), p999_ms=nan,
        max_ms=_wrk_time_us(lat.group(3)) / 1000 if lat and completed else nan,
        client_cores=float(threads),
        params={"threads": threads, "completed": completed, "from_text": True,
                "wrk_errors": {"connect": connect, "read": read, "write": write,
                               "status": status, "timeout": timeout}})


# ---------------------------------------------------------------------------------------------
# ab (ApacheBench)
# ---------------------------------------------------------------------------------------------

_ab_has_l = None


def _ab_accepts_variable_length(exe: str) -> bool:
    """Does this ab know -l (httpd 2.4.7 and later)? Asked once."""
    global _ab_has_l
    if _ab_has_l is None:
        try:
            h = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=10)
            _ab_has_l = bool(re.search(r"^\s+-l\s", h.stdout + h.stderr, re.M))
        except (OSError, subprocess.SubprocessError):
            _ab_has_l = False
    return _ab_has_l


def ab(url: str, requests: int = 1000, concurrency: int = 10, *, keepalive: bool = False,
       cpus=None, timeout: float = 5.0, allow_remote: bool = False) -> LoadResult:
    """Send ``requests`` requests to ``url`` with ab, ``concurrency`` at a time.

    ab's default is a connection per request (HTTP/1.0); ``keepalive=True`` is ``ab -k``. ab is
    one single-threaded process; ``cpus=[1]`` pins it. It runs at most 600 s, it keeps going
    on receive errors (``-r``), and it accepts any response length (``-l``) so the length of
    the first response is not taken as the only right one. ``mean_ms`` is ab's "Time per
    request (mean)", concurrency x time / requests; p50/p90/p99/max come from its percentile
    file (ms, three decimals); ab has no p99.9 (NaN).
    """
    url = _target(url, allow_remote, "ab")
    _number("requests", requests, 1, MAX_REQUESTS, integer=True)
    _number("concurrency", concurrency, 1, min(requests, 20000), integer=True)
    timeout_s = _whole_seconds("timeout", timeout, MAX_SECONDS)
    pinned = _check_cpus(cpus)
    _check_fds(concurrency, "ab")
    exe = _need("ab", "netlab.load.run measures without it")
    if not _listening(url):     # with -r, ab would count every refusal as a receive error
        raise NetlabError(f"ab found nothing listening at {url}: is the server stopped?")
    with tempfile.TemporaryDirectory(prefix="netlab-ab-") as tmp:
        csv = os.path.join(tmp, "percentiles.csv")
        # -t first: it resets the request count, which -n then sets
        argv = [exe, "-q", "-r", "-t", str(MAX_SECONDS), "-n", str(requests),
                "-c", str(concurrency), "-s", str(timeout_s), "-e", csv]
        if _ab_accepts_variable_length(exe):
            argv.append("-l")
        if keepalive:
            argv.append("-k")
        argv.append(url)
        status, out, err, cpu_s = _run_tool(argv, MAX_SECONDS + timeout_s + 30, pinned)
        table = Path(csv).read_text() if os.path.exists(csv) else None
    if "Complete requests:" not in out:
        why = _last_line(err, out)
        if "Connection refused" in why:
            raise NetlabError(f"ab found nothing listening at {url}: is the server stopped?")
        if "timeout specified has expired" in why:
            raise NetlabError(f"ab gave up: {url} sent nothing for {timeout_s} s (ab stops the "
                              "whole run when one response is that late)")
        raise NetlabError(f"ab could not load {url} (exit status {status}): {why}")
    result = parse_ab(out, percentiles_csv=table, mode="keepalive" if keepalive else "close")
    errors = dict(result.errors)
    if errors["reset"] and not _listening(url):
        # a refused connect surfaces at ab's recv (its connect does not block): the server
        # went away during the run, so these were refusals, not resets
        errors["refused"] += errors["reset"]
        errors["reset"] = 0
    params = dict(result.params, cpus=pinned, timeout_s=timeout_s, requested=requests)
    return dataclasses.replace(result, url=url, errors=errors, client_cpu_s=cpu_s,
                               client_cores=1.0, params=params)


def parse_ab(text: str, percentiles_csv: Optional[str] = None, *,
             mode: Optional[str] = None) -> LoadResult:
    """A LoadResult from ab's text output (and, if given, the text of its ``-e`` CSV file).

    The "Percentage of the requests served within a certain time" table gives p50/p90/p99 and
    the maximum, in whole milliseconds; the CSV refines them to three decimals. p99.9 is
    unknown (NaN). ab's failure counters overlap: a reset connection is a Receive failure, often
    an Exception too, and, having a short body, a Length failure; without ``-l`` any response
    whose length differs from the *first* one is a Length failure, a 404 included. So:

        bad_status = Non-2xx responses            refused = Connect failures
        reset      = Receive failures + Write errors
        short_read = Length failures that neither of those explains
        other      = Exceptions beyond the Receive failures
        requests   = Complete requests - bad_status - Receive failures - short_read

    ``mode`` defaults to what the text says (it prints "Keep-Alive requests" only under -k).
    """
    def find(pattern, cast=int, default=None):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else default

    complete = find(r"^Complete requests:\s+(\d+)")
    conc = find(r"^Concurrency Level:\s+(\d+)")
    if complete is None or conc is None:
        raise NetlabError("this is not ab's output: no 'Complete requests' line")
    host = find(r"^Server Hostname:\s+(\S+)", str, "?")
    port = find(r"^Server Port:\s+(\d+)", str, "80")
    path = find(r"^Document Path:\s+(\S+)", str, "/")
    url = url_of(host, int(port))[:-1] + path
    fails = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)",
                      text)
    connect, receive, length, exceptions = map(int, fails.groups()) if fails else (0, 0, 0, 0)
    non2xx = find(r"^Non-2xx responses:\s+(\d+)", int, 0)
    write_errors = find(r"^Write errors:\s+(\d+)", int, 0)
    keepalive_n = find(r"^Keep-Alive requests:\s+(\d+)", int)
    taken = find(r"^Time taken for tests:\s+([\d.]+) seconds", float)
    per_s = find(r"^Requests per second:\s+([\d.]+)", float)
    mean = find(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", float)
    seconds = complete / per_s if per_s and complete else taken

    errors = _no_errors()
    errors["refused"] = connect
    errors["reset"] = receive + write_errors
    errors["bad_status"] = non2xx
    errors["short_read"] = max(0, length - non2xx - receive)
    errors["other"] = max(0, exceptions - receive)
    ok = max(0, complete - non2xx - receive - errors["short_read"])

    nan = float("nan")
    table = {int(p): float(v) for p, v in re.findall(r"^\s*(\d+)%\s+(\d+)", text, re.M)}
    if percentiles_csv:
        table.update({int(p): float(v) for p, v in
                      re.findall(r"^(\d+),([\d.]+)\s*$", percentiles_csv, re.M)})
    pct = (lambda p: table.get(p, nan)) if complete else (lambda p: nan)
    return LoadResult(
        tool="ab", url=url, mode=mode or ("keepalive" if keepalive_n is not None else "close"),
        concurrency=conc, requests=ok, errors=errors, duration_s=seconds or nan,
        rps=ok / seconds if seconds else nan,
        mean_ms=mean if (mean is not None and complete) else nan,
        p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99), p999_ms=nan, max_ms=pct(100),
        client_cores=1.0,
        params={"complete": complete, "keepalive_requests": keepalive_n,
                "ab_failed": {"connect": connect, "receive": receive, "length": length,
                              "exceptions": exceptions, "non2xx": non2xx,
                              "write": write_errors}})


# ---------------------------------------------------------------------------------------------
# Peers: real servers with the surface of netlab.Server
# ---------------------------------------------------------------------------------------------

STARTUP_TIMEOUT = 20.0
WATCHDOG = PEERS_DIR / "watchdog.py"
_LOG_TAIL = 64 * 1024          # log() returns at most this much of the end of the log


def _abandoned(proc: subprocess.Popen, watchdog: Optional[subprocess.Popen], owner: int,
               workdir: tempfile.TemporaryDirectory) -> None:
    """Finalizer (garbage collection, interpreter exit): kill the peer's group, dismiss its
    watchdog, remove its workdir (once nothing runs in it). Only in the process that started
    it, never in a forked copy of the harness."""
    if os.getpid() != owner:
        return
    if proc.poll() is None:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
    elif POSIX:
        _kill_group(proc, signal.SIGKILL)   # workers that outlived their master
    _dismiss(watchdog)
    workdir.cleanup()


def _dismiss(watchdog: Optional[subprocess.Popen]) -> None:
    """Tell a peer's watchdog the harness stopped the peer itself, and reap it."""
    if watchdog is None:
        return
    try:
        watchdog.stdin.write(b"d")
        watchdog.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        watchdog.wait(5)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


class Peer:
    """A real server run like a netlab model: ``url``, ``host``, ``port``, ``pid``, ``alive``,
    ``cpu_seconds()``, ``log()``, ``stop()``; a context manager that stops it.

    It runs in its own process group; stopping sends SIGTERM to the group, SIGKILL after a
    timeout, reaps it and checks that no process is left and the port is closed. Abandoning the
    object (garbage collection, interpreter exit) still stops it, and a small watchdog process
    stops it if the harness itself dies.
    """

    host = "127.0.0.1"

    def __init__(self, model: str, argv: list, *, port: int, workers: int = 1,
                 announce: Optional[str] = None,
                 workdir: Optional[tempfile.TemporaryDirectory] = None,
                 env: Optional[dict] = None, ready: Optional[Callable[["Peer"], bool]] = None,
                 retry_port: Optional[Callable[[], tuple]] = None):
        self.model, self.workers = model, workers
        self.port: Optional[int] = port or None
        self.url: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self._argv, self._announce, self._env = argv, announce, env
        self._ready = ready                 # more to wait for than a port that accepts
        self._retry_port = retry_port       # nginx: (port, argv) for another free port
        self._workdir = workdir or tempfile.TemporaryDirectory(prefix=f"netlab-{model}-")
        self._log_path = Path(self._workdir.name) / "peer.log"
        self._final_log = ""
        self._watchdog: Optional[subprocess.Popen] = None
        self._finalizer = None
        self._stopped = False

    # -- start --------------------------------------------------------------------------------
    def start(self) -> "Peer":
        if self.proc is not None:
            raise ServerError(f"this {self.model} peer was already started; create a new one")
        attempts = 5 if self._retry_port else 1
        for attempt in range(attempts):
            try:
                self._spawn()
                self._wait_listening()
                break
            except ServerError:
                if attempt + 1 < attempts and "Address already in use" in self.log():
                    self._end(timeout=3.0)     # another program took the port: pick again
                    self.port, self._argv = self._retry_port()
                    continue
                self.stop(check=False)
                raise
            except BaseException:
                self.stop(check=False)
                raise
        self.url = url_of(self.host, self.port)
        return self

    def _spawn(self) -> None:
        self._log_path.write_bytes(b"")
        with open(self._log_path, "ab") as log:     # O_APPEND: stdout and stderr interleave
            self.proc = subprocess.Popen(
                self._argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self._workdir.name, env=self._env, close_fds=True,
                start_new_session=POSIX)
        if POSIX:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", str(WATCHDOG), str(self.proc.pid), "3",
                 self._workdir.name],       # a killed harness leaves the workdir to it
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True)
        self._finalizer = weakref.finalize(self, _abandoned, self.proc, self._watchdog,
                                           os.getpid(), self._workdir)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        pause = 0.005
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.model} exited with status {self.proc.returncode} "
                                  f"before listening: {self._tail()}")
            if self.port is None:
                m = re.search(self._announce, self.log())
                if m:
                    self.port = int(m.group(1))
            if self.port is not None and (self._ready is None or self._ready(self)) \
                    and _accepts(self.host, self.port):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{self.model} did not listen within {STARTUP_TIMEOUT:.0f} s; "
                                  f"its log: {self._tail() or '(empty)'}")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    # -- state ----------------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the peer's process tree (nginx: master and
        workers; a JVM or Node.js: all their threads)."""
        return tree_cpu_seconds(self.pid)

    def log(self) -> str:
        """What the peer wrote so far (stdout and stderr; nginx's error log), at most the last
        64 KiB (http.server logs every request)."""
        try:
            with open(self._log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _LOG_TAIL))
                return f.read().decode(errors="replace")
        except OSError:
            return self._final_log

    def _tail(self) -> str:
        lines = [ln.strip() for ln in self.log().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    # -- stop -----------------------------------------------------------------------------------
    def stop(self, timeout: float = 3.0, check: bool = True) -> None:
        """SIGTERM the group, SIGKILL after ``timeout``, reap, and verify nothing is left.

        With ``check``, raises ServerError if the peer had died on its own with an error, if a
        process of its group survived, or if its port still accepts connections.
        """
        proc = self.proc
        if proc is None or self._stopped:
            if proc is None:
                self._workdir.cleanup()     # never started (or could not be)
            return
        died_early = proc.poll()
        try:
            leftover = self._end(timeout)
        finally:
            self._release()
        if not check:
            return
        if leftover:
            raise ServerError(f"processes {leftover} of the {self.model} peer survived SIGKILL")
        if self.port and _accepts(self.host, self.port):
            raise ServerError(f"port {self.port} still accepts connections after the "
                              f"{self.model} peer stopped: a process it started left its group")
        if died_early is not None and died_early != 0:
            raise ServerError(f"{self.model} had already exited with status {died_early}: "
                              f"{self._tail()}")

    def _end(self, timeout: float) -> list:
        """Stop the process group and dismiss the watchdog; return the pids that survived."""
        proc = self.proc
        try:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()
            return self._wait_group_gone(timeout) if POSIX else []
        except BaseException:           # interrupted while waiting: kill at once
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            if self._finalizer is not None:
                self._finalizer.detach()
            _dismiss(self._watchdog)
            self._watchdog = None

    def _wait_group_gone(self, timeout: float) -> list:
        return wait_group_gone(self.proc, timeout)

    def _release(self) -> None:
        self._stopped = True
        self._final_log = self.log()
        self._workdir.cleanup()

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(check=exc_type is None)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<netlab peer {self.model} {self.url} pid={self.pid} {state}>"


def _free_port(port: int = 0) -> int:
    """``port`` if nothing listens on it now (else the same sentence as netlab.serve), or for
    port 0 a free port: for servers that cannot bind port 0 themselves, and so that a port in
    use fails at once, the same way for every peer."""
    _check_port(port)
    probe = _bind(Peer.host, port, reuseport=False)
    port = probe.getsockname()[1]
    probe.close()
    return port


# -- nginx ------------------------------------------------------------------------------------

def _nginx_answer(body) -> tuple:
    """(the nginx directive answering GET /, the body bytes to write to a file or None)."""
    if body is None:
        body = HELLO
    elif isinstance(body, int) and not isinstance(body, bool):
        _number("body", body, 0, 16 * 1024 * 1024, integer=True)
        body = b"x" * body                  # like netlab's body_bytes
    elif isinstance(body, str):
        body = body.encode()
    if not isinstance(body, (bytes, bytearray)):
        raise NetlabError(f"body must be bytes, text or a size in bytes, not {body!r}")
    body = bytes(body)
    text = body.decode("latin-1")
    simple = len(body) <= 2048 and "$" not in text and all(
        32 <= ord(c) < 127 or c in "\n\t" for c in text)
    if simple:      # nginx's `return` answers from memory, like netlab's models
        quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .replace("\t", "\\t")
        return f'return 200 "{quoted}";', None
    # anything else (large, binary, or with '$', which `return` would expand) from a file
    return "root ${dir}/www;\n            try_files /body =404;", body


def _nginx_user() -> str:
    """As root, nginx's workers switch user: to nobody where it exists, else they stay root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "# not root: the workers run as this user"
    try:
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
    except (ImportError, KeyError):
        return "user root;"


def nginx(port: int = 0, workers: int = 1, body=None, *, connections: Optional[int] = None) -> Peer:
    """Start nginx (``workers`` worker processes, each an epoll loop) answering every path with
    ``body`` (netlab's default body; or bytes, or a size in bytes like ``body_bytes``).

    ``connections`` is nginx's worker_connections (default: as many as this process may open
    files, at most 65,536). nginx cannot bind port 0, so port 0 picks a free port first (and
    picks again if another program takes it before nginx binds it).
    """
    _check_port(port)
    _number("workers", workers, 1, 256, integer=True)
    answer, file_body = _nginx_answer(body)
    soft, hard = _fd_limits()
    if connections is None:
        connections = max(64, min(soft, 65536) - 32)
    _number("connections", connections, 16, 1_000_000, integer=True)
    exe = _need("nginx", "the built-in models run without it")
    nofile = min(max(soft, connections + 32), hard)     # raising past the hard limit fails
    first = _free_port(port)
    workdir = tempfile.TemporaryDirectory(prefix="netlab-nginx-")
    d = workdir.name
    os.chmod(d, 0o755)              # the workers (nobody, when we are root) must reach www/
    if file_body is not None:
        os.mkdir(os.path.join(d, "www"))
        Path(d, "www", "body").write_bytes(file_body)
        os.chmod(os.path.join(d, "www"), 0o755)
        os.chmod(os.path.join(d, "www", "body"), 0o644)
    template = Template((PEERS_DIR / "nginx.conf.template").read_text())
    conf = os.path.join(d, "nginx.conf")
    version = _nginx_version(exe)

    def configure(p: int):
        text = template.substitute(
            user=_nginx_user(), workers=workers, nofile=nofile,
            connections=connections, dir=d, host="127.0.0.1", port=p,
            answer=Template(answer).safe_substitute(dir=d))
        Path(conf).write_text(text)
        argv = [exe, "-p", d + "/", "-c", conf]
        if version >= (1, 19, 5):
            argv += ["-e", "stderr"]        # no write to /var/log before the config is read
        return p, argv

    chosen, argv = configure(first)
    def ready(peer: Peer) -> bool:
        # the pid file is written once the port is bound (by nginx, not by another program
        # that took it first); then wait for every worker, or a run's first second has fewer
        pidfile = os.path.join(d, "nginx.pid")
        counted = sys.platform.startswith("linux")         # elsewhere we cannot count them
        return os.path.exists(pidfile) and (not counted or len(_proc_group(peer.pid)) > workers)

    retry = (lambda: configure(_free_port())) if port == 0 else None
    peer = Peer("nginx", argv, port=chosen, workers=workers, workdir=workdir, ready=ready,
                retry_port=retry)
    return peer.start()


_nginx_versions: dict = {}


def _nginx_version(exe: str) -> tuple:
    if exe not in _nginx_versions:
        try:
            out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
            m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out.stderr + out.stdout)
            _nginx_versions[exe] = tuple(map(int, m.groups())) if m else (0, 0, 0)
        except (OSError, subprocess.SubprocessError):
            _nginx_versions[exe] = (0, 0, 0)
    return _nginx_versions[exe]


def _fd_limits() -> tuple:
    """(soft, hard) limit on open files, 'unlimited' read as 1,048,576."""
    try:
        import resource
        return tuple(1 << 20 if v == resource.RLIM_INFINITY else int(v)
                     for v in resource.getrlimit(resource.RLIMIT_NOFILE))
    except (ImportError, ValueError, OSError):
        return 1024, 1024


# -- node ---------------------------------------------------------------------------------------

def node(port: int = 0) -> Peer:
    """Start the course notes' Node.js hello-world server (netlab/peers/hello.mjs): one thread,
    one event loop."""
    _check_port(port)
    exe = _need("node", "the built-in models run without it")
    if port:
        _free_port(port)
    return Peer("node", [exe, str(PEERS_DIR / "hello.mjs"), str(port)], port=port,
                announce=r"Listening on [\d.]+:(\d+)").start()


# -- java ---------------------------------------------------------------------------------------

JAVA_SOURCE = PEERS_DIR / "NioServer.java"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netlab" / "java"


def _java_classes() -> Optional[Path]:
    """The compiled NioServer, if this version of its source was compiled before."""
    key = hashlib.sha256(JAVA_SOURCE.read_bytes()).hexdigest()[:16]
    d = _cache_dir() / key
    return d if (d / "NioServer.class").exists() else None


def _compile_java() -> Path:
    """Compile NioServer.java once per version of its source, into ~/.cache/netlab/java/<hash>/
    (only the first start pays for javac)."""
    found = _java_classes()
    if found:
        return found
    javac = shutil.which("javac")
    if javac is None:
        raise NetlabError(f"javac is not installed: {TOOLS['java'][1]} (the built-in models "
                          "run without it)")
    key = hashlib.sha256(JAVA_SOURCE.read_bytes()).hexdigest()[:16]
    final = _cache_dir() / key
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    except OSError as e:
        raise ServerError(f"cannot write the compiled Java server to {final.parent} "
                          f"({e.strerror or e}): set XDG_CACHE_HOME to a writable folder") from None
    try:
        out = subprocess.run([javac, "-d", str(tmp), str(JAVA_SOURCE)], capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            raise ServerError(f"javac could not compile NioServer.java: "
                              f"{_last_line(out.stderr, out.stdout)}")
        try:
            os.rename(tmp, final)
        except OSError:             # another process compiled it first: use theirs
            if not (final / "NioServer.class").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def java(port: int = 0) -> Peer:
    """Start the course notes' Java NIO selector loop, completed into a small HTTP/1.1 server
    (netlab/peers/NioServer.java): one thread, one Selector. The first start compiles it."""
    _check_port(port)
    exe = _need("java", "the built-in models run without it")
    classes = _compile_java()
    if port:
        _free_port(port)
    return Peer("java", [exe, "-cp", str(classes), "NioServer", str(port)], port=port,
                announce=r"Listening on [\d.]+:(\d+)").start()


# -- http.server --------------------------------------------------------------------------------

def http_server(port: int = 0) -> Peer:
    """Start ``python -m http.server`` serving a folder whose index.html is netlab's default body:
    the notes' baseline (a thread per connection, HTTP/1.0, a listen backlog of 5). It logs
    every request, as it does in a terminal."""
    _check_port(port)
    if port:
        _free_port(port)
    workdir = tempfile.TemporaryDirectory(prefix="netlab-http.server-")
    www = Path(workdir.name, "www")
    www.mkdir()
    (www / "index.html").write_bytes(HELLO)
    argv = [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1",
            "--directory", str(www)]
    return Peer("http.server", argv, port=port, workdir=workdir,
                announce=r"Serving HTTP on \S+ port (\d+)").start()


# ---------------------------------------------------------------------------------------------
# The list
# ---------------------------------------------------------------------------------------------

class PeerSpec(NamedTuple):
    factory: Callable[..., Peer]
    tool: Optional[str]             # the program it needs on PATH (None: only Python)
    description: str


PEERS = {
    "nginx": PeerSpec(nginx, "nginx", "nginx: a master and N worker processes, each an epoll "
                      "loop, in C"),
    "node": PeerSpec(node, "node", "the notes' Node.js hello world: one libuv event loop"),
    "java": PeerSpec(java, "java", "the notes' Java NIO selector loop, one thread"),
    "http.server": PeerSpec(http_server, None, "python -m http.server: a thread per connection, "
                            "listen backlog 5"),
}


def available_peers() -> list:
    """[(name, available, reason)] for every peer; the reason says how to install what is
    missing ('' when it runs here)."""
    rows = []
    for name, spec in PEERS.items():
        reason = ""
        if spec.tool and shutil.which(spec.tool) is None:
            reason = f"{spec.tool} is not installed: {TOOLS[spec.tool][1]}"
        elif name == "java" and shutil.which("javac") is None and _java_classes() is None:
            reason = f"javac is not installed (needed once, to compile): {TOOLS['java'][1]}"
        rows.append((name, not reason, reason))
    return rows
