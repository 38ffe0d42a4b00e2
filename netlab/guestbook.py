"""ZeroHTTPd's guestbook, the one route that talks to a real backend (Redis).

    GET  /guestbook    counts the visit (INCR) and lists the latest entries (LLEN, LRANGE)
    POST /guestbook    appends the request's body as an entry (RPUSH)
    GET  /fanout/K     K independent calls (INCR of K counters): the fan-out of a request
                       that needs several backends' answers

Sans-I/O, like ``netlab.http``: this module says *which* Redis commands a request needs and
*what* to answer once their replies are in; it never touches a socket. How a server waits for
those replies is the lesson, and each model does it its own way: a blocking model calls Redis
and waits in ``recv()`` (``BlockingBackend`` below); a readiness loop sends the commands on
its own non-blocking socket and parks the request until the loop sees the replies; asyncio
awaits ``redis.asyncio``. Every one of them answers with the same bytes, from ``answer``.

Each INCR and RPUSH is one atomic command, so N concurrent visits count N and N concurrent
POSTs store N entries, whatever the model.

The calls of one request are independent. Blocking code makes them one after another, each a
round trip (it could pipeline them, but code that reads like a sequence of calls runs as one);
an event loop sends them all and waits once; asyncio gathers them. Behind a backend d ms away,
K calls take about K·d in the first style and about d in the other two: von Behren's
"events make concurrency within a request easy", measured.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from . import http
from .servers import NetlabError

PATH = "/guestbook"
FANOUT = "/fanout/"
MAX_FANOUT = 64
ENTRIES, VISITS = "netlab:guestbook:entries", "netlab:guestbook:visits"
MAX_ENTRY = 1024            # bytes of one entry; more is 413
SHOWN = 20                  # entries a GET lists (the latest), so a page does not grow forever


def parse_address(address: str) -> tuple:
    """'HOST:PORT' -> (host, port), or NetlabError in one sentence."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise NetlabError(f"a Redis address is HOST:PORT, like 127.0.0.1:6379, not {address!r}")
    return host.strip("[]"), int(port)


def handles(path: str) -> bool:
    """Whether ``path`` (without its query) is one of the backend's routes."""
    return path == PATH or path.startswith(FANOUT)


def commands(req: http.Request) -> Union[list, bytes]:
    """The Redis commands ``req`` needs, in order, or the whole answer when it needs none (a bad
    request: 400 without a body or with a bad K, 413 over MAX_ENTRY, 405 another method)."""
    ka = req.keep_alive
    path = req.target.split("?", 1)[0]
    if path.startswith(FANOUT):
        if req.method not in ("GET", "HEAD"):
            return http.response(405, b"only GET and HEAD\n", ka, extra="Allow: GET, HEAD\r\n")
        k = http.int_at_most(path[len(FANOUT):], MAX_FANOUT)
        if not k:
            return http.response(400, b"use /fanout/K with 1 <= K <= %d\n" % MAX_FANOUT, ka,
                                 head_only=req.method == "HEAD")
        return [("INCR", f"netlab:fanout:{i}") for i in range(k)]
    if req.method in ("GET", "HEAD"):
        return [("INCR", VISITS), ("LLEN", ENTRIES), ("LRANGE", ENTRIES, -SHOWN, -1)]
    if req.method != "POST":
        return http.response(405, b"only GET, HEAD and POST\n", ka,
                             extra="Allow: GET, HEAD, POST\r\n")
    if req.body_length > MAX_ENTRY:
        return http.response(413, b"a guestbook entry is at most %d bytes\n" % MAX_ENTRY, ka)
    entry = req.body.strip()
    if not entry:
        return http.response(400, b"POST the entry as the request body\n", ka)
    return [("RPUSH", ENTRIES, entry)]


def answer(req: http.Request, replies: Sequence) -> bytes:
    """The response to ``req`` from the replies to ``commands(req)``, in the same order."""
    ka = req.keep_alive
    if req.target.startswith(FANOUT):
        return http.response(200, b"%d calls answered\n" % len(replies), ka,
                             head_only=req.method == "HEAD")
    if req.method == "POST":
        return http.response(201, b"entry %d saved\n" % int(replies[0]), ka)
    visits, total, latest = replies
    total = int(total)
    lines = [b"visitor %d; %d entr%s%s" % (int(visits), total, b"y" if total == 1 else b"ies",
                                          b", the latest:" if latest else b"")]
    lines += [b"- " + _bytes(e) for e in latest]
    return http.response(200, b"\n".join(lines) + b"\n", ka, head_only=req.method == "HEAD")


def unavailable(req: Optional[http.Request], why: str) -> bytes:
    """503 with one sentence: the backend is down; the server itself keeps serving."""
    ka = req.keep_alive if req is not None else False
    return http.response(503, f"the guestbook's Redis is unavailable: {why}\n".encode(), ka)


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class BlockingBackend:
    """The blocking models' way: a redis-py client, one socket per thread or process (its
    pool hands each thread its own connection, and after a fork the child opens new ones), and
    the request waits in ``recv()`` on it, one call after another, like the model waits for
    everything."""

    def __init__(self, address: str, timeout: float = 5.0):
        import redis            # here, before any model forks: a forking server's children
        self._redis = redis     # would each import it again, ~0.2 s of CPU per connection
        self.host, self.port = parse_address(address)
        self.timeout = timeout
        self._client = None

    def respond(self, req: http.Request) -> bytes:
        todo = commands(req)
        if isinstance(todo, bytes):
            return todo
        redis = self._redis
        try:
            if self._client is None:      # no retries: redis-py's default backs off ~4 s
                from redis.backoff import NoBackoff     # before it admits Redis is gone
                from redis.retry import Retry
                self._client = redis.Redis(self.host, self.port, socket_timeout=self.timeout,
                                           socket_connect_timeout=self.timeout,
                                           retry=Retry(NoBackoff(), 0))
            client = self._client
            return answer(req, [client.execute_command(*cmd) for cmd in todo])
        except redis.RedisError as e:
            return unavailable(req, why(e))


def why(error: Exception) -> str:
    """A backend error as one short sentence (its first line), for a 503's body."""
    text = str(error).strip().rstrip(".") or type(error).__name__
    return text.splitlines()[0][:200]
