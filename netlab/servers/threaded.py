"""Thread per connection: the main thread accepts, a new thread serves each connection.

Concurrency: OS threads, one per connection, scheduled by the kernel. Cheaper than a process
(shared memory, no page-table copy) but each thread still has a stack and a kernel task, and in
CPython the GIL lets only one of them run Python code at a time: CPU work does not scale.
"""

from .blocking import accept, handle_connection, start_thread


def serve(listen, app):
    while True:
        conn = accept(listen)
        # a daemon thread (one stuck on an idle client must not keep the process alive at stop)
        # that leaves the stop signals to the main thread: see start_thread
        start_thread(handle_connection, conn, app)
