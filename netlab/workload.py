"""What a request costs, and the application every model serves.

Three knobs make a trivial handler resemble real work, which is where server models differ:

- ``backend_ms``: time each request waits on a simulated backend (a database, another service).
  Blocking models sleep in the handler; event-loop models set a timer and keep serving others.
- ``cpu_us``: busy CPU work per request, done while holding the GIL like real Python code.
- ``body_bytes``: size of the body of ``GET /`` (default: a short greeting).

And one real backend: ``redis`` ('HOST:PORT') gives ``/guestbook`` a Redis server to talk to
(``netlab.guestbook``); each model waits for it in its own way.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Optional

from . import guestbook, http
from .arguments import whole
from .servers import NetlabError


MAX_BACKEND_MS = 60_000        # a minute per request is already absurd for an experiment
MAX_CPU_US = 10_000_000        # ten seconds of CPU per request, likewise


class WorkloadError(NetlabError, ValueError):
    """A workload knob out of range (a ValueError too, for code that expects one)."""


@dataclass(frozen=True)
class Workload:
    backend_ms: float = 0.0
    cpu_us: float = 0.0
    body_bytes: Optional[int] = None
    trace: bool = False          # stamp every answer with who produced it, and when
    redis: Optional[str] = None  # 'HOST:PORT' of the guestbook's Redis (None: /guestbook is 503)

    def __post_init__(self):
        # isfinite too: NaN passes "< 0" and then crashes the handler (int(nan)) or sleep()
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and v >= 0 for v in (self.backend_ms, self.cpu_us)):
            raise WorkloadError("backend_ms and cpu_us must be zero or positive (and finite)")
        if self.backend_ms > MAX_BACKEND_MS or self.cpu_us > MAX_CPU_US:
            raise WorkloadError(f"backend_ms must be at most {MAX_BACKEND_MS} and cpu_us at "
                                f"most {MAX_CPU_US}")
        if self.body_bytes is not None:
            whole("body_bytes", self.body_bytes, 0, http.MAX_BYTES_ROUTE, error=WorkloadError)
        if not isinstance(self.trace, bool):
            raise WorkloadError(f"trace must be True or False, not {self.trace!r}")
        if self.redis is not None:
            try:
                guestbook.parse_address(self.redis)
            except NetlabError as e:
                raise WorkloadError(str(e)) from None

    def as_dict(self) -> dict:
        return asdict(self)


_iterations_per_us: Optional[float] = None


def _spin(n: int) -> int:
    x = 1
    for _ in range(n):
        x = (x * 31 + 7) % 1000003
    return x


def burn_cpu(us: float) -> None:
    """Do ``us`` microseconds of pure-Python work, measured on this thread's CPU clock.

    Real work (a loop of arithmetic holding the GIL) in steps of ~20 µs, until the thread has
    used ``us`` of CPU. A fixed number of iterations, calibrated once per process, missed by
    ±40% from one server process to the next on a shared VM (a calibration taken while a
    neighbour shared the core): "500 µs per request" has to be 500 µs in every model. Time
    spent waiting for a core or for the GIL is not CPU, so it still stretches the request.
    """
    if us <= 0:
        return
    step = max(1, int(min(us, 20.0) * (_iterations_per_us or calibrate())))
    if not _FINE_CLOCK:                 # a coarse thread clock (Windows): trust the loop count
        _spin(int(us / min(us, 20.0)) * step)
        return
    end = time.thread_time() + us / 1e6
    while True:
        _spin(step)
        if time.thread_time() >= end:
            return


try:
    _FINE_CLOCK = time.get_clock_info("thread_time").resolution <= 1e-5
except (AttributeError, ValueError, OSError):
    _FINE_CLOCK = False


def calibrate() -> float:
    """Loop iterations per microsecond of CPU in this process (to size burn_cpu's steps). App
    calls it when the workload burns CPU, before any model forks, so children inherit it
    instead of paying ~10 ms each."""
    global _iterations_per_us
    if _iterations_per_us is None:
        best = float("inf")
        for _ in range(5):
            t0 = time.thread_time()
            _spin(20_000)
            best = min(best, time.thread_time() - t0)
        _iterations_per_us = 20_000 / max(best * 1e6, 1.0)
    return _iterations_per_us


class App:
    """Turns a parsed request into response bytes. Shared by every server model.

    ``backend_s`` is not applied here: how a model waits (sleep or timer) is the lesson.
    """

    def __init__(self, workload: Workload = Workload()):
        self.workload = workload
        self.backend_s = workload.backend_ms / 1000.0
        body = http.HELLO if workload.body_bytes is None else b"x" * workload.body_bytes
        # the common answers, built once: per-request work here is not part of any lesson
        self._root = {True: http.response(200, body, True), False: http.response(200, body, False)}
        self._root_head = {k: http.response(200, body, k, head_only=True) for k in (True, False)}
        if workload.cpu_us > 0:
            calibrate()
        if workload.trace:      # chosen once here: the untraced path pays no test per request
            self.new_parser, self.respond = _TracingParser, self._traced_respond
        # the blocking models' way to the guestbook's Redis; an event loop asks backend_commands
        # instead, and waits for the replies on its own loop (servers/backend.py)
        self.backend = guestbook.BlockingBackend(workload.redis) if workload.redis else None

    def backend_commands(self, req: http.Request):
        """For an event loop: None when ``req`` needs no backend, else what ``guestbook.commands``
        says (the Redis commands to send, or the whole answer to a bad request)."""
        if self.backend is None or req.error or not guestbook.handles(req.target.split("?", 1)[0]):
            return None
        return guestbook.commands(req)

    def backend_answer(self, req: http.Request, replies) -> bytes:
        """For an event loop: the answer once Redis replied (a list), or a 503 when it could not
        (a sentence saying why)."""
        if isinstance(replies, str):
            return guestbook.unavailable(req, replies)
        return guestbook.answer(req, replies)

    def new_parser(self) -> http.RequestParser:
        return http.RequestParser()

    def _traced_respond(self, req: http.Request) -> bytes:
        """``respond``, with an X-Netlab-Trace header: who answered, and when."""
        head, blank, body = type(self).respond(self, req).partition(b"\r\n\r\n")
        stamp = (f"\r\n{TRACE_HEADER}: pid={os.getpid()} tid={threading.get_native_id()} "
                 f"start={req.received:.6f} end={time.monotonic():.6f}")
        return head + stamp.encode() + blank + body

    def respond(self, req: http.Request) -> bytes:
        """The full response to one request (does the request's CPU work first).

        The routes: ``GET /`` answers a short greeting, or ``body_bytes`` bytes when the
        workload sets it; ``GET /bytes/N`` answers exactly N bytes (0 to MAX_BYTES_ROUTE; any
        other N is 400); ``/guestbook`` is the Redis-backed guestbook (``netlab.guestbook``;
        GET, HEAD and POST). ``HEAD`` is answered like ``GET`` without the body; an unknown path is
        404, another method 405. The query string is ignored. A request the parser refused is
        answered with its error status, and the connection closes.
        """
        if req.error:
            return http.error_response(req)
        if self.workload.cpu_us:
            burn_cpu(self.workload.cpu_us)
        ka = req.keep_alive
        path = req.target.split("?", 1)[0]
        if guestbook.handles(path):
            if self.backend is None:
                return guestbook.unavailable(req, "this server was started without one: "
                                                  "serve(..., redis=ADDRESS), or --redis")
            return self.backend.respond(req)        # a blocking call: the blocking models' way
        if req.method not in ("GET", "HEAD"):
            return http.response(405, b"only GET and HEAD\n", ka, extra="Allow: GET, HEAD\r\n")
        head = req.method == "HEAD"
        if path == "/":
            return self._root_head[ka] if head else self._root[ka]
        if path.startswith("/bytes/"):
            n = http.int_at_most(path[7:], http.MAX_BYTES_ROUTE)
            if n is None:
                # head_only for HEAD too: a body after a HEAD answer desyncs a keep-alive client
                return http.response(400, b"use /bytes/N with 0 <= N <= 16777216\n", ka,
                                     head_only=head)
            return http.response(200, b"x" * n, ka, head_only=head)
        return http.response(404, b"try / or /bytes/N\n", ka, head_only=head)


TRACE_HEADER = "X-Netlab-Trace"


class _TracingParser(http.RequestParser):
    """Stamps each request with the moment it was complete: where the server's work on it
    starts (a blocking model reads it when it gets to it; an event loop, as soon as it comes)."""

    __slots__ = ()

    def feed(self, data: bytes) -> list:
        requests = super().feed(data)
        now = time.monotonic()
        for req in requests:
            req.received = now
        return requests
