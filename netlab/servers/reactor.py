"""Reactor: one thread; a selector demultiplexes events and dispatches each to a callback.

Concurrency: a ``selectors.DefaultSelector`` (epoll on Linux, kqueue on macOS/BSD) waits; each
registered socket carries the event handler to call when it is ready: the Reactor pattern
(Schmidt, 1995), the shape of Java NIO's Selector loop, of libuv under Node.js, of mio under Tokio.
"""

import selectors

from .blocking import accept_waiting, close as close_socket
from .session import Session, Timers
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
        while True:
            for key, mask in self.selector.select(self.timers.timeout()):
                key.data(mask)                 # dispatch: the handler is the key's data
            self.timers.run_due()


class Acceptor:
    """Event handler of the listening socket: turns each new connection into an HttpHandler."""

    def __init__(self, reactor, listen, app):
        self.reactor, self.listen, self.app = reactor, listen, app
        listen.setblocking(False)
        reactor.want(listen, READ, self.on_event)

    def on_event(self, mask):
        socks, out_of_fds = accept_waiting(self.listen)
        if out_of_fds:                       # pause accepting for 100 ms
            self.reactor.want(self.listen, 0, None)
            self.reactor.timers.call_later(0.1, self.reactor.want, self.listen, READ,
                                           self.on_event)
        for sock in socks:
            HttpHandler(self.reactor, sock, self.app)


class HttpHandler:
    """Event handler of one connection; the Session holds its protocol state."""

    def __init__(self, reactor, sock, app):
        self.reactor, self.sock, self.session = reactor, sock, Session(app)
        self.events, self.closed = READ, False
        sock.setblocking(False)
        reactor.want(sock, READ, self.on_event)

    def on_event(self, mask):
        if mask & READ:
            self.on_readable()
        if mask & WRITE and not self.closed:
            self.on_writable()

    def on_readable(self):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            return self.close()
        if not data:
            self.session.peer_closed()
        else:
            self.schedule(self.session.received(data))
        self.on_writable()

    def on_backend_done(self):
        if self.closed:
            return
        self.schedule(self.session.backend_done())
        self.on_writable()

    def schedule(self, delay):
        if delay is not None:               # the head request waits on the backend
            self.reactor.timers.call_later(delay, self.on_backend_done)

    def on_writable(self):
        s = self.session
        if s.can_produce:                   # room again: answer requests held back
            self.schedule(s.resume())
        if s.out:
            try:
                del s.out[:self.sock.send(s.out)]
            except BlockingIOError:
                pass
            except OSError:
                return self.close()
        if s.finished:
            return self.close(s.drain)
        # WRITE also while answers wait to be produced: the next writable event produces them
        want = (READ if s.wants_read else 0) | (WRITE if s.out or s.can_produce else 0)
        if want != self.events:
            self.reactor.want(self.sock, want, self.on_event)
            self.events = want

    def close(self, drain=False):
        self.closed = True
        self.reactor.want(self.sock, 0, None)
        close_socket(self.sock, drain)


def _run(listen, app):
    reactor = Reactor()
    Acceptor(reactor, listen, app)
    reactor.run()


def serve(listen, app, workers=1):
    run_workers(workers, _run, listen, app)
