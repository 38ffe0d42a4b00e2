"""Reference load tools: wrk and ab, run and read as netlab's own load generator is.

Why: ``netlab.load`` measures from Python, so it needs checking against tools that are not
Python. wrk (an epoll loop per thread) and ab (one single-threaded process) are small C load
generators; when netlab's numbers agree with theirs on the same server, trust them. Both return
a ``netlab.results.LoadResult`` like netlab's own generator does.

    from netlab import loadtools, peers
    with peers.nginx() as srv:
        print(loadtools.wrk(srv.url, concurrency=10, duration=3).rps)

Both are optional: a missing tool is one sentence with its install command. Loads target
loopback only (``allow_remote=True`` to override, for a machine you are allowed to load), are
bounded in time and count, and run in a process group of their own that never outlives the call.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from .arguments import number
from .env import fd_limit, need
from .results import ERROR_KINDS, LoadResult
from .servers import NetlabError
from .sockets import accepts, url_of
from .supervisor import POSIX, dismiss, kill_group, watch

MAX_SECONDS = 600            # no load runs longer than this
MAX_REQUESTS = 10_000_000    # nor sends more requests than this
MAX_CONCURRENCY = 100_000
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


# ---------------------------------------------------------------------------------------------
# Checking what we were asked for
# ---------------------------------------------------------------------------------------------

def _whole_seconds(name: str, value, hi: float) -> int:
    """wrk and ab take whole seconds: 0.3 becomes 1, 2.6 becomes 3."""
    number(name, value, 0.001, hi)
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
        try:
            guard = watch(proc.pid)         # a harness killed mid-load must not leave it loading
        except BaseException:
            kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        deadline = time.monotonic() + limit_s
        pause = 0.002
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    kill_group(proc, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        except BaseException:
            kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            dismiss(guard)
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

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk-report.lua"   # reads its histogram


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
    number("concurrency", concurrency, 1, MAX_CONCURRENCY, integer=True)
    number("threads", threads, 1, min(concurrency, 1024), integer=True)
    seconds = _whole_seconds("duration", duration, MAX_SECONDS)
    timeout_s = _whole_seconds("timeout", timeout, MAX_SECONDS)
    pinned = _check_cpus(cpus)
    _check_fds(concurrency, "wrk")
    exe = need("wrk", "netlab.load.run measures without it")
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
    soft = (fd_limit() or (1 << 20, 0))[0]
    if connections + 32 > soft:
        raise NetlabError(f"{tool} needs a file descriptor per connection and this process may "
                          f"open {soft}: raise it (ulimit -n) or use at most {max(soft - 32, 1)} "
                          "connections")


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    return accepts(parts.hostname, parts.port or 80)


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
    number("requests", requests, 1, MAX_REQUESTS, integer=True)
    number("concurrency", concurrency, 1, min(requests, 20000), integer=True)
    timeout_s = _whole_seconds("timeout", timeout, MAX_SECONDS)
    pinned = _check_cpus(cpus)
    _check_fds(concurrency, "ab")
    exe = need("ab", "netlab.load.run measures without it")
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
