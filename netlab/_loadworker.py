"""One load-generator process: a single-threaded event loop driving its share of the clients.

netlab.load starts it as ``python -I -S _loadworker.py``; it imports only the standard library,
so it starts in ~50 ms. It talks over its pipes. In: the spec (one JSON line), then ``go``;
the end of stdin means "stop now" (so a dead caller never leaves it running). Out: ``ready N``
(N idle connections made), ``p OK ERRORS`` each second, then ``done JSON`` followed by the
latencies (float32 microseconds); then it holds its idle connections until stdin closes.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import json
import os
import resource
import select
import selectors
import socket
import sys
import time
from _socket import socket as Socket     # socket.socket without its Python-level wrapper
from array import array

SLOW_PIECES = 4         # a slow client sends each request in this many pieces,
SLOW_PAUSE_S = 0.05     # this far apart: a blocking server is held ~150 ms per slow request
BACKOFF_S = 0.01        # pause after a failed connect, so a dead server does not spin a core
BUF = 65536
MAX_HEAD = 65536
KINDS = ("refused", "reset", "timeout", "bad_status", "short_read", "other")
IN, OUT = 1, 4          # epoll's event bits (the selectors fallback maps to them)
WAIT, CONNECTING, SENDING, READING, DONE = range(5)     # what a client is doing
HEAD, LENGTH, CHUNKED, TO_EOF = range(4)                # which part of the response it reads
NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
STREAM, EINPROGRESS = socket.SOCK_STREAM | NONBLOCK, errno.EINPROGRESS
BIND_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24 if sys.platform == "linux" else 0)


def kind_of(code: int) -> str:
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "reset"
    return "timeout" if code == errno.ETIMEDOUT else "other"


class Client:
    """One simulated user: its connection and where it is in its current request."""
    __slots__ = ("slow", "src", "sock", "fd", "ev", "state", "t0", "gen", "reused", "piece",
                 "out", "mode", "buf", "need", "status", "close", "body")

    def __init__(self, slow: bool, src):
        self.slow, self.src, self.sock, self.fd, self.ev = slow, src, None, -1, 0
        self.state, self.t0, self.gen, self.reused, self.piece = WAIT, 0.0, 0, False, 0
        self.out, self.mode, self.buf, self.need, self.status = b"", HEAD, b"", 0, b""
        self.close, self.body = False, None


def feed(c: Client, data: bytes) -> bool:
    """Take received bytes of c's response; True once it is complete. Raises ValueError if it
    is not HTTP/1.x. Reads Content-Length bodies, chunked ones, and bodies that end at close."""
    if c.mode != HEAD:
        if c.mode == LENGTH:
            c.need -= len(data)
            return c.need <= 0
        if c.mode == CHUNKED:
            c.body += data
            return chunks_done(c)
        return False                            # TO_EOF: complete when the server closes
    if c.buf:
        data = c.buf + data
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise ValueError("response head too long")
        c.buf = data
        return False
    c.buf = b""
    head = data[:end]
    parsed = HEADS.get(head)    # a server repeats its head (until the Date changes): parse once
    if parsed is None:
        if len(HEADS) > 64:
            HEADS.clear()
        parsed = HEADS[head] = parse_head(head)
    c.status, c.close, c.mode, need = parsed
    if c.mode == LENGTH:
        c.need = need = need - (len(data) - end - 4)
        return need <= 0
    if c.mode == CHUNKED:
        c.body = bytearray(data[end + 4:])
        return chunks_done(c)
    return False


HEADS: dict = {}


def parse_head(head: bytes) -> tuple:
    """(status, close after it?, body mode, Content-Length) of a response head."""
    h = head.lower() + b"\r\n"
    if h[:7] != b"http/1.":
        raise ValueError("not an HTTP/1 response")
    status = h[9:12]
    i = h.find(b"\r\nconnection:")
    close = b"close" in h[i:h.find(b"\r", i + 2)] if i >= 0 else h[7:8] == b"0"
    i = h.find(b"\r\ncontent-length:")
    if i >= 0:
        return status, close, LENGTH, int(h[i + 17:h.find(b"\r", i + 17)])
    if b"\r\ntransfer-encoding:" in h and b"chunked" in h:
        return status, close, CHUNKED, 0
    if status[:1] == b"1" or status in (b"204", b"304"):
        return status, close, LENGTH, 0
    return status, True, TO_EOF, 0


def chunks_done(c: Client) -> bool:
    """Skip the complete chunks in c.body; True when the last (empty) chunk has arrived."""
    b, pos = c.body, 0
    while True:
        j = b.find(b"\r\n", pos)
        if j < 0:
            break
        size = int(bytes(b[pos:j]).split(b";", 1)[0], 16)
        if size == 0:
            if b.find(b"\r\n\r\n", j) >= 0:     # after the trailers, if any
                return True
            break
        if len(b) < j + size + 4:
            break
        pos = j + size + 4
    del b[:pos]
    return False


class Selector:
    """selectors.DefaultSelector shaped like epoll, for systems without it (macOS: kqueue)."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()

    def register(self, fd, ev):
        self.sel.register(fd, (ev & IN and 1) | (ev & OUT and 2))

    def modify(self, fd, ev):
        self.sel.modify(fd, (ev & IN and 1) | (ev & OUT and 2))

    def unregister(self, fd):
        self.sel.unregister(fd)

    def poll(self, timeout):
        return [(k.fd, (m & 1 and IN) | (m & 2 and OUT)) for k, m in self.sel.select(timeout)]

    def close(self):
        self.sel.close()


