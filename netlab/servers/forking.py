"""Fork per connection: the parent accepts, a fresh child process serves each connection.

Concurrency: processes, one per connection, scheduled by the kernel. Clients no longer wait for
each other, but every connection costs a fork() (copying page tables), a process's memory,
and scheduler work; the parent must also reap every child or they pile up as zombies.
"""

import os
import signal

from ._blocking import accept, handle_connection
from ._workers import fork_child, stop_children

children = set()


def _reap(signum=None, frame=None):
    """SIGCHLD: collect every child that has exited (several may share one signal)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)


def _child(listen, conn, app):
    listen.close()                 # the child serves one client; the socket is the parent's
    handle_connection(conn, app)


def serve(listen, app):
    signal.signal(signal.SIGCHLD, _reap)
    try:
        while True:
            conn = accept(listen)
            children.add(fork_child(_child, listen, conn, app))
            conn.close()           # the child has its own copy of the connection
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        stop_children(children)
