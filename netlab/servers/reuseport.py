"""SO_REUSEPORT: N worker processes, each with its own listening socket and epoll loop.

Concurrency: N processes x one event loop each, all bound to the same port. The kernel hashes
each new connection's addresses and ports to pick one of the N sockets, so there is no shared
accept queue to fight over: no thundering herd, no accept lock. With many connections the split
is close to even; with few it is lumpy. The catch: the hash ignores load, so a busy worker still
gets its share, and connections queued on a socket are lost if that socket closes.
"""

import os
import socket

from .epoll_loop import EpollLoop
from .forks import fork_all, supervise


def _worker(sock, others, app, edge):
    for s in others:
        s.close()                # only our own queue: a socket kept open here but never
    EpollLoop(sock, app, edge).run()   # accepted from would strand the connections hashed to it


def _sibling(listen):
    """Another listening socket on the same address; SO_REUSEPORT joins it to the group."""
    s = socket.socket(listen.family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # restart despite TIME_WAIT
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(listen.getsockname())
    s.listen(4096)
    return s


def serve(listen, app, workers=os.cpu_count() or 2, edge=False):
    socks = [listen] + [_sibling(listen) for _ in range(workers - 1)]
    try:
        pids = fork_all([(_worker, (s, [o for o in socks if o is not s], app, edge))
                         for s in socks])
    finally:
        for s in socks[1:]:
            s.close()            # the parent only supervises (the runner closes `listen`)
    supervise(pids)
