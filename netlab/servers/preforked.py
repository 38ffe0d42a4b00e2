"""Pre-forked: N worker processes, forked up front, all blocking in accept() on one socket.

Concurrency: N processes; each serves one connection at a time, so N slow clients stall it.
The fork cost is paid once, not per connection. The classic worry is the thundering herd:
many processes waiting on one socket. For a blocking accept() the kernel wakes only one (an
exclusive wait); for select()/poll()/epoll() on the shared socket it wakes them all.
"""

from .blocking import accept, handle_connection
from .forks import run_workers

DEFAULT_WORKERS = 4


def _worker(listen, app):
    while True:
        conn = accept(listen)
        handle_connection(conn, app)


def serve(listen, app, workers=DEFAULT_WORKERS):
    run_workers(workers, _worker, listen, app, always_fork=True)
