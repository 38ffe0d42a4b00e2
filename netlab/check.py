"""Check a server — a model, or your own ``fn(listen_sock, app)`` — against netlab's promises, and
say in plain sentences what is wrong:

    report = netlab.check(my_server)        # or netlab.check("epoll", workers=2)
    report                                  # a table: each promise, passed or not, and why
    assert report.passed

The promises are the conformance suite's, shortened to seconds: correct answers, keep-alive,
a stalled client does not block the others, bad input gets 400 and the server keeps serving,
many clients at once, no fds leaked per connection, a clean stop; then throughput at a few
concurrencies, each with what limited it.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from .lifecycle import serve
from .monitor import server_usage, wait_until
from .servers import NetlabError

HELLO = b"Hello from netlab!\n"


class Failed(Exception):
    """A promise broken; the message says what was expected and what came back."""


def _connect(port: int, timeout: float) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_response(f) -> tuple:
    line = f.readline(65537)
    if not line:
        raise Failed("the server closed the connection without answering")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise Failed(f"the answer does not start with a status line: {line[:60]!r}")
    headers = {}
    while True:
        h = f.readline(65537)
        if h in (b"\r\n", b"\n"):
            break
        if not h:
            raise Failed("the connection closed in the middle of the headers")
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" not in headers:
        raise Failed("the answer has no Content-Length header, so the client cannot tell where "
                     "the body ends (use netlab.http.response() to build answers)")
    body = f.read(int(headers["content-length"]))
    return int(parts[1]), headers, body


def _exchange(port: int, raw: bytes, timeout: float = 3.0, count: int = 1) -> list:
    with _connect(port, timeout) as s, s.makefile("rb") as f:
        s.sendall(raw)
        return [_read_response(f) for _ in range(count)]


def _trickle(port: int, raw: bytes, pause: float = 0.005, timeout: float = 3.0) -> tuple:
    """Send ``raw`` one byte at a time, as a slow network may deliver it, then read the answer."""
    with _connect(port, timeout) as s, s.makefile("rb") as f:
        for i in range(len(raw)):
            s.sendall(raw[i:i + 1])
            time.sleep(pause)       # pacing, so each byte travels alone (nothing is timed)
        return _read_response(f)


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise Failed(message)


# -- the promises ---------------------------------------------------------------------------------
def correct_answers(srv) -> str:
    (status, headers, body), = _exchange(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\n"
                                                   b"Connection: close\r\n\r\n")
    _expect(status == 200, f"GET / answered {status}, expected 200")
    _expect(len(body) > 0, "GET / answered an empty body")
    (status, _, body), = _exchange(srv.port, b"GET /bytes/1000 HTTP/1.1\r\nHost: t\r\n"
                                             b"Connection: close\r\n\r\n")
    _expect(status == 200 and len(body) == 1000,
            f"GET /bytes/1000 answered {status} with {len(body)} bytes, expected 200 with 1000 "
            "(pass each request to app.respond(request))")
    (status, _, _), = _exchange(srv.port, b"GET /nothing-here HTTP/1.1\r\nHost: t\r\n"
                                          b"Connection: close\r\n\r\n")
    _expect(status == 404, f"GET /nothing-here answered {status}, expected 404")
    try:
        status, _, body = _trickle(srv.port, b"GET /bytes/7 HTTP/1.1\r\nHost: t\r\n"
                                             b"Connection: close\r\n\r\n")
    except (OSError, Failed):
        status, body = None, b""
    _expect(status == 200 and len(body) == 7,
            f"a request that arrived one byte at a time got {status or 'no answer'}, expected "
            "200 with 7 bytes: recv() returns whatever has arrived, not a whole request, so "
            "keep feeding the parser until it returns one")
    return ("GET / 200, /bytes/1000 has 1000 bytes, an unknown path 404, and a request sent "
            "in 1-byte pieces answered")


def keep_alive(srv) -> str:
    replies = _exchange(srv.port, b"GET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\n"
                                  b"GET /bytes/5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        count=2)
    _expect([r[2] for r in replies] == [b"xxx", b"xxxxx"],
            "two requests sent together on one connection did not get two answers in order: "
            "answer every request the parser returns, in order")
    # one after the other: the second is sent only once the first is answered, so a server
    # that reads a connection once and closes it cannot pass by answering both at once
    try:
        with _connect(srv.port, 3.0) as s, s.makefile("rb") as f:
            s.sendall(b"GET /bytes/2 HTTP/1.1\r\nHost: t\r\n\r\n")
            first = _read_response(f)[2]
            s.sendall(b"GET /bytes/4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            second = _read_response(f)[2]
    except (OSError, Failed):
        first = second = None
    _expect((first, second) == (b"xx", b"xxxx"),
            "a second request sent after the first answer, on the same connection, got no "
            "answer: keep reading the connection until the client closes it or says "
            "Connection: close")
    return "two requests sent together, then two one after the other, answered in order"


def stalled_client(srv) -> str:
    # two kinds of stall: a client that connects and sends nothing, and one that sends half a
    # request. Half a request alone would pass a server that answers whatever one recv()
    # returns; the silent one blocks that recv() for good.
    silent = _connect(srv.port, 5)                       # held open, sending nothing
    with silent, _connect(srv.port, 5) as stalled:
        stalled.sendall(b"GET / HTTP/1.1\r\nHo")          # half a request, then nothing
        time.sleep(0.05)
        t0 = time.monotonic()
        try:
            (status, _, _), = _exchange(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\n"
                                                  b"Connection: close\r\n\r\n", timeout=2.0)
        except (socket.timeout, TimeoutError):
            raise Failed("while one client sent nothing and another half a request, a third "
                         "client got no answer within 2 s: the server waits on one connection "
                         "at a time (that is the iterative model's flaw)") from None
        _expect(status == 200, f"the second client got {status}, expected 200")
    return f"another client was served in {(time.monotonic() - t0) * 1000:.0f} ms"


def bad_input(srv) -> str:
    for raw, want in ((b"NONSENSE\r\n\r\n", 400),
                      (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431)):
        try:
            (status, _, _), = _exchange(srv.port, raw)
        except (ConnectionError, Failed):
            raise Failed(f"a malformed request ({raw[:20]!r}...) got no {want} answer: use "
                         "app.new_parser() and send the error response it gives") from None
        _expect(status == want, f"a malformed request got {status}, expected {want}")
    (status, _, _), = _exchange(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    _expect(status == 200, "after bad input the server stopped answering good requests")
    return "garbage got 400, a huge header 431, and the server kept serving"


def many_clients(srv, n: int = 100) -> str:
    def one(i):
        try:
            (status, _, body), = _exchange(srv.port, f"GET /bytes/{i} HTTP/1.1\r\nHost: t\r\n"
                                                     f"Connection: close\r\n\r\n".encode(),
                                           timeout=10)
            return status == 200 and len(body) == i
        except (OSError, Failed):
            return False

    with ThreadPoolExecutor(32) as pool:
        ok = sum(pool.map(one, range(n)))
    _expect(ok == n, f"only {ok} of {n} clients (32 at a time) got a correct answer")
    return f"{n} clients, 32 at a time, all answered correctly"


def no_fd_leak(srv, n: int = 200) -> str:
    def fds():
        import psutil
        try:
            return server_usage(srv.pid, full=False)["fds"]
        except psutil.NoSuchProcess:      # it died meanwhile: "stays up" says so next
            raise Failed("the server process ended while its fds were being counted") from None

    for _ in range(20):                       # warm up: lazily opened files, pools
        _exchange(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    time.sleep(0.2)
    before = fds()
    for _ in range(n):
        _exchange(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    wait_until(lambda: fds() <= before + n // 10, timeout=2)   # closes may still be under way
    after = fds()
    _expect(after <= before + n // 10,
            f"after {n} closed connections the server holds {after - before} more fds: close "
            "each connection's socket when you are done with it")
    return f"{n} connections later the server holds {after} fds (was {before})"


def _died(srv, broken: bool) -> bool:
    """Whether the server died during the promise just run. A crashing server resets its
    clients before its process has finished exiting (a traceback, atexit, the group's stop), so
    after a broken promise ``alive`` alone would blame the death on a later promise, or on none:
    ask whether it still answers, and if it does not, wait for its exit to be visible."""
    if not srv.alive:
        return True
    if not broken:
        return False
    try:
        _exchange(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return False                                  # it answers: alive and serving
    except (OSError, Failed, ValueError):
        pass
    return bool(wait_until(lambda: not srv.alive, timeout=5.0, interval=0.01))


PROMISES = [("correct answers", correct_answers), ("keep-alive", keep_alive),
            ("a stalled client does not block others", stalled_client),
            ("bad input handled", bad_input), ("many clients at once", many_clients),
            ("no fd leaked per connection", no_fd_leak)]


@dataclass
class Report:
    """What ``check`` found: ``passed``, ``rows`` (a DataFrame) and ``throughput`` (a DataFrame)."""
    server: str
    rows: list = field(default_factory=list)
    throughput: object = None

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.rows)

    def frame(self):
        import pandas as pd
        return pd.DataFrame(self.rows, columns=["promise", "passed", "detail"])

    def __str__(self) -> str:
        lines = [f"netlab.check({self.server}): "
                 f"{'all promises kept' if self.passed else 'some promises broken'}"]
        for r in self.rows:
            lines.append(f"  {'✓' if r['passed'] else '✗'} {r['promise']}: {r['detail']}")
        if self.throughput is not None and len(self.throughput):
            lines.append("  throughput:")
            for _, t in self.throughput.iterrows():
                lines.append(f"    {t['concurrency']:>4} clients: {t['rps']:>8,.0f} req/s, "
                             f"p99 {t['p99_ms']:.1f} ms, {t['errors']} errors, limited by "
                             f"{t['limited_by']}")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


def check(server: Union[str, Callable] = "epoll", concurrency=(1, 10, 100),
          duration: Optional[float] = None, **serve_kwargs) -> Report:
    """Run every promise against a fresh server, then measure it; never raises for a broken
    promise (the report says what broke), only for a server that cannot start."""
    from .env import quick_mode
    name = server if isinstance(server, str) else getattr(server, "__name__", "your server")
    report = Report(name)
    srv = serve(server, **serve_kwargs)
    stop_error = None
    try:
        for promise, test in PROMISES:
            try:
                report.rows.append(dict(promise=promise, passed=True, detail=test(srv)))
            except Failed as e:
                report.rows.append(dict(promise=promise, passed=False, detail=str(e)))
            except (socket.timeout, TimeoutError):
                report.rows.append(dict(promise=promise, passed=False,
                                        detail="no answer within 3 s: the server is waiting for "
                                               "something that will not come"))
            except OSError as e:
                report.rows.append(dict(promise=promise, passed=False,
                                        detail=f"the connection failed: {e.strerror or e}"))
            if _died(srv, broken=not report.rows[-1]["passed"]):
                report.rows.append(dict(promise="stays up", passed=False,
                                        detail=f"the server died: {srv.last_line() or 'no log'}"))
                break
        if srv.alive and report.passed and concurrency:
            import pandas as pd
            from .harness import measure
            runs = []
            for c in concurrency:
                r = measure(srv, c, duration=duration or (0.5 if quick_mode() else 2.0),
                            timeout=3.0)
                runs.append(r.row())
            report.throughput = pd.DataFrame(runs)
    finally:
        try:
            srv.stop()
            report.rows.append(dict(promise="clean stop", passed=True,
                                    detail="stopped; no process left, the port closed"))
        except NetlabError as e:
            stop_error = str(e)
    if stop_error:
        report.rows.append(dict(promise="clean stop", passed=False, detail=stop_error))
    return report


__all__ = ["check", "Report", "PROMISES"]