def new_poller():
    return select.epoll() if hasattr(select, "epoll") else Selector()


def new_socket(family: int, src):
    s = Socket(family, STREAM)
    if not NONBLOCK:
        s.setblocking(False)
    if src:
        if BIND_NO_PORT and family == socket.AF_INET:   # share ports across source addresses
            s.setsockopt(socket.IPPROTO_IP, BIND_NO_PORT, 1)
        s.bind((src, 0))
    return s


class Worker:
    def __init__(self, spec: dict):
        self.addr = (spec["host"], spec["port"])
        self.family = socket.AF_INET6 if ":" in spec["host"] else socket.AF_INET
        self.req = req = spec["request"].encode("latin-1")
        step = -(-len(req) // SLOW_PIECES)
        self.pieces = [req[i:i + step] for i in range(0, len(req), step)]
        self.keepalive, self.timeout = spec["keepalive"], spec["timeout"]
        self.think, self.quota = spec["think_s"], spec["quota"]
        self.expect = b"%d" % spec["expect"]
        self.small = len(req) <= 1024
        self.clients = [Client(bool(slow), src) for slow, src in spec["clients"]]
        self.ep = new_poller()
        self.epoll = hasattr(select, "epoll")    # epoll forgets a closed fd by itself
        self.by_fd = {0: None}                   # stdin: the caller went away
        self.timers, self.seq = [], itertools.count()
        self.ok = self.done = self.issued = 0
        self.errors = dict.fromkeys(KINDS, 0)
        self.lat = array("f")

    # -- one request ------------------------------------------------------------------------
    def start(self, c: Client, now: float) -> None:
        """Begin c's next request: connect if it has no open connection, then send."""
        if self.quota is not None and self.issued >= self.quota:
            c.state = DONE
            return
        self.issued += 1
        c.t0, c.mode, c.buf, c.piece = time.perf_counter(), HEAD, b"", 0
        if c.sock is None and not self.connect(c, now):
            return
        c.out = self.pieces[0] if c.slow else self.req
        self.send(c, now)

    def connect(self, c: Client, now: float) -> bool:
        s = None
        try:
            if NONBLOCK and not c.src and not c.slow:     # the common case, without a call
                s = Socket(self.family, STREAM)
            else:
                s = new_socket(self.family, c.src)
                if c.slow:  # pieces go out as written, not merged while one is unacknowledged
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = s.connect_ex(self.addr)
        except OSError as e:                    # out of fds, a bad source address...
            code = e.errno
        if code and code != EINPROGRESS:
            if s is not None:
                s.close()
            self.fail(c, kind_of(code), now)
            return False
        c.sock, c.fd, c.ev, c.reused = s, s.fileno(), 0, False
        self.by_fd[c.fd] = c
        return True

    def send(self, c: Client, now: float) -> None:
        """Send (the rest of) the current piece, then wait for the next piece or the answer.
        Loopback connects usually complete at once, so we send without waiting to be told."""
        if self.keepalive and c.piece == 0:
            c.t0 = time.perf_counter()          # keep-alive latency: from the send
        try:
            n = c.sock.send(c.out)
        except BlockingIOError:                 # still connecting: wait until writable
            c.state = CONNECTING
            return self.watch(c, OUT)
        except OSError as e:
            return self.fail(c, kind_of(e.errno), now)
        if n < len(c.out):
            c.out, c.state = c.out[n:], CONNECTING
            return self.watch(c, OUT)
        c.piece += 1
        if c.slow and c.piece < len(self.pieces):
            c.out, c.state = self.pieces[c.piece], SENDING
            return self.timer(c, now + SLOW_PAUSE_S)
        c.state = READING
        if not c.ev:                            # a new connection
            self.ep.register(c.fd, IN)
            c.ev = IN
        elif c.ev != IN:
            self.watch(c, IN)

    def finish(self, c: Client) -> None:
        """A complete response: count it, then on to the next request."""
        t = time.perf_counter()
        if c.status == self.expect:
            self.ok += 1
            self.lat.append((t - c.t0) * 1e6)
        else:
            self.errors["bad_status"] += 1
        self.done += 1
        if c.close or not self.keepalive:
            if not self.epoll:
                self.ep.unregister(c.fd)
            del self.by_fd[c.fd]
            c.sock.close()                      # epoll forgets a closed fd by itself
            c.sock, c.ev = None, 0
        else:
            c.reused = True
        if self.think:
            c.state = WAIT
            self.timer(c, t + self.think)
        elif c.sock is not None and self.small and not c.slow and \
                (self.quota is None or self.issued < self.quota):
            # the next request on this kept-alive connection, inline: at high rates this is
            # most of the work. A small request on an idle connection is never sent in part.
            self.issued += 1
            c.mode, c.t0 = HEAD, time.perf_counter()
            try:
                c.sock.send(self.req)
            except OSError as e:
                kind = kind_of(e.errno)
                (self.closed if kind == "reset" else self.fail)(c, kind, c.t0)
        else:
            self.start(c, t)

    def fail(self, c: Client, kind: str, now: float) -> None:
        self.errors[kind] += 1
        self.done += 1
        self.drop(c)
        c.state = WAIT          # the next request starts from the loop, never recursively
        self.timer(c, now + (BACKOFF_S if kind in ("refused", "other") else self.think))

    def closed(self, c: Client, kind: str, now: float) -> None:
        """The server closed (kind "short_read") or reset ("reset") c's connection."""
        if c.state == READING and c.mode == TO_EOF and kind == "short_read":
            return self.finish(c)
        if c.state in (WAIT, DONE):             # a kept-alive connection closed between requests
            return self.drop(c)
        if c.reused and c.mode == HEAD and not c.buf:
            # it closed a kept-alive connection as we reused it: reconnect and resend, as
            # browsers do; not an error
            self.drop(c)
            c.piece = 0
            if self.connect(c, now):
                c.out = self.pieces[0] if c.slow else self.req
                self.send(c, now)
            return
        self.fail(c, kind, now)

    # -- bookkeeping --------------------------------------------------------------------------
    def watch(self, c: Client, mask: int) -> None:
        if c.ev != mask:
            (self.ep.modify if c.ev else self.ep.register)(c.fd, mask)
            c.ev = mask

    def drop(self, c: Client) -> None:
        if c.sock is not None:
            if c.ev and not self.epoll:
                self.ep.unregister(c.fd)
            del self.by_fd[c.fd]
            c.sock.close()
            c.sock, c.ev = None, 0

    def timer(self, c: Client, due: float) -> None:
        c.gen += 1
        heapq.heappush(self.timers, (due, next(self.seq), c, c.gen))

    def expire(self, now: float) -> None:
        """Fail every request older than the timeout (scanned a few times per timeout)."""
        limit = now - self.timeout
        for c in self.clients:
            if CONNECTING <= c.state <= READING and c.t0 < limit:
                self.fail(c, "timeout", now)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, t0: float, end: float) -> str:
        """Drive every client until ``end`` (or the quota is done); returns why it stopped."""
        perf, poll, by_fd, timers = time.perf_counter, self.ep.poll, self.by_fd, self.timers
        self.ep.register(0, IN)
        scan = min(0.1, self.timeout / 5)
        next_sec, next_scan, last = t0 + 1, t0 + scan, 0
        self.timeline = []
        for c in self.clients:
            self.start(c, t0)
        while True:
            now = perf()
            if now >= next_sec:                 # one more whole second: its count, and progress
                self.timeline.append(self.ok - last)
                last, next_sec = self.ok, next_sec + 1
                os.write(1, b"p %d %d\n" % (self.ok, self.done - self.ok))
            self.elapsed = now - t0             # what the timeline covers
            if self.quota is not None and self.done >= self.quota:
                return "count"
            if now >= end:
                return "duration" if self.quota is None else "deadline"
            if now >= next_scan:
                self.expire(now)
                next_scan = now + scan
            while timers and timers[0][0] <= now:
                _, _, c, gen = heapq.heappop(timers)
                if c.gen == gen:
                    (self.send if c.state == SENDING else self.start)(c, now)
            wait = min(next_sec, next_scan, end, timers[0][0] if timers else end) - now
            for fd, ev in poll(wait if wait > 0 else 0):
                c = by_fd.get(fd)
                if c is None:
                    if fd == 0:
                        sys.exit(3)             # stdin ended: the caller is gone
                    continue
                if c.state == CONNECTING:
                    self.send(c, now)
                    continue
                try:
                    data = c.sock.recv(BUF)
                except BlockingIOError:
                    continue
                except OSError as e:
                    kind = kind_of(e.errno)
                    self.closed(c, kind, now) if kind == "reset" else self.fail(c, kind, now)
                    continue
                if not data:
                    self.closed(c, "short_read", now)
                elif c.state != READING:        # bytes nobody asked for
                    self.drop(c) if c.state in (WAIT, DONE) else self.fail(c, "other", now)
                else:
                    try:
                        if feed(c, data):
                            self.finish(c)
                    except ValueError:
                        self.fail(c, "other", now)


