"""The load generator: exact counts, errors by kind, idle and slow clients, bounds, validation.

Every assertion is an invariant (counts, kinds, lower bounds the design guarantees), never a
measured speed: this machine is shared and noisy.
"""

import math
import random
import socket
import time

import psutil
import pytest

import netlab
from netlab import NetlabError
from netlab import load
from netlab.load import ERROR_KINDS, latency_summary


# -- servers that misbehave on purpose (each is fn(listen_sock, app), run by netlab.serve) ------

def resetting(listen, app):
    """Reads the request, then aborts the connection: SO_LINGER 0 makes close() send RST."""
    import socket, struct
    while True:
        conn, _ = listen.accept()
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def failing(listen, app):
    """Answers every request with 500."""
    while True:
        conn, _ = listen.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n"
                     b"Connection: close\r\n\r\noops")
        conn.close()


def truncating(listen, app):
    """Promises 100 bytes of body, sends 3, closes."""
    while True:
        conn, _ = listen.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        conn.close()


def silent(listen, app):
    """Accepts and reads, never answers."""
    held = []
    while True:
        conn, _ = listen.accept()
        held.append(conn)


def chunked(listen, app):
    """Keep-alive with chunked bodies, split over several writes (like Node.js)."""
    import threading

    def serve(conn):
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return conn.close()
            buf += data
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                conn.sendall(b"lo\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    while True:
        conn, _ = listen.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def http10(listen, app):
    """Like `python -m http.server`: HTTP/1.0, no Content-Length, the body ends at close."""
    while True:
        conn, _ = listen.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\n")
        conn.sendall(b"body until close")
        conn.close()


def closes_quietly(listen, app):
    """Keep-alive, but closes each connection after 3 answers without saying so first."""
    import threading

    def serve(conn):
        for _ in range(3):
            if not conn.recv(65536):
                break
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.close()
    while True:
        conn, _ = listen.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_errors(r):
    return {k: 0 for k in ERROR_KINDS} == dict(r.errors)


# -- counts ----------------------------------------------------------------------------------

@pytest.fixture
def epoll_server():
    with netlab.serve("epoll") as srv:
        yield srv


CONFIGS = [(False, 1, 1), (False, 7, 2), (False, 30, 1), (True, 1, 1), (True, 7, 1), (True, 30, 2)]


def test_n_requests_give_exactly_n_answers(epoll_server):
    for keepalive, concurrency, processes in CONFIGS:
        go = []                                   # when the clients are told to start
        r = load.run(epoll_server.url, concurrency, requests=300, keepalive=keepalive,
                     processes=processes, on_start=lambda: go.append(time.monotonic()))
        wall = time.monotonic() - go[0]
        assert r.requests == 300 and no_errors(r), (keepalive, concurrency, processes)
        assert r.tool == "netlab" and r.mode == ("keepalive" if keepalive else "close")
        assert r.params["stopped_by"] == "count" and r.params["issued"] == 300
        assert r.client_procs == processes and r.concurrency == concurrency
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms <= r.p999_ms <= r.max_ms
        # the window holds every request and lies inside the call: a rate over the wrong
        # window (or in the wrong unit) falls outside it
        assert r.max_ms / 1e3 <= r.duration_s * 1.001 and r.duration_s <= wall
        assert r.client_cpu_s > 0 and r.rps >= r.requests / wall
        assert sum(r.timeline) <= r.requests and len(r.timeline) == int(r.duration_s)
    r = load.run(epoll_server.url, 20, requests=3, processes=2)   # more clients than requests
    assert r.requests == 3 and no_errors(r) and r.client_procs == 2


def test_duration_run_ends_on_time_and_counts_each_second(epoll_server):
    t = time.monotonic()
    r = load.run(epoll_server.url, 4, duration=1.2, keepalive=True)
    wall = time.monotonic() - t
    assert 1.2 <= r.duration_s < 2.2 and 1.2 <= wall < 8
    assert r.params["stopped_by"] == "duration" and len(r.timeline) == 1
    assert r.requests > 0 and r.timeline[0] <= r.requests and no_errors(r)


def test_chunked_and_read_until_close_bodies():
    with netlab.serve(chunked) as srv:
        r = load.run(srv.url, 3, requests=60, keepalive=True)
        assert r.requests == 60 and no_errors(r)
    with netlab.serve(http10) as srv:
        for keepalive in (False, True):     # HTTP/1.0: keep-alive clients must reconnect
            r = load.run(srv.url, 2, requests=20, keepalive=keepalive)
            assert r.requests == 20 and no_errors(r)


def test_keepalive_reconnects_when_the_server_closes_between_requests():
    with netlab.serve(closes_quietly) as srv:
        r = load.run(srv.url, 3, requests=60, keepalive=True)
    assert r.requests == 60 and no_errors(r)


def test_path_and_source_address(epoll_server):
    r = load.run(epoll_server.url, 2, requests=10, path="/bytes/5000", sources=["127.0.0.2"])
    assert r.requests == 10 and no_errors(r) and r.params["path"] == "/bytes/5000"
    r = load.run(epoll_server.url + "nope", 2, requests=10, expect_status=404)
    assert r.requests == 10 and no_errors(r)


# -- errors by kind --------------------------------------------------------------------------

def test_a_closed_port_is_refused():
    r = load.run(f"http://127.0.0.1:{free_port()}/", 2, requests=20)
    assert r.requests == 0 and r.errors["refused"] == 20 and r.error_count == 20
    assert math.isnan(r.p50_ms)


@pytest.mark.parametrize("server,kind", [
    (resetting, "reset"), (failing, "bad_status"), (truncating, "short_read")])
def test_errors_are_classified(server, kind):
    with netlab.serve(server) as srv:
        r = load.run(srv.url, 2, requests=10, processes=1)
    assert r.requests == 0 and r.errors[kind] == 10 and r.error_count == 10


def test_no_answer_is_a_timeout_and_a_count_run_stops_at_its_deadline():
    with netlab.serve(silent) as srv:
        r = load.run(srv.url, 2, requests=4, timeout=0.3)
        assert r.errors["timeout"] == 4 and r.error_count == 4
        r = load.run(srv.url, 2, requests=100, timeout=5, max_seconds=0.5)
        assert r.params["stopped_by"] == "deadline" and r.duration_s < 1.5
        assert r.requests == 0 and r.error_count == 0


# -- idle and slow clients --------------------------------------------------------------------

def test_an_idle_client_stalls_an_iterative_server_but_not_epoll():
    with netlab.serve("iterative") as srv:
        r = load.run(srv.url, 1, requests=3, idle=1, timeout=0.3)
        assert r.params["idle_connected"] == 1 and r.idle == 1
        assert r.errors["timeout"] == 3 and r.requests == 0
    with netlab.serve("epoll") as srv:
        started = []
        r = load.run(srv.url, 2, requests=20, idle=5, processes=2, timeout=2,
                     on_start=lambda: started.append(1))
        assert r.params["idle_connected"] == 5 and r.requests == 20 and no_errors(r)
        assert started == [1]


def test_slow_clients_send_in_pieces(epoll_server):
    r = load.run(epoll_server.url, 4, requests=12, slow=2, keepalive=True)
    assert r.requests == 12 and no_errors(r) and r.slow == 2
    # a slow request waits at least (pieces - 1) pauses before its last piece goes out
    assert r.max_ms >= (load.SLOW_PIECES - 1) * load.SLOW_PAUSE_S * 1000


def test_think_time_and_progress_callback(epoll_server):
    seen = []
    r = load.run(epoll_server.url, 2, duration=1.3, think_ms=20, progress=seen.append)
    assert seen and set(seen[0]) == {"elapsed_s", "requests", "errors", "rps"}
    assert r.think_ms == 20 and r.requests > 0 and no_errors(r)
    # each client waits 20 ms between requests: at most 2 / 20 ms over the run
    assert r.requests <= 2 * r.duration_s / 0.020 + 2


# -- the latency summary ----------------------------------------------------------------------

def test_percentiles_on_synthetic_latencies():
    values = list(range(1, 1001))
    random.Random(1).shuffle(values)
    s = latency_summary(values)
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"], s["p999_ms"], s["max_ms"]) == \
        (500, 900, 990, 999, 1000)
    assert s["mean_ms"] == 500.5
    assert latency_summary([7.0])["p999_ms"] == 7.0
    assert all(math.isnan(v) for v in latency_summary([]).values())


# -- the worker's parts, directly -------------------------------------------------------------

@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n"
    b"0\r\nTrailer: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
])
def test_a_response_is_complete_at_its_last_byte_however_it_is_split(response):
    from netlab._loadworker import Client, feed
    for step in (1, 7, len(response)):
        c = Client(False, None)
        pieces = [response[i:i + step] for i in range(0, len(response), step)]
        assert [feed(c, p) for p in pieces] == [False] * (len(pieces) - 1) + [True]
        assert c.status in (b"200", b"204")


