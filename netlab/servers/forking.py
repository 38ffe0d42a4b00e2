"""Fork per connection: the parent accepts, a fresh child process serves each connection.

Concurrency: processes, one per connection, scheduled by the kernel. Clients no longer wait for
each other, but every connection costs a fork() (copying page tables), a process's memory,
and scheduler work; the parent must also reap every child or they pile up as zombies.
"""

import os
import socket

from .blocking import accept, handle_connection
from .forks import fork_child, stop_children

REAP_EVERY = 0.2     # seconds: how often an idle parent wakes up to collect exited children


def _reap(children):
    """Collect every child that has exited; an exited child not waited for stays a zombie."""
    while children:
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
    children = set()
    # Reaping from the accept loop rather than in a SIGCHLD handler keeps the bookkeeping in
    # one thread of control: no handler runs between fork() and recording the child.
    listen.settimeout(REAP_EVERY)
    try:
        while True:
            _reap(children)
            try:
                conn = accept(listen)
            except socket.timeout:
                continue
            fork_child(_child, listen, conn, app, into=children)
            conn.close()           # the child has its own copy of the connection
    finally:
        stop_children(children)
