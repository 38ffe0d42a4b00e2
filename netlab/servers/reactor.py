"""Reactor: one thread; a selector demultiplexes events and dispatches each to a callback.

Concurrency: a ``selectors.DefaultSelector`` (epoll on Linux, kqueue on macOS/BSD) waits; each
registered socket carries the event handler to call when it is ready: the Reactor pattern
(Schmidt, 1995), the shape of Java NIO's Selector loop, of libuv under Node.js, of mio under Tokio.
"""

import selectors

from .backend import LoopBackend
from .blocking import accept_waiting
from .connection import Connection
from .session import Timers
from .forks import run_workers

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Reactor:
    """The dispatcher: which handler wants which events, plus timers."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()

    def want(self, sock, events, handler):
        """Ask for ``events`` on ``sock`` (0: none) and route them to ``handler(mask)``."""
        registered = sock in self.selector.get_map()
        if not events:
            if registered:
                self.selector.unregister(sock)
        elif registered:
            self.selector.modify(sock, events, handler)
        else:
            self.selector.register(sock, events, handler)

    def run(self):
        """Serve forever: wait, call each ready socket's handler, run the timers that are due."""
        while True:
            for key, mask in self.selector.select(self.timers.timeout()):
                key.data(mask)                 # dispatch: the handler is the key's data
            self.timers.run_due()


class Acceptor:
    """Event handler of the listening socket: turns each new connection into an HttpHandler."""

    def __init__(self, reactor, listen, app, backend=None):
        self.reactor, self.listen, self.app, self.backend = reactor, listen, app, backend
        listen.setblocking(False)
        reactor.want(listen, READ, self.on_event)

    def on_event(self, mask):
        """The listener is readable: accept the connections waiting (pause when out of fds)."""
        socks, out_of_fds = accept_waiting(self.listen)
        if out_of_fds:                       # pause accepting for 100 ms
            self.reactor.want(self.listen, 0, None)
            self.reactor.timers.call_later(0.1, self.reactor.want, self.listen, READ,
                                           self.on_event)
        for sock in socks:
            HttpHandler(self.reactor, sock, self.app, self.backend)


class HttpHandler(Connection):
    """Event handler of one connection: the shared connection driver (``connection.py``), which
    reads, answers through the Session and writes; this class routes the reactor to it."""
    __slots__ = ("reactor",)

    def __init__(self, reactor, sock, app, backend=None):
        super().__init__(sock, app, reactor.timers, backend)
        self.reactor = reactor
        reactor.want(sock, READ, self.on_event)

    def on_event(self, mask):
        """Ready: read (one recv), then send what is pending."""
        if mask & READ:
            self.on_readable()
        if mask & WRITE and not self.closed:
            self.flush()

    def want(self, events):
        self.reactor.want(self.sock, events, self.on_event)

    def forget(self):
        self.reactor.want(self.sock, 0, None)


def redis_handler(reactor, address):
    """The guestbook's Redis as one more event handler of the reactor (``backend.py``): its
    socket is demultiplexed with the clients', and a reply is an event like any other."""
    def watch(fd, read, write):
        reactor.want(fd, (READ if read else 0) | (WRITE if write else 0),
                     lambda mask: backend.ready())
    backend = LoopBackend(address, watch, reactor.timers)
    return backend


def _run(listen, app):
    reactor = Reactor()
    backend = redis_handler(reactor, app.workload.redis) if app.workload.redis else None
    Acceptor(reactor, listen, app, backend)
    try:
        reactor.run()
    finally:
        if backend is not None:
            backend.close()


def serve(listen, app, workers=1):
    run_workers(workers, _run, listen, app)
