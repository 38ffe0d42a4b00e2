"""poll(): one thread watches every connection through an array of (fd, events) entries.

Concurrency: the readiness loop of ``_loop.py`` asks ``poll()`` which sockets are ready.
Its cost: no 1024 limit, but the whole array is copied into the kernel on every call and the
kernel checks every entry; then the array is scanned for entries with events set. Both are
O(watched fds) per call: with 10,000 idle connections, each wake-up for one busy client
pays for all 10,000.
"""

import select

from ._loop import READ, WRITE, EventLoop, translate
from ._workers import run_workers

_IN, _OUT = getattr(select, "POLLIN", 1), getattr(select, "POLLOUT", 4)   # getattr: Windows
_GONE = getattr(select, "POLLHUP", 16) | getattr(select, "POLLERR", 8) | getattr(select, "POLLNVAL", 32)


def _mask(events):
    return (_IN if events & READ else 0) | (_OUT if events & WRITE else 0)


class PollLoop(EventLoop):
    def __init__(self, listen, app):
        super().__init__(listen, app)
        self.poller = select.poll()   # keeps the array; CPython rebuilds it after changes

    def register(self, fd, events):
        self.poller.register(fd, _mask(events))

    def modify(self, fd, events):
        self.poller.modify(fd, _mask(events))

    def unregister(self, fd):
        self.poller.unregister(fd)

    def wait(self, timeout):
        ms = None if timeout is None else timeout * 1000.0
        # the kernel walked the whole array to find these
        return translate(self.poller.poll(ms), _IN, _OUT, _GONE)


def serve(listen, app, workers=1):
    run_workers(workers, lambda: PollLoop(listen, app).run())