def test_the_selectors_fallback_speaks_epolls_event_bits():
    from netlab._loadworker import IN, OUT, Selector
    a, b = socket.socketpair()
    sel = Selector()
    try:
        sel.register(a.fileno(), OUT)
        assert sel.poll(1) == [(a.fileno(), OUT)]
        sel.modify(a.fileno(), IN)
        assert sel.poll(0) == []
        b.send(b"x")
        assert sel.poll(1) == [(a.fileno(), IN)]
        sel.unregister(a.fileno())
    finally:
        sel.close()
        a.close()
        b.close()


# -- safety and validation --------------------------------------------------------------------

def test_only_loopback_unless_allowed():
    with pytest.raises(NetlabError, match="allow_remote=True"):
        load.run("http://192.0.2.1:80/", requests=1)
    with pytest.raises(NetlabError, match="allow_remote"):
        load.run("http://example.com/", requests=1)
    specs, params, _ = load._plan("http://192.0.2.1:8080/x", 4, 10, None, False, 0, 0, 0, None,
                                  5.0, None, 200, True, None, None, 120.0, False)
    assert specs[0]["host"] == "192.0.2.1" and params["path"] == "/x"
    specs, _, _ = load._plan("http://localhost:8080/", 4, 10, None, True, 0, 0, 0, 1,
                             5.0, None, 200, False, None, None, 120.0, False)
    assert specs[0]["host"] == "127.0.0.1" and "Connection" not in specs[0]["request"]


