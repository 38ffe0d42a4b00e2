"""Pre-threaded pool: N threads started up front; a mutex lets one at a time call accept().

Concurrency: N threads, each serving one connection at a time. No thread creation per
connection, but idle threads queue on the accept lock (one sleeps in accept(), the rest on the
mutex), and N slow clients stall the pool. ``lock=False`` drops the
mutex and lets the kernel arbitrate accept() itself, for comparison. ``lock`` may also be a
lock object of your own (the acceptlock experiment passes one that counts its waits).
"""

import contextlib
import threading

from .blocking import accept, handle_connection, start_thread

DEFAULT_WORKERS = 8


def _worker(listen, app, lock):
    while True:
        with lock:
            conn = accept(listen)
        handle_connection(conn, app)


def serve(listen, app, workers=DEFAULT_WORKERS, lock=True):
    mutex = lock                  # a lock object of your own is used as it is
    if isinstance(lock, bool):
        mutex = threading.Lock() if lock else contextlib.nullcontext()
    for _ in range(workers):      # each leaves the stop signals to the main thread
        start_thread(_worker, listen, app, mutex)
    threading.Event().wait()      # the main thread only waits, until the server is stopped
