"""The connection driver (``netlab.servers.connection``) on a socketpair, with no loop.

The test plays the loop: it calls ``on_readable`` or ``flush`` as a readiness loop would when
the socket is ready, records what the driver asks of the loop (``want``, ``forget``) and of
the timers, and fires a backend timer itself. So every assertion is about states and counts,
never about how long something took.
"""

from __future__ import annotations

import re
import socket
import struct

import pytest

from netlab.servers import connection, eventloop, reactor, session
from netlab.workload import App, Workload

GET = b"GET /bytes/%d HTTP/1.1\r\nHost: t\r\n\r\n"
READ, WRITE = connection.Connection.READ, connection.Connection.WRITE


class Timers:
    """What the driver asked to be called later, run only when the test says so."""

    def __init__(self):
        self.calls = []

    def call_later(self, delay, fn, *args):
        self.calls.append((delay, fn, args))

    def fire(self):
        (_, fn, args), = self.calls      # exactly one pending
        self.calls.clear()
        fn(*args)


class Driven(connection.Connection):
    """The driver with a loop that only records what it is asked."""
    __slots__ = ("asked", "forgotten")

    def __init__(self, sock, app, timers):
        super().__init__(sock, app, timers)
        self.asked, self.forgotten = [], 0

    def want(self, events):
        self.asked.append(events)

    def forget(self):
        self.forgotten += 1


class EdgeDriven(Driven):
    __slots__ = ()
    edge = True


@pytest.fixture
def pair():
    """(server side, client side) of a connected socketpair; closed afterwards if still open."""
    server, client = socket.socketpair()
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


def responses(data: bytes) -> list:
    """(status, body length) of each complete response at the start of ``data``, in order."""
    got = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        head = data[:end].decode("latin-1")
        length = int(re.search(r"(?im)^content-length:\s*(\d+)", head).group(1))
        if len(data) < end + 4 + length:
            break
        got.append((int(head.split()[1]), length))
        data = data[end + 4 + length:]
    return got


def read_all(client, n: int) -> list:
    """Read until ``n`` responses have arrived (blocking, within the client's timeout)."""
    data = b""
    while len(responses(data)) < n:
        chunk = client.recv(1 << 20)
        assert chunk, "the connection closed early"
        data += chunk
    return responses(data)


def test_pipelined_requests_are_answered_in_order(pair):
    server, client = pair
    c = Driven(server, App(), Timers())
    client.sendall(b"".join(GET % n for n in (3, 1, 2)))
    c.on_readable()                        # one recv(): all three, answered and sent
    assert read_all(client, 3) == [(200, 3), (200, 1), (200, 2)]
    assert c.asked == [] and c.events == READ          # still reading, nothing left to write
    assert not c.session.queue and not c.session.out and not c.closed


def test_backpressure_stops_reading_and_resumes_after_the_peer_reads(pair):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)   # the kernel takes little
    c = Driven(server, App(), Timers())
    n, size = 6, 200_000                   # 1.2 MB asked for; MAX_OUT is 256 kB
    client.sendall(b"".join(GET % size for _ in range(n)))
    c.on_readable()
    s = c.session
    # two answers built (the second began below MAX_OUT), the rest held back; the kernel took
    # what fits: watch WRITE only, so a level-triggered loop is not woken for READ meanwhile
    assert len(s.queue) == n - 2 and len(s.out) > session.MAX_OUT
    assert not s.wants_read and c.asked == [WRITE] and c.events == WRITE
    data, held = b"", 0
    while s.queue or s.out:                # the peer reads; each writable event sends more
        data += client.recv(1 << 20)
        c.flush()
        # the interest always follows the session: READ only below the limits, WRITE only
        # while bytes are unsent (then the buffer is full: an event will come)
        assert c.events == (READ if s.wants_read else 0) | (WRITE if s.out else 0)
        held += not s.wants_read
    assert held >= 1 and c.events == READ and c.asked[-1] == READ    # reading again
    while len(data) < n * size:
        data += client.recv(1 << 20)
    assert responses(data) == [(200, size)] * n
    client.sendall(GET % 5)                # and the connection goes on
    c.on_readable()
    assert read_all(client, 1) == [(200, 5)]
    assert not c.closed and c.forgotten == 0


def test_edge_triggered_sends_everything_and_never_changes_interest(pair):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    c = EdgeDriven(server, App(), Timers())
    client.sendall(b"".join(GET % 100_000 for _ in range(4)))
    c.on_readable()
    assert c.session.out                   # the buffer filled: the rest waits for an edge
    data = b""
    while c.session.queue or c.session.out:
        data += client.recv(1 << 20)
        c.flush()
    while len(data) < 4 * 100_000:
        data += client.recv(1 << 20)
    assert responses(data) == [(200, 100_000)] * 4
    assert c.asked == []                   # interest registered once, never changed


def test_a_backend_delay_sets_a_timer_and_answers_when_it_fires(pair):
    server, client = pair
    timers = Timers()
    c = Driven(server, App(Workload(backend_ms=50)), timers)
    client.sendall(GET % 4 + GET % 6)
    c.on_readable()
    # nothing answered yet: the head request waits on a timer, not in a sleep
    assert [(d, fn) for d, fn, _ in timers.calls] == [(0.05, c.backend_done)]
    assert c.session.waiting and len(c.session.queue) == 2 and not c.session.out
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(1)
    client.settimeout(5)
    timers.fire()                          # the first answer, and a timer for the second
    assert len(timers.calls) == 1 and len(c.session.queue) == 1
    timers.fire()
    assert timers.calls == [] and not c.session.queue
    assert read_all(client, 2) == [(200, 4), (200, 6)]
    assert not c.closed


def test_eof_answers_what_was_asked_then_closes(pair):
    server, client = pair
    timers = Timers()
    c = Driven(server, App(Workload(backend_ms=10)), timers)
    client.sendall(GET % 1 + GET % 2)
    client.shutdown(socket.SHUT_WR)        # asked two, then EOF
    c.on_readable()                        # the requests...
    c.on_readable()                        # ...and the EOF
    assert c.session.closing and not c.closed          # still owes two answers
    timers.fire()
    assert not c.closed
    timers.fire()
    assert c.closed and c.forgotten == 1 and server.fileno() == -1
    data = b""
    while chunk := client.recv(65536):     # both answers, then EOF
        data += chunk
    assert responses(data) == [(200, 1), (200, 2)]


def test_a_reset_closes_once():
    with socket.create_server(("127.0.0.1", 0)) as listen:
        client = socket.create_connection(listen.getsockname())
        server, _ = listen.accept()
    c = Driven(server, App(), Timers())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sendall(GET % 1)
    client.close()                         # linger 0: a reset, not a FIN
    c.on_readable()                        # ConnectionResetError (or the request, then it)
    if not c.closed:
        c.on_readable()
    assert c.closed and c.forgotten == 1 and server.fileno() == -1
    c.backend_done()                       # a timer that fires late finds it closed
    assert c.forgotten == 1


def test_both_loops_drive_connections_with_it():
    assert issubclass(eventloop.Conn, connection.Connection)
    assert issubclass(eventloop.EdgeConn, eventloop.Conn) and eventloop.EdgeConn.edge
    assert issubclass(reactor.HttpHandler, connection.Connection)
    assert (eventloop.Conn.READ, eventloop.Conn.WRITE) == (eventloop.READ, eventloop.WRITE)
    assert (reactor.HttpHandler.READ, reactor.HttpHandler.WRITE) == (reactor.READ, reactor.WRITE)