@pytest.mark.parametrize("kwargs,words", [
    (dict(url="ftp://127.0.0.1/"), "URL"),
    (dict(url="http://127.0.0.1:99999/"), "URL"),
    (dict(url=42), "URL"),
    (dict(concurrency=0), "concurrency"),
    (dict(concurrency=50_001), "concurrency"),
    (dict(concurrency=2.5), "concurrency"),
    (dict(requests=10, duration=1), "not both"),
    (dict(requests=0), "requests"),
    (dict(duration=601), "duration"),
    (dict(duration=-1), "duration"),
    (dict(slow=-1), "slow"),
    (dict(slow=11), "slow"),
    (dict(idle=-1), "idle"),
    (dict(think_ms=-5), "think_ms"),
    (dict(timeout=0), "timeout"),
    (dict(timeout=float("nan")), "timeout"),
    (dict(processes=0), "processes"),
    (dict(path="no-slash"), "path"),
    (dict(path="/a b"), "path"),
    (dict(expect_status=99), "expect_status"),
    (dict(cpus=[9999]), "cpus"),
    (dict(cpus=3), "cpus"),
    (dict(sources=["10.0.0.1"]), "source"),
    (dict(sources="127.0.0.2"), "sources"),
    (dict(progress="yes"), "progress"),
    (dict(max_seconds=0), "max_seconds"),
    (dict(allow_remote="yes"), "allow_remote"),
    (dict(concurrency=25_000, processes=1), "fds"),
])
def test_bad_arguments_are_one_sentence(kwargs, words):
    args = dict(url="http://127.0.0.1:1/", concurrency=10)
    args.update(kwargs)
    with pytest.raises(NetlabError, match=words) as e:
        load.run(args.pop("url"), args.pop("concurrency"), **args)
    assert "\n" not in str(e.value)


def test_many_connections_spread_over_source_addresses():
    specs, params, _ = load._plan("http://127.0.0.1:8080/", 30_000, 10, None, False, 0, 0, 0,
                                  None, 5.0, None, 200, False, None, None, 120.0, False)
    assert params["sources"] == ["127.0.0.1", "127.0.0.2"]
    assert params["processes"] >= 2      # one process cannot hold 30,000 sockets here
    assert {src for spec in specs for _, src in spec["clients"]} == {"127.0.0.1", "127.0.0.2"}


# -- nothing left behind ----------------------------------------------------------------------

def test_an_exception_in_the_caller_stops_the_workers(epoll_server):
    def boom(info):
        raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError, match="caller failed"):
        load.run(epoll_server.url, 4, duration=5, idle=3, progress=boom)
    with pytest.raises(KeyboardInterrupt):
        load.run(epoll_server.url, 4, duration=5,
                 progress=lambda info: (_ for _ in ()).throw(KeyboardInterrupt()))
    left = [p.pid for p in psutil.Process().children(recursive=True)
            if "watchdog.py" not in " ".join(p.cmdline())]      # the server's own watchdog
    assert left == [epoll_server.pid]
