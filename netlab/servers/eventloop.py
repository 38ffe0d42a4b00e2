"""The readiness loop shared by the ``select``, ``poll`` and ``epoll`` models.

Those three differ in one thing only: how they ask the kernel which sockets are ready. So they
override four methods (``register``, ``modify``, ``unregister``, ``wait``) and this class does
the rest: accept, read what is ready, hand it to the connection's ``Session``, write what is
pending, run backend timers. One thread, no blocking call except the wait itself.
"""

from __future__ import annotations

import logging
import socket

from .blocking import accept_waiting, close as close_socket
from .session import Session, Timers

log = logging.getLogger("netlab.server")

# Event bits: poll()'s values, which epoll shares (EPOLLIN == POLLIN == 1, ...), so the kernel's
# answer needs no translation; select() builds the same bits itself.
READ, WRITE, ERROR, HANGUP, INVALID = 1, 4, 8, 16, 32
GONE = ERROR | HANGUP | INVALID


class Conn:
    __slots__ = ("sock", "fd", "session", "events", "closed", "more")

    def __init__(self, sock, session):
        self.sock, self.fd, self.session = sock, sock.fileno(), session
        self.events = READ       # interest currently registered
        self.closed = False
        self.more = False        # edge-triggered: bytes may be unread with no event to come


class EventLoop:
    edge = False            # edge-triggered: interest registered once, read/write until EAGAIN
    fd_limit = None         # select() cannot watch fds >= FD_SETSIZE

    def __init__(self, listen: socket.socket, app):
        self.listen, self.app = listen, app
        self.lfd = listen.fileno()
        listen.setblocking(False)
        self.conns = {}
        self.timers = Timers()

    # --- the four methods a mechanism provides -------------------------------------------
    def register(self, fd: int, events: int) -> None: raise NotImplementedError
    def modify(self, fd: int, events: int) -> None: raise NotImplementedError
    def unregister(self, fd: int) -> None: raise NotImplementedError
    def wait(self, timeout):  # -> list of (fd, READ|WRITE|GONE bits)
        raise NotImplementedError

    def close(self) -> None:
        for c in list(self.conns.values()):
            c.sock.close()
        self.conns.clear()

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        self.register(self.lfd, READ)
        try:
            while True:
                for fd, mask in self.wait(self.timers.timeout()):
                    if fd == self.lfd:
                        self._accept()
                        continue
                    c = self.conns.get(fd)
                    if c is None:
                        continue
                    if not mask & READ and mask & GONE:    # gone, nothing left to read
                        self._close(c)
                    elif self.edge:
                        self._service_edge(c)
                    else:
                        if mask & READ:             # data, EOF, or a reset to discover
                            self._on_readable(c)
                        if mask & WRITE and not c.closed:
                            self._flush(c)
                self.timers.run_due()
        finally:
            self.close()

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
            sock.setblocking(False)
            c = Conn(sock, Session(self.app))
            self.conns[c.fd] = c
            self.register(c.fd, (READ | WRITE) if self.edge else READ)

    def _on_readable(self, c: Conn) -> None:
        try:                                # level-triggered: one read; if more is waiting,
            data = c.sock.recv(65536)       # the next wait() reports this socket again
        except BlockingIOError:
            return
        except OSError:                     # reset by the client
            return self._close(c)
        self._received(c, data)
        self._flush(c)

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
                    return self._close(c)
                self._received(c, data)
                if not data:
                    c.more = False
                    break
            self._flush(c)
            if c.closed or not (c.more and s.wants_read):
                return

    def _received(self, c: Conn, data: bytes) -> None:
        if not data:                        # EOF: answer what was asked, then close
            c.session.peer_closed()
            return
        self._schedule(c, c.session.received(data))

    def _schedule(self, c: Conn, delay) -> None:
        if delay is not None:               # the head request waits on the backend
            self.timers.call_later(delay, self._backend_done, c)

    def _backend_done(self, c: Conn) -> None:
        if c.closed:
            return
        self._schedule(c, c.session.backend_done())
        if self.edge:
            self._service_edge(c)
        else:
            self._flush(c)

    def _flush(self, c: Conn) -> None:
        s = c.session
        while True:
            if s.can_produce:               # room again: answer requests held back
                self._schedule(c, s.resume())
            if not s.out:
                break
            try:
                n = c.sock.send(s.out)
            except BlockingIOError:
                break
            except OSError:
                return self._close(c)
            del s.out[:n]
            if s.out and not self.edge:     # partial write: wait for WRITE readiness
                break
        if s.closing and s.finished:
            return self._close(c, drain=s.drain)
        if not self.edge:
            want = (READ if s.wants_read else 0) | (WRITE if s.out else 0)
            if want != c.events:
                self.modify(c.fd, want)
                c.events = want

    def _close(self, c: Conn, drain: bool = False) -> None:
        c.closed = True
        del self.conns[c.fd]
        self.unregister(c.fd)
        close_socket(c.sock, drain)


_setsize_warned = False


def warn_fd_setsize(fd: int) -> None:
    global _setsize_warned
    if not _setsize_warned:
        _setsize_warned = True
        log.warning("refusing a connection on fd %d: select() can only watch fds below 1024 "
                    "(FD_SETSIZE); use the poll or epoll model for more connections", fd)
