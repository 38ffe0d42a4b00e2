"""Iterative: one connection at a time, start to finish, then the next.

Concurrency: none. accept(), serve that client until it leaves, repeat. Every other client waits
in the kernel's listen backlog, so one slow or idle client stalls everyone, and a request that
waits D ms on a backend caps the whole server at 1000/D requests per second.
"""

from .blocking import accept, handle_connection


def serve(listen, app):
    while True:
        conn = accept(listen)
        handle_connection(conn, app)