def open_idle(family: int, addr, sources, wait_s: float) -> list:
    """Open the idle connections (they never send anything); keep those that connect."""
    ep, pending, held = new_poller(), {}, []
    ep.register(0, IN)          # stdin ends: the caller is gone
    for src in sources:
        try:
            s = new_socket(family, src)
            code = s.connect_ex(addr)
        except OSError:
            continue
        if code in (0, errno.EINPROGRESS):
            pending[s.fileno()] = s
            ep.register(s.fileno(), OUT)
        else:
            s.close()
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        for fd, _ in ep.poll(max(0.0, deadline - time.monotonic())):
            if fd == 0:
                sys.exit(3)
            s = pending.pop(fd)
            ep.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                held.append(s)
            else:
                s.close()
    for s in pending.values():
        s.close()
    ep.close()
    return held


def write_all(data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def main() -> None:
    spec = json.loads(sys.stdin.buffer.readline())
    if spec.get("die_with_parent") and sys.platform == "linux":
        import ctypes           # PR_SET_PDEATHSIG: SIGKILL us if the caller dies
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
        if os.getppid() != spec["parent"]:
            sys.exit(3)
    if spec["cpus"]:
        os.sched_setaffinity(0, spec["cpus"])
    w = Worker(spec)
    idle = open_idle(w.family, w.addr, spec["idle"], spec["timeout"])
    write_all(b"ready %d\n" % len(idle))
    if sys.stdin.buffer.readline().strip() != b"go":
        sys.exit(3)
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    stopped = w.run(t0, t0 + spec["seconds"])
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    for c in w.clients:
        w.drop(c)
    result = dict(ok=w.ok, errors=w.errors, issued=w.issued, elapsed=w.elapsed, stopped_by=stopped,
                  timeline=w.timeline, idle_connected=len(idle), nlat=len(w.lat),
                  cpu=ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime)
    write_all(b"done " + json.dumps(result).encode() + b"\n" + w.lat.tobytes())
    while os.read(0, 4096):     # hold the idle connections until the caller lets go
        pass


if __name__ == "__main__":
    main()
