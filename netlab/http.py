"""The one protocol every server model speaks: a small HTTP/1.1 subset.

Sans-I/O: the parser is fed bytes and returns requests; it never touches a socket. That is what
lets a blocking thread, a select() loop and an asyncio coroutine share it, so a difference in a
measurement is a difference in the server model and never in the protocol code.

The subset: HTTP/1.0 and 1.1 requests, keep-alive, pipelining, and bodies framed only by
Content-Length: a body up to 64 KiB is kept (``Request.body``) and the request is complete when
it has arrived; a larger one is skipped as it comes, after the request is answered. Its two
framing rules are named functions, as in h11, so each is found (and reused, by a route that
reads a body) in one place: ``body_length`` (how many body bytes follow
a head) and ``wants_keep_alive`` (whether the connection stays open after the answer).
Bad input is answered, never crashed on: 400 malformed, 413 body too large, 431 head over
8 KiB, 501 Transfer-Encoding, 505 other HTTP versions. Routes live in ``workload.App``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

MAX_HEAD = 8 * 1024          # request line + headers; more is 431 (nginx's default is 1-8 KiB)
MAX_BODY = 1024 * 1024       # a GET may carry a body; we read and discard up to this much
KEEP_BODY = 64 * 1024        # a body up to this size is kept (req.body) for a route to read
MAX_BYTES_ROUTE = 16 * 1024 * 1024   # /bytes/N cap, so one request cannot exhaust memory

HELLO = b"Hello from netlab!\n"

REASONS = {
    200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    413: "Content Too Large", 431: "Request Header Fields Too Large",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}

_TOKEN_CHARS = (b"!#$%&'*+-.^_`|~0123456789"
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class Request:
    """One parsed request. ``error`` is set (to a status) when the input was bad."""
    method: str = ""
    target: str = ""
    version: str = "HTTP/1.1"
    headers: dict = field(default_factory=dict)   # lower-case names
    keep_alive: bool = True
    error: int = 0
    detail: str = ""
    received: float = 0.0     # when the parser completed it (time.monotonic), if traced
    body: bytes = b""         # the body, when it was at most KEEP_BODY (else b"", discarded)
    body_length: int = 0      # what Content-Length said


def _bad(status: int, detail: str) -> Request:
    return Request(keep_alive=False, error=status, detail=detail)


class RequestParser:
    """Incremental parser: ``feed(bytes)`` returns the requests completed so far, in order.

    After a bad request it returns one Request with ``error`` set and then ignores all further
    input: the connection is answered and closed, because we no longer know where the next
    request would start.
    """

    __slots__ = ("_buf", "_body_left", "_waiting", "failed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._body_left = 0      # bytes of a request body still to discard
        self._waiting = None     # a request whose (kept) body is still arriving
        self.failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete request (a stalled client's bytes)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list:
        if self.failed:
            return []
        buf = self._buf
        if not buf and not self._body_left and self._waiting is None:
            # fast path, the common case: one whole plain request, nothing buffered (anything
            # else, or anything it does not match, takes the general path below)
            req = _plain(data)
            if req is not None:
                return [req]
        buf += data
        out = []
        while buf:
            if self._waiting is not None:
                # a small body is kept for the route (POST /guestbook): the request is complete
                # once all of it is here; until then its bytes are buffered, at most KEEP_BODY
                req = self._waiting
                if len(buf) < req.body_length:
                    break
                req.body = bytes(buf[:req.body_length])
                del buf[:req.body_length]
                self._waiting = None
                out.append(req)
                continue
            if self._body_left:
                n = min(self._body_left, len(buf))
                del buf[:n]
                self._body_left -= n
                continue
            if buf[0] in b"\r\n":
                # RFC 9112 2.2: ignore empty lines before a request line (a stray CRLF after a
                # body, or Enter pressed first in nc) rather than answer 400
                del buf[:len(buf) - len(buf.lstrip(b"\r\n"))]
                continue
            end, sep = _head_end(buf)
            if end < 0:
                # up to 3 bytes may be the start of the blank line ("\r\n\r"): without this
                # slack a head of exactly MAX_HEAD is accepted or refused depending on chunking
                if len(buf) > MAX_HEAD + 3:
                    out.append(self._fail(_bad(431, "request head larger than 8 KiB")))
                break
            if end > MAX_HEAD:
                out.append(self._fail(_bad(431, "request head larger than 8 KiB")))
                break
            head = bytes(buf[:end])
            del buf[:end + sep]
            req = parse_head(head)
            if req.error:
                out.append(self._fail(req))
                break
            n, bad = body_length(req.headers)
            if bad:
                out.append(self._fail(bad))
                break
            req.body_length = n
            if 0 < n <= KEEP_BODY:
                self._waiting = req
                continue
            self._body_left = n          # larger: answered now, the body skipped as it comes
            out.append(req)
        return out

    def _fail(self, req: Request) -> Request:
        self.failed = True
        self._waiting = None
        self._buf.clear()
        return req


# One whole request as well-formed clients send it (load generators, browsers, curl): a token
# method, a printable target, HTTP/1.x, CRLF endings, "name: value" fields of printable ASCII,
# no body. One regex match in C checks all of that, where the general path takes a dozen Python
# steps per line; it saved ~10% of the epoll model's CPU per request (benchmarks/README.md). It
# must answer exactly as the general path would: a test feeds both the same inputs.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_PLAIN = re.compile(rf"({_TOKEN}) ([!-~]+) (HTTP/1\.[01])\r\n((?:{_TOKEN}:[\t -~]*\r\n)*)\r\n")


def _plain(data: bytes) -> Optional[Request]:
    """The fast path: ``data`` parsed if it is exactly one plain request (see _PLAIN), else
    None (then the general path decides, whatever ``data`` is)."""
    m = _PLAIN.fullmatch(data.decode("latin-1")) if len(data) <= MAX_HEAD + 4 else None
    if m is None:
        return None
    method, target, version, block = m.groups()
    headers = {}
    for line in block.split("\r\n")[:-1]:          # each one "token:printable" (_PLAIN)
        name, _, value = line.partition(":")
        name = name.lower()
        if name in headers or name == "content-length" or name == "transfer-encoding":
            return None                             # to combine, or a body to frame
        headers[name] = value.strip(" \t")
    return Request(method, target, version, headers,
                   wants_keep_alive(version, headers.get("connection")))


def _head_end(buf: bytearray) -> tuple:
    """Where the head ends (index of the blank line) and the separator's length, or (-1, 0).

    HTTP says CRLF, but a student typing into ``nc`` sends bare LF; we accept both, and mixed
    endings. The blank line is the first LF followed by LF or CRLF; preferring one kind of ending
    over an earlier one split "A\n\r\nB\r\n\r\n" differently when fed whole than in pieces.
    """
    lf = buf.find(b"\n\n")
    i = buf.find(b"\n\r\n", 0, lf + 2 if lf >= 0 else len(buf))    # one starting before lf
    i, sep = (i, 3) if i >= 0 else (lf, 2)
    if i < 0:
        return -1, 0
    if i and buf[i - 1] == 13:       # the CR of the last header line's CRLF
        return i - 1, sep + 1
    return i, sep


def parse_head(head: bytes) -> Request:
    """Parse a request line and headers (no trailing blank line).

    Written for speed as much as clarity: every request of every model passes through here,
    and the event-loop models are meant to stand comparison with nginx. Token checks use
    ``bytes.translate`` (delete the valid characters; anything left is invalid) in C.
    """
    lines = head.split(b"\n")
    parts = lines[0].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return _bad(400, "malformed request line")
    method, target, version = parts
    if method.translate(None, _TOKEN_CHARS):
        return _bad(400, "malformed method")
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        if not version.startswith(b"HTTP/"):
            return _bad(400, "malformed HTTP version")
        return _bad(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TOKEN_CHARS):
            return _bad(400, "malformed header line")
        key, value = name.lower().decode("ascii"), value.strip().decode("latin-1")
        # a repeated field combines (RFC 9110 5.3); last-wins would let "Content-Length: 0" then
        # "Content-Length: 5" frame the body differently from a proxy that takes the first
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "transfer-encoding" in headers:
        return _bad(501, "Transfer-Encoding is not supported")
    if not target.isascii():
        return _bad(400, "non-ASCII request target")
    version = version.decode("ascii")
    return Request(method.decode("ascii"), target.decode("ascii"), version, headers,
                   wants_keep_alive(version, headers.get("connection")))


def wants_keep_alive(version: str, connection: Optional[str]) -> bool:
    """Whether the connection stays open after this request's answer (RFC 9112 9.3).

    HTTP/1.1 stays open unless the client says ``close``; HTTP/1.0 closes unless it says
    ``keep-alive`` (``ab -k`` does). ``connection`` is the Connection header's value, or None.
    """
    if connection is None:
        return version == "HTTP/1.1"
    tokens = {t.strip() for t in connection.lower().split(",")}
    if version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


def body_length(headers: dict) -> tuple:
    """How many body bytes follow this head: ``(n, None)``, or ``(0, error Request)``.

    Only Content-Length frames a body here (parse_head refuses Transfer-Encoding). Anything but
    plain ASCII digits is 400, though ``int()`` would take "+5", "1_0" or "٣": a proxy that
    framed the body differently would see a different next request. Over MAX_BODY is 413.
    """
    value = headers.get("content-length")
    if value is None:
        return 0, None
    n = int_at_most(value, MAX_BODY)
    if n is not None:
        return n, None
    if value.isascii() and value.isdigit():
        return 0, _bad(413, "request body larger than 1 MiB")
    return 0, _bad(400, "bad Content-Length")


def int_at_most(digits: str, limit: int) -> Optional[int]:
    """The value of a string of ASCII digits if it is at most ``limit``, else None.

    The guard is the length check: ``int()`` raises on more than 4300 digits (CPython's defence
    against slow conversion), so "Content-Length: 999...9" would crash a parser that must never
    raise. Leading zeros are dropped first, so "0...03" is still 3 however long it is. Shared
    by body_length and the ``/bytes/N`` route, which take numbers from a client.
    """
    if not (digits.isascii() and digits.isdigit()):
        return None
    significant = digits.lstrip("0")
    if len(significant) > len(str(limit)):
        return None
    n = int(significant or "0")
    return n if n <= limit else None


def response(status: int, body: bytes = b"", keep_alive: bool = True, head_only: bool = False,
             extra: str = "") -> bytes:
    """Build the bytes of one response."""
    conn = "keep-alive" if keep_alive else "close"
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: {conn}\r\n\r\n").encode("ascii")
    return head if head_only else head + body


def error_response(req: Request) -> bytes:
    """The answer to a request the parser rejected: the status, a one-line reason, close."""
    return response(req.error, (req.detail + "\n").encode(), keep_alive=False)
