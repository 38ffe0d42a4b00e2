"""Thread per connection: the main thread accepts, a new thread serves each connection.

Concurrency: OS threads, one per connection, scheduled by the kernel. Cheaper than a process
(shared memory, no page-table copy) but each thread still has a stack and a kernel task, and in
CPython the GIL lets only one of them run Python code at a time: CPU work does not scale.
"""

import threading

from .blocking import accept, handle_connection


def serve(listen, app):
    while True:
        conn = accept(listen)
        # daemon: a thread stuck on an idle client must not keep the process alive at stop
        threading.Thread(target=handle_connection, args=(conn, app), daemon=True).start()
