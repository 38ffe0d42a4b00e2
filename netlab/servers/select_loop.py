"""select(): one thread watches every connection; each call hands the kernel all watched fds.

Concurrency: a readiness loop (see ``eventloop.py``) asks ``select()`` which sockets are ready.
Its cost: the fd bitmaps (readers, writers) are rebuilt and copied into the kernel on every
call, the kernel checks every bit up to the highest fd, and we walk the result: O(highest fd)
per call, however few are ready. An fd_set has FD_SETSIZE = 1024 bits, so fds >= 1024 cannot
be watched at all: such connections are refused (closed) with a warning in the log.
"""

import select

from .eventloop import READ, WRITE, EventLoop
from .forks import run_workers

FD_SETSIZE = 1024


class SelectLoop(EventLoop):
    fd_limit = FD_SETSIZE

    def __init__(self, listen, app):
        super().__init__(listen, app)
        self.readers, self.writers = set(), set()

    def register(self, fd, events):
        if events & READ:
            self.readers.add(fd)
        if events & WRITE:
            self.writers.add(fd)

    def modify(self, fd, events):
        self.unregister(fd)
        self.register(fd, events)

    def unregister(self, fd):
        self.readers.discard(fd)
        self.writers.discard(fd)

    def wait(self, timeout):
        # the whole interest set goes to the kernel on every call...
        r, w, _ = select.select(self.readers, self.writers, (), timeout)
        # ...and comes back as lists we then walk
        return [(fd, READ) for fd in r] + [(fd, WRITE) for fd in w]


def serve(listen, app, workers=1):
    run_workers(workers, lambda: SelectLoop(listen, app).run())
