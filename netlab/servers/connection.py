"""The connection driver shared by every event loop: one Session on one non-blocking socket.

A readiness loop only says "this socket is ready"; what to do then is the same whether the loop
finds the connection by fd (``eventloop.py``) or by handler (``reactor.py``): read, hand the bytes
to the ``Session``, set a timer when a request waits on the backend, send what is pending, and
say which events to watch next. That is written once, here, so the models cannot drift apart.
"""

from __future__ import annotations

import selectors

from .blocking import close as close_socket
from .session import Session


class Connection:
    """Drives one ``Session`` on a non-blocking socket, for a loop that reports readiness.

    The loop calls ``on_readable`` (or reads itself and calls ``received``) and ``flush`` when
    the socket is ready, and provides two things: ``want(events)`` (change the interest
    registered) and ``forget()`` (unregister).

    One backpressure policy: ``flush`` sends, and answers requests held back by MAX_OUT as the
    kernel takes bytes, until everything is sent or the kernel's buffer is full; WRITE is watched
    only while unsent bytes remain. Why this one: a full buffer is the one state in which a
    writable event will surely come, so level-triggered loops get no event they cannot use (no
    busy spin) and edge-triggered ones lose no wakeup. Watching WRITE while answers are merely
    waiting to be produced (on a writable socket) would cost a wait per MAX_OUT bytes when
    level-triggered, and stall for good when edge-triggered: that edge never comes.
    """

    __slots__ = ("sock", "session", "timers", "backend", "events", "closed")
    READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE   # a loop may use other bits
    edge = False    # edge-triggered: write until EAGAIN; interest stays as first registered

    def __init__(self, sock, app, timers, backend=None):
        sock.setblocking(False)
        self.sock, self.session, self.timers = sock, Session(app), timers
        self.backend = backend        # the loop's Redis connection (backend.py), if any
        self.events = self.READ       # interest the loop registered for us
        self.closed = False

    # --- what the loop provides ---------------------------------------------------------------
    def want(self, events: int) -> None:
        """Change the interest registered for this socket to ``events`` (READ|WRITE bits)."""
        raise NotImplementedError

    def forget(self) -> None:
        """Stop watching this socket: it is about to close."""
        raise NotImplementedError

    # --- the steps ----------------------------------------------------------------------------
    def on_readable(self) -> None:
        """Level-triggered: one recv(), then send. If more is waiting, the next wait says so."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:                     # reset by the client
            return self.close()
        self.received(data)
        self.flush()

    def received(self, data: bytes) -> None:
        """Hand what recv() returned to the session; b"" (EOF): answer what was asked, close."""
        if not data:
            self.session.peer_closed()
            return
        self.schedule(self.session.received(data))

    def schedule(self, wait) -> None:
        """The head request waits: ``wait`` seconds on the simulated backend (a timer, not a
        sleep), or for the replies to Redis commands (a list: sent on the loop's own Redis
        socket, not a blocking call)."""
        if wait is None:
            return
        if type(wait) is list:
            self.backend.call(wait, self.backend_done)
        else:
            self.timers.call_later(wait, self.backend_done)

    def backend_done(self, replies=None) -> None:
        """The backend answered the head request: answer it and what can follow, then send."""
        if self.closed:
            return
        self.schedule(self.session.backend_done(replies))
        self.flush()

    def flush(self) -> None:
        """Send what is pending (see the class: the backpressure policy), close when finished,
        and change the interest when what we wait for changed."""
        s = self.session
        while True:
            if s.can_produce:               # room again: answer requests held back
                self.schedule(s.resume())
            if not s.out:
                break
            try:
                n = self.sock.send(s.out)
            except BlockingIOError:
                break
            except OSError:
                return self.close()
            del s.out[:n]
            if s.out and not self.edge:     # partial write: the buffer is full, WRITE will say
                break
        if s.finished:
            return self.close(s.drain)
        if not self.edge:
            want = (self.READ if s.wants_read else 0) | (self.WRITE if s.out else 0)
            if want != self.events:
                self.want(want)
                self.events = want

    def close(self, drain: bool = False) -> None:
        """Unregister and close, once (``drain``: read leftovers first, see blocking.close)."""
        self.closed = True
        self.forget()
        close_socket(self.sock, drain)
