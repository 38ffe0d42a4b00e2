"""epoll(): one thread watches every connection; the kernel keeps the interest list.

Concurrency: the readiness loop of ``eventloop.py`` asks ``epoll_wait()`` which sockets are ready.
Each fd is added once (``epoll_ctl``) and the kernel queues fds as they become ready, so a wait
costs O(ready fds), not O(watched fds). Level-triggered by default (reported while ready; we
change a socket's interest with ``epoll_ctl`` only when it starts or stops needing to write);
``edge=True`` reports changes only, so we read and write until EAGAIN and never change interest.
With workers > 1, ``exclusive=True`` (EPOLLEXCLUSIVE) wakes one or more of the waiting
processes per new connection instead of all of them.
"""

import select

from .eventloop import EventLoop
from .forks import run_workers


class EpollLoop(EventLoop):
    def __init__(self, listen, app, edge=False, exclusive=False):
        super().__init__(listen, app)
        self.edge = edge
        self.exclusive = exclusive
        self.ep = select.epoll()

    def _mask(self, fd, events):     # READ/WRITE are EPOLLIN/EPOLLOUT already
        if fd == self.lfd:
            return events | (select.EPOLLEXCLUSIVE if self.exclusive else 0)
        return events | (select.EPOLLET if self.edge else 0)

    def register(self, fd, events):
        self.ep.register(fd, self._mask(fd, events))

    def modify(self, fd, events):
        self.ep.modify(fd, self._mask(fd, events))

    def unregister(self, fd):
        self.ep.unregister(fd)

    def wait(self, timeout):
        # only the ready fds come back: nothing is scanned
        return self.ep.poll(-1 if timeout is None else timeout, 1024)

    def close(self):
        super().close()
        self.ep.close()


def serve(listen, app, workers=1, edge=False, exclusive=False):
    run_workers(workers, lambda: EpollLoop(listen, app, edge, exclusive).run())
