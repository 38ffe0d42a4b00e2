"""Who served which connection, and when: the picture of a server model, drawn from its own run.

    with netlab.serve("threaded", backend_ms=100, trace=True) as srv:
        df = netlab.timeline.record(srv, connections=4, requests=2)
    netlab.plots.timeline(df)

A server started with ``trace=True`` stamps every answer with the process and thread that
produced it, when the request was complete in its hands, and when it answered
(``X-Netlab-Trace``). Here ``connections`` clients, one thread each, connect together and send
``requests`` requests each, one after another on their connection (keep-alive). Each answer
becomes a row; drawn as bars in one lane per server thread, the model's shape shows: one lane
taking connections in turn (iterative), a lane per connection (a process or a thread each), a
few lanes taking turns (a pool), or one lane holding many requests at once (an event loop).

Times are milliseconds from the first request sent, on the machine's monotonic clock, which
the server's processes share with us. They are one run's, on this machine: the shape is the
lesson, not the absolute times.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Union
from urllib.parse import urlsplit

from .arguments import whole
from .servers import NetlabError
from .workload import TRACE_HEADER

MAX_CONNECTIONS = 200


def record(server: Union[str, object], connections: int = 4, requests: int = 1, path: str = "/",
           timeout: float = 30.0):
    """One row per answer: connection, request, the server's pid and tid, ``lane`` (its thread,
    numbered in the order they first answered), ``start_ms``/``end_ms`` (the server's side)
    and ``sent_ms``/``done_ms`` (the client's side). ``server`` is a Server or its URL; it
    must have been started with ``trace=True``."""
    import pandas as pd
    url = getattr(server, "url", server)
    parts = urlsplit(url) if isinstance(url, str) else None
    if not parts or parts.scheme != "http" or not parts.hostname:
        raise NetlabError(f"record needs a server or a URL like http://127.0.0.1:8080/, "
                          f"not {server!r}")
    whole("connections", connections, 1, MAX_CONNECTIONS)
    whole("requests", requests, 1, 1000)
    start = threading.Barrier(connections + 1)
    rows, errors, conns, stopping = [], [], [], threading.Event()

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        conns.append(conn)
        try:
            conn.connect()
            start.wait(timeout)
            for r in range(requests):
                if stopping.is_set():
                    return
                sent = time.monotonic()
                conn.request("GET", path, headers={} if r + 1 < requests else
                             {"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                rows.append(_row(index, r, sent, time.monotonic(), resp.getheader(TRACE_HEADER)))
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as e:
            errors.append(f"connection {index}: {e!r}")
            start.abort()               # the others must not wait for this one
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), name=f"netlab-timeline-{i}",
                                daemon=True) for i in range(connections)]
    try:
        for t in threads:
            t.start()
        try:
            start.wait(timeout)         # every connection is open: send together
        except threading.BrokenBarrierError:
            pass
        for t in threads:
            t.join()
    except BaseException:               # Ctrl-C: no client may go on sending on its own
        stopping.set()
        start.abort()
        for conn in list(conns):
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)    # wakes a client blocked in recv
                except OSError:
                    pass
        for t in threads:
            if t.ident is not None:
                t.join(timeout)
        raise
    if errors:
        raise NetlabError(f"the timeline's clients failed ({len(errors)} of {connections}): "
                          f"{errors[0]}")
    if any(row["pid"] is None for row in rows):
        raise NetlabError(f"{url} sent no {TRACE_HEADER} header: start the server with "
                          "trace=True, e.g. netlab.serve('threaded', trace=True)")
    df = pd.DataFrame(rows)
    t0 = df["sent"].min()
    for col in ("start", "end", "sent", "done"):
        df[f"{col}_ms"] = (df.pop(col) - t0) * 1000
    df = df.sort_values(["start_ms", "connection"], ignore_index=True)
    first = df.drop_duplicates(["pid", "tid"])
    lanes = {key: i for i, key in enumerate(zip(first["pid"], first["tid"]), 1)}
    df.insert(2, "lane", [lanes[key] for key in zip(df["pid"], df["tid"])])
    df.attrs.update(url=url, connections=connections, requests=requests,
                    processes=df["pid"].nunique(), threads=len(lanes))
    return df


def run(model, connections: int = 4, requests: int = 2, backend_ms: float = 50, **serve_kwargs):
    """Start ``model`` (a name or your ``fn(listen_sock, app)``) traced, record a timeline of
    ``connections`` clients sending ``requests`` each, stop it: one call for a notebook cell.
    Each request waits ``backend_ms`` on the simulated backend, so serving takes visible time."""
    from .lifecycle import serve
    with serve(model, backend_ms=backend_ms, trace=True, **serve_kwargs) as srv:
        df = record(srv, connections=connections, requests=requests)
    df.attrs.update(model=srv.model, backend_ms=backend_ms, server_pid=srv.pid)
    return df


def _row(connection: int, request: int, sent: float, done: float, header) -> dict:
    fields = dict(item.split("=", 1) for item in (header or "").split())
    return dict(connection=connection, request=request,
                pid=int(fields["pid"]) if "pid" in fields else None,
                tid=int(fields["tid"]) if "tid" in fields else None,
                start=float(fields.get("start", "nan")), end=float(fields.get("end", "nan")),
                sent=sent, done=done)


def most_at_once(df, lane=None) -> int:
    """The most requests one lane held at the same moment (the busiest lane's, or ``lane``'s):
    1 for a thread that serves one request at a time, more for an event loop."""
    if lane is None:
        return max((most_at_once(df, k) for k in df["lane"].unique()), default=0)
    rows = df[df["lane"] == lane]
    events = sorted([(t, 1) for t in rows["start_ms"]] + [(t, -1) for t in rows["end_ms"]])
    held = best = 0
    for _, step in events:          # an end sorts before a start at the same instant
        held += step
        best = max(best, held)
    return best
