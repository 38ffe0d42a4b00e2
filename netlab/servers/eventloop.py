"""The readiness loop shared by the ``select``, ``poll`` and ``epoll`` models.

Those three differ in one thing only: how they ask the kernel which sockets are ready. So they
override four methods (``register``, ``modify``, ``unregister``, ``wait``) and this class does
the rest: accept, find each ready fd's connection, let its driver (``connection.py``, shared with
the reactor) read, answer and write, and run backend timers. One thread, no blocking call except
the wait itself.
"""

from __future__ import annotations

import logging
import socket

from .backend import LoopBackend
from .blocking import accept_waiting
from .connection import Connection
from .session import Timers

log = logging.getLogger("netlab.server")

# Event bits: poll()'s values, which epoll shares (EPOLLIN == POLLIN == 1, ...), so the kernel's
# answer needs no translation; select() builds the same bits itself.
READ, WRITE, ERROR, HANGUP, INVALID = 1, 4, 8, 16, 32
GONE = ERROR | HANGUP | INVALID


class Conn(Connection):
    """One connection of the loop: the shared driver, kept in ``loop.conns`` by its fd."""
    __slots__ = ("loop", "fd", "more")
    READ, WRITE = READ, WRITE       # poll()'s bits, not selectors'

    def __init__(self, loop, sock):
        super().__init__(sock, loop.app, loop.timers, loop.backend)
        self.loop, self.fd = loop, sock.fileno()
        self.more = False        # edge-triggered: bytes may be unread with no event to come

    def want(self, events):
        self.loop.modify(self.fd, events)

    def forget(self):
        del self.loop.conns[self.fd]
        self.loop.unregister(self.fd)


class EdgeConn(Conn):
    """Edge-triggered: registered once for READ|WRITE; the driver writes until EAGAIN."""
    __slots__ = ()
    edge = True

    def backend_done(self, replies=None):
        # not just a flush: sending may make room to read what backpressure left unread
        if not self.closed:
            self.schedule(self.session.backend_done(replies))
            self.loop._service_edge(self)


class EventLoop:
    """A readiness loop: wait, then dispatch each ready fd to its connection's driver.

    A subclass supplies the mechanism (``register``, ``modify``, ``unregister``, ``wait``);
    what a connection does when ready is ``Connection``'s, shared with the reactor model.
    """
    edge = False            # edge-triggered: interest registered once, read/write until EAGAIN
    fd_limit = None         # select() cannot watch fds >= FD_SETSIZE

    def __init__(self, listen: socket.socket, app):
        self.listen, self.app = listen, app
        self.lfd = listen.fileno()
        listen.setblocking(False)
        self.conns = {}
        self.timers = Timers()
        # the guestbook's Redis, on this loop's own wait (backend.py); bfd is its fd, or -1
        self.backend, self.bfd = None, -1
        redis = app.workload.redis if app is not None else None     # None: unit tests' loops
        if redis:
            self.backend = LoopBackend(redis, self._watch_backend, self.timers)

    # --- the four methods a mechanism provides -------------------------------------------
    def register(self, fd: int, events: int) -> None:
        """Start watching ``fd`` for ``events`` (READ|WRITE bits)."""
        raise NotImplementedError

    def modify(self, fd: int, events: int) -> None:
        """Change what ``fd`` is watched for."""
        raise NotImplementedError

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``."""
        raise NotImplementedError

    def wait(self, timeout):
        """Block until some fd is ready or ``timeout`` s pass (None: no limit); return a list
        of (fd, READ|WRITE|GONE bits)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every connection (the loop has ended)."""
        for c in list(self.conns.values()):
            c.sock.close()
        self.conns.clear()

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        """Serve forever: wait, dispatch by fd, run the timers that are due."""
        self.register(self.lfd, READ)
        try:
            while True:
                for fd, mask in self.wait(self.timers.timeout()):
                    if fd == self.lfd:
                        self._accept()
                        continue
                    if fd == self.bfd:              # Redis replied (or can take more)
                        self.backend.ready()
                        continue
                    c = self.conns.get(fd)
                    if c is None:
                        continue
                    if not mask & READ and mask & GONE:    # gone, nothing left to read
                        c.close()
                    elif self.edge:
                        self._service_edge(c)
                    else:
                        if mask & READ:             # data, EOF, or a reset to discover
                            c.on_readable()
                        if mask & WRITE and not c.closed:
                            c.flush()
                self.timers.run_due()
        finally:
            if self.backend is not None:
                self.backend.close()
            self.close()

    def _watch_backend(self, fd: int, read: bool, write: bool) -> None:
        """The backend's socket joins, changes or leaves this loop's interest set."""
        events = (READ if read else 0) | (WRITE if write else 0)
        if not events:
            self.unregister(fd)
            self.bfd = -1
        elif fd != self.bfd:
            self.register(fd, events)
            self.bfd = fd
        else:
            self.modify(fd, events)

    def _accept(self) -> None:
        socks, out_of_fds = accept_waiting(self.listen)
        if out_of_fds:                       # stop accepting for a moment
            self.unregister(self.lfd)
            self.timers.call_later(0.1, self.register, self.lfd, READ)
        for sock in socks:
            if self.fd_limit is not None and sock.fileno() >= self.fd_limit:
                warn_fd_setsize(sock.fileno())
                sock.close()
                continue
            c = (EdgeConn if self.edge else Conn)(self, sock)
            self.conns[c.fd] = c
            self.register(c.fd, (READ | WRITE) if self.edge else READ)

    def _service_edge(self, c: Conn) -> None:
        """Edge-triggered: an event only says that something changed, so do all that can be
        done now: read until EAGAIN, write until EAGAIN, and read again if writing made room.
        Bytes left unread because of backpressure will get no new event: ``c.more`` says so."""
        s = c.session
        while True:
            while True:
                if not s.wants_read:
                    c.more = True           # stopped early: the kernel will not remind us
                    break
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    c.more = False
                    break
                except OSError:
                    return c.close()
                c.received(data)
                if not data:
                    c.more = False
                    break
            c.flush()
            if c.closed or not (c.more and s.wants_read):
                return


_setsize_warned = False


def warn_fd_setsize(fd: int) -> None:
    global _setsize_warned
    if not _setsize_warned:
        _setsize_warned = True
        log.warning("refusing a connection on fd %d: select() can only watch fds below 1024 "
                    "(FD_SETSIZE); use the poll or epoll model for more connections", fd)
