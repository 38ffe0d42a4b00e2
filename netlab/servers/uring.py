"""io_uring: one thread submits operations (accept, recv, send) to a ring shared with the kernel
and reaps their completions: "tell me when this is done" instead of "which sockets are ready?".

A readiness loop learns that a socket is ready, then makes the recv or send call itself; here
the recv and send *are* the requests (SQEs): the kernel does each when it can and posts a
completion (CQE) with its result. With ``batch=True`` every SQE produced while handling one
batch of completions goes to the kernel in the ``io_uring_enter`` that waits for the next;
``batch=False`` makes one ``io_uring_enter`` per operation, to count the difference.
``multishot=True``: one accept SQE for every connection (Linux 5.19+). ``coop=False`` lets the
kernel interrupt the thread (an IPI) to post each completion the moment it happens, io_uring's
default; with ``coop=True`` (COOP_TASKRUN, 5.19+; ignored before) they wait for our next
``io_uring_enter``: half the system CPU per request here (benchmarks/README.md). Backend timers
are a TIMEOUT operation, the guestbook's Redis socket a POLL_ADD, closing a CLOSE: one ring.

The price of completions: the kernel writes into our buffer later, so each pending recv owns
one (RECV_SIZE per connection; the kernel's provided-buffer pools would share them), and an fd
may be closed only when no operation on it is in flight, or its number could be reused under
that operation: closing cancels them first. The ring itself is ``ring.py``.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import socket
import struct
import time

from .backend import LoopBackend
from .blocking import _FD_ERRORS, close as close_socket, warn_fd_limit
from .connection import Connection
from .eventloop import READ as POLLIN, WRITE as POLLOUT   # poll()'s bits: POLL_ADD takes them
from .forks import run_workers
from .ring import (ACCEPT, ACCEPT_MULTISHOT, ASYNC_CANCEL, CLOSE, COOP_TASKRUN, CQE_F_MORE,
                   ENTRIES, POLL_ADD, RECV, SEND, TIMEOUT, Ring, address)
from .session import Session, Timers

RECV_SIZE = 16384       # bytes one recv may deliver: a buffer per connection, in flight
SEND_MAX = 256 * 1024   # bytes handed to one send; the kernel may take fewer (then: the rest)
# A send with no room must not wait inside the kernel: after 128 wake-ups that still found no
# room (a client that half-closed and stopped reading), io_uring hands it to a kernel worker
# thread (iou-wrk-N) that sleeps in it, one per such client (measured). With MSG_DONTWAIT it
# completes at once with -EAGAIN, and a POLL_ADD on the ring waits for room instead.
SEND_FLAGS = socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT
_RETIRED = []           # closed loops' buffers (see UringLoop.close)


class Conn(Connection):
    """One connection: the shared Session driver, with recv and send as operations in flight
    (at most one of each), not calls made when the socket is ready."""
    __slots__ = ("loop", "fd", "buf", "recving", "sending", "drain")

    def __init__(self, loop, fd):
        # a bare fd, not a socket object (whose creation asks getsockname), and not
        # Connection.__init__, which makes it non-blocking: the kernel waits for it inside
        # io_uring, and some kernels answer an O_NONBLOCK recv with EAGAIN instead
        self.sock, self.session, self.timers = None, Session(loop.app), loop.timers
        self.backend, self.events, self.closed, self.drain = loop.backend, 0, False, False
        self.loop, self.fd = loop, fd
        self.buf = ctypes.create_string_buffer(RECV_SIZE)
        self.recving = self.sending = None      # the token of the op in flight, or None

    def flush(self) -> None:
        """Keep in flight what the session needs: a send while bytes are owed, a recv while it
        ``wants_read`` (none under backpressure); close once it is finished."""
        if self.closed:
            return
        s = self.session
        if s.can_produce:                       # room again: answer requests held back
            self.schedule(s.resume())
        if s.out and self.sending is None:
            chunk = bytes(s.out[:SEND_MAX])     # s.out may grow meanwhile; this may not
            self.sending = self.loop.submit(SEND, self.fd, self.sent, chunk, addr=address(chunk),
                                            length=len(chunk), op_flags=SEND_FLAGS)
        if s.finished:
            return self.close(s.drain)
        if s.wants_read and self.recving is None:
            self.recving = self.loop.submit(RECV, self.fd, self.got, self.buf,
                                            addr=address(self.buf), length=RECV_SIZE)

    def got(self, res: int, flags: int) -> None:
        """A recv completed: ``res`` bytes are in our buffer (0: EOF, < 0: -errno)."""
        self.recving = None
        if self.closed:                         # cancelled, or raced the cancel: ignored
            return self.release()
        if res < 0:                             # reset by the client
            return self.close()
        self.received(ctypes.string_at(self.buf, res))
        self.flush()

    def sent(self, res: int, flags: int) -> None:
        """A send completed: the kernel took ``res`` bytes; the rest goes in the next send."""
        self.sending = None
        if self.closed:
            return self.release()
        if res == -errno.EAGAIN:                # no room now (MSG_DONTWAIT): wait for room
            self.sending = self.loop.submit(POLL_ADD, self.fd, self.writable, op_flags=POLLOUT)
            return
        if res < 0:
            return self.close()
        del self.session.out[:res]
        self.flush()

    def writable(self, res: int, flags: int) -> None:
        """The poll for room completed: send again (or, closed meanwhile, let the fd go)."""
        self.sending = None
        if self.closed:
            return self.release()
        self.flush()

    def close(self, drain: bool = False) -> None:
        """Cancel what is in flight; the socket closes when the last completion is in."""
        if not self.closed:
            self.closed, self.drain = True, drain
            for token in (self.recving, self.sending):
                if token is not None:
                    self.loop.submit(ASYNC_CANCEL, -1, None, addr=token)
        self.release()

    def release(self) -> None:
        if self.recving is None and self.sending is None and self.fd >= 0:
            self.loop.conns.discard(self)
            if self.drain:          # read leftovers first (blocking.close): rare, done here
                close_socket(socket.socket(fileno=self.fd), True)
            else:                   # closing is one more operation on the ring
                self.loop.submit(CLOSE, self.fd, None)
            self.fd = -1


class UringLoop:
    """The completion loop: submit, wait, call each completion's callback, run timers."""

    def __init__(self, listen: socket.socket, app, batch=True, multishot=False, coop=True):
        self.listen, self.app, self.batch, self.multishot = listen, app, batch, multishot
        listen.setblocking(True)        # accept waits in the kernel (see Conn.__init__)
        try:
            self.ring = Ring(ENTRIES, COOP_TASKRUN if coop else 0)
        except OSError as e:                    # EINVAL: a kernel before 5.19
            if e.errno != errno.EINVAL or not coop:
                raise
            self.ring = Ring(ENTRIES)
        self.ops = {}                   # user_data -> (callback, buffer the kernel uses)
        self.tokens = itertools.count(1)
        self.conns = set()
        self.timers = Timers()
        self.timer_at = None            # deadline of the TIMEOUT in flight
        self.ts = ctypes.create_string_buffer(16)   # its struct __kernel_timespec
        self.backend, self.bfd, self.bmask, self.bpoll = None, -1, 0, None
        if app is not None and app.workload.redis:
            self.backend = LoopBackend(app.workload.redis, self._watch_backend, self.timers)

    def submit(self, opcode, fd, callback, buf=None, token=None, **sqe) -> int:
        """Queue one operation; ``callback(res, flags)`` runs on its completion. ``buf`` is
        kept alive until then. Returns its token (the SQE's user_data)."""
        token = token or next(self.tokens)
        self.ops[token] = (callback, buf)
        self.ring.prep(opcode, fd, token, **sqe)
        if not self.batch:
            self.ring.enter(wait=False)         # one system call for this one operation
        return token

    def run(self) -> None:
        self._accept()
        try:
            while True:
                self.turn()
        finally:
            self.close()

    def turn(self) -> None:
        """One round: submit what was prepared and wait (one system call, unless a timer is
        already due), handle the completions, run the timers that are due."""
        delay = self.timers.timeout()
        if delay != 0:
            if delay is not None:
                self._timer(delay)
            self.ring.enter(wait=True)
        elif self.ring.pending():
            self.ring.enter(wait=False)
        self.complete(self.ring.reap())
        self.timers.run_due()

    def complete(self, cqes) -> None:
        """Call each completion's callback, found by its token. A token that is not in
        ``ops`` (an operation already finished, or cancelled) is ignored."""
        for token, res, flags in cqes:
            op = self.ops.get(token) if flags & CQE_F_MORE else self.ops.pop(token, None)
            if op is not None and op[0] is not None:
                op[0](res, flags)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        if self.ring.pending():                 # CLOSEs not yet submitted
            self.ring.enter(wait=False)
        self.ring.close()                       # the kernel cancels what is in flight...
        _RETIRED.append(self.ops)   # ...after we return: keep the buffers it may still write
        for c in self.conns:
            os.close(c.fd)
        self.conns.clear()

    def _accept(self) -> None:
        self.submit(ACCEPT, self.listen.fileno(), self._accepted, op_flags=socket.SOCK_CLOEXEC,
                    ioprio=ACCEPT_MULTISHOT if self.multishot else 0)

    def _accepted(self, res: int, flags: int) -> None:
        again = not flags & CQE_F_MORE          # single-shot, or the kernel ended the multishot
        if res >= 0:
            c = Conn(self, res)
            self.conns.add(c)
            c.flush()                           # its first recv
        elif -res in _FD_ERRORS:                # out of fds: try again in 100 ms
            warn_fd_limit(OSError(-res, os.strerror(-res)))
            if again:
                self.timers.call_later(0.1, self._accept)
            return
        elif -res != errno.ECONNABORTED:
            raise OSError(-res, f"accept through io_uring: {os.strerror(-res)}")
        if again:
            self._accept()

    def _timer(self, delay: float) -> None:
        """A TIMEOUT operation completes when the next backend timer is due (ends the wait)."""
        at = time.monotonic() + delay
        if self.timer_at is not None and self.timer_at <= at:
            return                              # one in flight ends the wait soon enough
        self.timer_at = at
        struct.pack_into("qq", self.ts, 0, int(delay), int(delay % 1 * 1e9))
        self.submit(TIMEOUT, -1, lambda res, flags: self._timer_done(at), self.ts,
                    addr=address(self.ts), length=1)

    def _timer_done(self, at: float) -> None:
        self.timer_at = None if self.timer_at == at else self.timer_at

    def _watch_backend(self, fd: int, read: bool, write: bool) -> None:
        """The backend's interest: a POLL_ADD in flight for it, re-armed on each completion.
        A poll that does not cover the new interest (or any, once it closes) is cancelled."""
        self.bfd, self.bmask = fd, (POLLIN if read else 0) | (POLLOUT if write else 0)
        if self.bpoll is not None and (not self.bmask or self.bmask & ~self.bpoll[1]):
            self.submit(ASYNC_CANCEL, -1, None, addr=self.bpoll[0])
            self.bpoll = None
        self._poll_backend()

    def _poll_backend(self) -> None:
        if self.bmask and self.bpoll is None:
            token = next(self.tokens)
            self.bpoll = (token, self.bmask)
            self.submit(POLL_ADD, self.bfd, lambda res, flags: self._backend_polled(token),
                        token=token, op_flags=self.bmask)

    def _backend_polled(self, token: int) -> None:
        if self.bpoll is None or self.bpoll[0] != token:
            return                              # a poll we cancelled (the fd may be reused)
        self.bpoll = None
        self.backend.ready()                    # reads, sends; may change the interest
        self._poll_backend()


def serve(listen, app, workers=1, batch=True, multishot=False, coop=True):
    run_workers(workers, lambda: UringLoop(listen, app, batch, multishot, coop).run())
