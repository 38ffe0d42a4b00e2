"""The course notes' clients, runnable against local servers: Node's fetch and its lower-level
http.get, the same client in asyncio, and Tokio's mini-redis-style client.

Why: the notes' second half says a server is a client too (of Redis, of other services), and
that an event loop makes many requests at once as cheaply as it serves many connections. Each
client here runs in its own process group (like every peer), optionally under ``strace -f -c``
so the kernel counts its epoll waits, and says how long N requests took one after another
against all at once.

    from netlab import clients
    clients.run("node fetch", srv.url, n=20, mode="concurrent", strace=True)
    clients.compare(srv.url, n=20)                  # every client, both modes: a DataFrame
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..arguments import whole
from ..loadtools import _is_loopback
from ..servers import NetlabError
from ..sockets import check_host
from ..supervisor import Helper, remove

HERE = Path(__file__).resolve().parent
CLIENTS = {            # name -> (program it needs, how to get it)
    "node fetch": ("node", "apt-get install nodejs"),
    "node http.get": ("node", "apt-get install nodejs"),
    "asyncio": (None, ""),
}
MODES = ("sequential", "concurrent")
WAITS = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "io_uring_enter", "poll", "select")


class _Client(Helper):
    """A client program in its own group, stdout piped to us."""

    def __init__(self, name: str, argv: list):
        super().__init__(name, text=True)
        self._argv = list(argv)


def unavailable(client: str) -> str:
    """Why ``client`` cannot run here, in one sentence ('' when it can)."""
    if client not in CLIENTS:
        raise NetlabError(f"unknown client {client!r}: choose from {', '.join(CLIENTS)}")
    tool, install = CLIENTS[client]
    if tool and shutil.which(tool) is None:
        return f"{tool} is not installed: {install}"
    return ""


def _local_only(host: str, where: str) -> None:
    """The load generators' rule (loopback targets only), for the notes' clients too."""
    if not _is_loopback(host or ""):
        raise NetlabError(f"the clients run against local servers only, not {where!r}")


def _run(name: str, argv: list, strace: bool, timeout: float) -> tuple:
    """Run a client to its end in its own group, under ``strace -f -c`` if asked: (what it
    printed, {syscall: calls} or None)."""
    trace = None
    if strace:
        from ..experiments.syscalls import strace as strace_exe
        fd, trace = tempfile.mkstemp(prefix="netlab-client-", suffix=".strace")
        os.close(fd)
        argv = [strace_exe(), "-f", "-c", "-o", trace] + argv
    try:
        with _Client(name, argv).start() as proc:
            out = proc.output(timeout)
            if proc.proc.returncode != 0:
                raise NetlabError(f"the {name} client failed: {proc.last_line() or 'no message'}")
        if not trace:
            return out, None
        from ..experiments.syscalls import parse
        return out, {k: v[0] for k, v in parse(Path(trace).read_text()).items()}
    finally:
        if trace:
            remove(trace)


def _counted(row: dict, counts) -> dict:
    if counts is not None:
        row["waits"] = {k: v for k, v in counts.items() if k in WAITS}
        row["syscalls"] = sum(counts.values())
    return row


def _argv(client: str, url: str, n: int, mode: str) -> list:
    if client == "asyncio":
        return [sys.executable, "-I", str(HERE / "aio.py"), url, str(n), mode]
    script = "fetch.mjs" if client == "node fetch" else "http_get.mjs"
    return [shutil.which("node"), str(HERE / script), url, str(n), mode]


def run(client: str, url: str, n: int = 10, mode: str = "concurrent", strace: bool = False,
        timeout: float = 60.0) -> dict:
    """Run ``client`` once: ``n`` GETs of ``url`` (a local server), one after another
    (``mode="sequential"``) or all at once. A dict: client, mode, n, ok (200s), wall_s (timed by
    the client itself), and with ``strace`` the kernel's count of each wait call
    (``waits``: {epoll_wait: ..., ...}) and of all system calls (``syscalls``)."""
    from urllib.parse import urlsplit
    why = unavailable(client)
    if why:
        raise NetlabError(why)
    if mode not in MODES:
        raise NetlabError(f"mode is 'sequential' or 'concurrent', not {mode!r}")
    whole("n", n, 1, 10_000)
    host = urlsplit(url).hostname if isinstance(url, str) else None
    check_host(host or "")
    _local_only(host, url)
    out, counts = _run(client, _argv(client, url, n, mode), strace, timeout)
    row = json.loads(out.strip().splitlines()[-1])
    row.pop("statuses", None)
    return _counted(row, counts)


def compare(url: str, n: int = 20, clients=None, strace: bool = False):
    """Every available client in both modes against ``url``: a DataFrame, a row per run, with
    the wall time and (with ``strace``) the wait calls each made; unavailable ones say why."""
    import pandas as pd
    rows = []
    for client in (clients or list(CLIENTS)):
        why = unavailable(client)
        for mode in MODES:
            if why:
                rows.append(dict(client=client, mode=mode, n=n, reason=why))
                continue
            r = run(client, url, n, mode, strace)
            waits = r.pop("waits", None)
            if waits is not None:
                r["wait_calls"] = sum(waits.values())
            rows.append(r)
    return pd.DataFrame(rows)


def tokio_redis(address: str, strace: bool = False, timeout: float = 60.0) -> dict:
    """The notes' Tokio client (SET hello world, GET hello) against the Redis at ``address``
    ('127.0.0.1:PORT', e.g. ``redis_server().address``): its printed lines, and with ``strace``
    its wait calls and threads. Built once, offline, from Debian's crates."""
    from ..guestbook import parse_address
    from ..peers.tokio import build
    _local_only(parse_address(address)[0], address)
    out, counts = _run("tokio redis", [str(build("tokio-redis-client")), address], strace,
                       timeout)
    return _counted(dict(client="tokio redis", output=out.strip().splitlines()), counts)
