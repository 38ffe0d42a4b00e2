"""poll(): one thread watches every connection through an array of (fd, events) entries.

Concurrency: the readiness loop of ``eventloop.py`` asks ``poll()`` which sockets are ready.
Its cost: no 1024 limit, but the whole array is copied into the kernel on every call and the
kernel checks every entry; then the array is scanned for entries with events set. Both are
O(watched fds) per call: with 10,000 idle connections, each wake-up for one busy client
pays for all 10,000.
"""

import select

from .eventloop import EventLoop
from .forks import run_workers


class PollLoop(EventLoop):
    def __init__(self, listen, app):
        super().__init__(listen, app)
        self.poller = select.poll()   # keeps the array; CPython rebuilds it after changes

    def register(self, fd, events):
        self.poller.register(fd, events)      # READ/WRITE are POLLIN/POLLOUT already

    def modify(self, fd, events):
        self.poller.modify(fd, events)

    def unregister(self, fd):
        self.poller.unregister(fd)

    def wait(self, timeout):
        ms = None if timeout is None else timeout * 1000.0
        # the kernel walked the whole array to find these
        return self.poller.poll(ms)


def serve(listen, app, workers=1):
    run_workers(workers, lambda: PollLoop(listen, app).run())
