"""What every blocking model does with one connection once it has it.

The iterative, forking, pre-forked, threaded and pre-threaded models differ only in *who* runs
``handle_connection`` (the accept loop itself, a child process, a thread); the code a connection
runs is this one function, so that difference is the only one a measurement can see.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time

log = logging.getLogger("netlab.server")

_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_fd_warned = False


def start_thread(target, *args) -> threading.Thread:
    """Start a daemon thread that cannot receive the stop signals (SIGTERM, SIGINT, SIGHUP).

    Why: the kernel delivers a signal sent to the process to any one thread that does not block
    it, and CPython runs the Python handler only in the main thread. Delivered to a worker, a
    stop signal interrupted nobody: the main thread slept on in accept() and the server did not
    stop (seen in 1 of 6 runs beside a CPU hog). A new thread inherits its creator's mask, so
    the mask is set around ``start()`` only."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    if not hasattr(signal, "pthread_sigmask"):          # Windows: no such delivery
        thread.start()
        return thread
    from .forks import STOP_SIGNALS
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return thread


def accept(listen: socket.socket) -> socket.socket:
    """Blocking accept() that survives what a busy server meets: aborted handshakes and fd
    exhaustion (it waits for connections to close instead of crashing)."""
    while True:
        try:
            conn, _ = listen.accept()
            return conn
        except OSError as e:
            if e.errno == errno.ECONNABORTED:
                continue
            if e.errno in _FD_ERRORS:
                warn_fd_limit(e)
                time.sleep(0.1)
                continue
            raise


def accept_waiting(listen: socket.socket, limit: int = 64) -> tuple:
    """Non-blocking accept() for the event loops: take up to ``limit`` connections already
    waiting (a burst, bounded so a flood cannot starve the connected clients).

    Returns ``(sockets, out_of_fds)``; when out of fds, the loop should stop watching the
    listening socket for a moment rather than be woken for it again and again.
    """
    socks = []
    while len(socks) < limit:
        try:
            sock, _ = listen.accept()
        except BlockingIOError:          # no more waiting (or another worker took it)
            break
        except OSError as e:
            if e.errno == errno.ECONNABORTED:
                continue
            if e.errno in _FD_ERRORS:
                warn_fd_limit(e)
                return socks, True
            raise
        socks.append(sock)
    return socks, False


def warn_fd_limit(e: OSError) -> None:
    """Say once, in one sentence, what to do when accept() runs out of file descriptors."""
    global _fd_warned
    if not _fd_warned:
        _fd_warned = True
        log.warning("accept() failed (%s): the process is out of file descriptors; close "
                    "connections or raise the limit with `ulimit -n`", e.strerror)


def handle_connection(conn: socket.socket, app) -> None:
    """Serve one connection to its end: read, parse, wait on the backend, respond, repeat."""
    parser = app.new_parser()
    drain = False
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for req in parser.feed(data):
                if app.backend_s and not req.error:
                    time.sleep(app.backend_s)          # the thread waits; nothing else runs
                conn.sendall(app.respond(req))
                if not req.keep_alive:
                    drain = bool(req.error)
                    return
    except OSError:          # reset or broken pipe: that client is gone, the server is not
        return
    finally:
        close(conn, drain)


def close(conn: socket.socket, drain: bool = False) -> None:
    """Close a connection. After an error answer, first read what the client already sent:
    closing with unread bytes makes the kernel send a reset, which can destroy our last
    response (say, a 431) before the client reads it."""
    if drain:
        try:
            conn.setblocking(False)
            for _ in range(16):
                if not conn.recv(65536):
                    break
        except OSError:
            pass
    conn.close()
