"""Redis on the event loop's own wait: how a readiness loop talks to a backend without blocking.

A blocking model calls Redis and sleeps in ``recv()``; a readiness loop cannot, or every other
connection would wait too. So the loop keeps one non-blocking socket to Redis in the same
select/poll/epoll set as its clients: a request that needs Redis sends its commands, parks
(its session is *waiting*, a state, not a call on the stack), and the loop goes back to its
wait. When that wait says the Redis socket is readable, the replies are parsed and the parked
requests are answered, in order. This is von Behren's "stack ripping": the code after the
call becomes a callback.

The wire format is RESP; ``hiredis`` packs commands and parses replies, sans-I/O (bytes in,
replies out), so this file only moves bytes. Redis answers one connection's commands in the
order they were sent, so a FIFO of callbacks pairs replies with requests.
"""

from __future__ import annotations

import errno
import socket
from collections import deque

import hiredis

from ..guestbook import parse_address

TIMEOUT = 5.0          # seconds a call may wait for its replies before its request gets 503


class LoopBackend:
    """One non-blocking Redis connection, driven by the loop that owns it.

    The loop provides ``watch(fd, read, write)`` (register or change interest; read=write=False:
    unregister) and ``timers`` (``call_later``); it calls ``ready()`` when the socket is ready.
    ``call(commands, done)`` sends; ``done(replies)`` or ``done(error sentence)`` runs from the
    loop once the replies (or a failure) are in. A lost connection fails what was waiting, and
    the next call connects again.
    """

    def __init__(self, address: str, watch, timers):
        self.address = parse_address(address)
        self._watch, self._timers = watch, timers
        self.sock = None
        self.fd = -1
        self._out = bytearray()
        self._waiting = deque()       # [replies still expected, replies so far, done, seq]
        self._reader = None
        self._seq = 0
        self._connecting = False
        self._interest = None         # (read, write) last told to the loop

    # --- what a request does ------------------------------------------------------------------
    def call(self, commands, done) -> None:
        """Send ``commands`` (tuples like ("INCR", key)); ``done`` gets their replies, a list,
        or a sentence saying why there are none."""
        if self.sock is None:
            try:
                self._connect()
            except OSError as e:
                done(f"cannot connect to {self._where()}: {e.strerror or e}")
                return
        for cmd in commands:
            self._out += hiredis.pack_command(cmd)
        self._seq += 1
        self._waiting.append([len(commands), [], done, self._seq])
        self._timers.call_later(TIMEOUT, self._expire, self._seq)
        if not self._connecting:
            self._flush()

    # --- what the loop does -------------------------------------------------------------------
    def ready(self) -> None:
        """The loop's wait said our socket is ready: finish connecting, read, send."""
        if self.sock is None:
            return
        if self._connecting:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == errno.EINPROGRESS:
                return
            if err:
                return self._lost(f"cannot connect to {self._where()}: "
                                  f"{errno.errorcode.get(err, err)}")
            self._connecting = False
        while True:                      # until EAGAIN: right for edge- and level-triggered
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:
                return self._lost(f"the connection to {self._where()} failed: {e.strerror or e}")
            if not data:
                return self._lost(f"{self._where()} closed the connection")
            self._reader.feed(data)
            while True:
                reply = self._reader.gets()
                if reply is False:
                    break
                self._deliver(reply)
                if self.sock is None:    # a reply nobody asked for: the connection is gone
                    return
        self._flush()

    def close(self) -> None:
        if self.sock is not None:
            self._watch(self.fd, False, False)
            self._interest = None
            self.sock.close()
            self.sock, self.fd = None, -1

    # --- the steps ----------------------------------------------------------------------------
    def _connect(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, errno.errorcode.get(err, str(err)))
        self.sock, self.fd, self._connecting = sock, sock.fileno(), err != 0
        self._reader = hiredis.Reader()
        self._interest = None
        self._want(True, self._connecting)              # writable = connected

    def _flush(self) -> None:
        while self._out:
            try:
                n = self.sock.send(self._out)
            except BlockingIOError:
                break
            except OSError as e:
                return self._lost(f"the connection to {self._where()} failed: {e.strerror or e}")
            del self._out[:n]
        self._want(True, bool(self._out))

    def _want(self, read: bool, write: bool) -> None:
        """Tell the loop what to watch, only when it changed: each change is a system call."""
        if (read, write) != self._interest:
            self._interest = (read, write)
            self._watch(self.fd, read, write)

    def _deliver(self, reply) -> None:
        if not self._waiting:
            return self._lost(f"{self._where()} sent a reply nobody asked for")
        head = self._waiting[0]
        head[0] -= 1
        head[1].append(reply)
        if head[0] == 0:
            self._waiting.popleft()
            errors = [r for r in head[1] if isinstance(r, hiredis.ReplyError)]
            head[2](f"Redis said: {errors[0]}" if errors else head[1])

    def _expire(self, seq: int) -> None:
        if self._waiting and self._waiting[0][3] <= seq:
            self._lost(f"{self._where()} did not answer within {TIMEOUT:g} s")

    def _lost(self, why: str) -> None:
        """Fail every waiting call with ``why``, close; the next call connects again."""
        self.close()
        self._out.clear()
        self._connecting = False
        waiting, self._waiting = self._waiting, deque()
        for _, _, done, _ in waiting:
            done(why)

    def _where(self) -> str:
        return f"Redis at {self.address[0]}:{self.address[1]}"
