"""The guestbook on every model, against a private Redis: correct counts under concurrency,
clear answers to bad input and to a backend that is gone, and each model waiting its own way
(the readiness loops on their own loop, with no thread added)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import netlab
from netlab import guestbook, http
from netlab.peers import redis_binary, redis_server
from netlab.supervisor import proc_group

from conftest import get, needs_strace, parse_response, port_listening

ROOT = Path(__file__).resolve().parent.parent
BINARY, WHY = redis_binary()
needs_redis = pytest.mark.skipif(BINARY is None, reason=WHY)
MODELS = [m.name for m in netlab.models(available_only=True)]
# (uring is a completion loop, not a readiness loop, but waits on Redis the same way: a
# POLL_ADD on its own ring, no thread)
LOOPS = [m for m in ("select", "poll", "epoll", "reactor", "asyncio", "uring") if m in MODELS]


def req(method="GET", body=b"", target="/guestbook", headers=None) -> http.Request:
    r = http.RequestParser().feed(
        f"{method} {target} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode()
        + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode() + b"\r\n" + body)
    return r[0]


# ---------------------------------------------------------------- sans-I/O: no Redis needed

def test_commands_say_what_to_ask_redis():
    assert guestbook.commands(req("GET")) == [("INCR", guestbook.VISITS), ("LLEN", guestbook.ENTRIES),
                                             ("LRANGE", guestbook.ENTRIES, -guestbook.SHOWN, -1)]
    assert guestbook.commands(req("POST", b" hi there \n")) == [("RPUSH", guestbook.ENTRIES, b"hi there")]


@pytest.mark.parametrize("method, body, status", [
    ("POST", b"", 400), ("POST", b"  \r\n", 400),
    ("POST", b"x" * (guestbook.MAX_ENTRY + 1), 413), ("DELETE", b"", 405)])
def test_bad_guestbook_requests_are_answered_without_redis(method, body, status):
    out = guestbook.commands(req(method, body))
    assert isinstance(out, bytes) and parse_response(out)[0] == status


def test_a_body_too_large_to_keep_is_413_not_an_empty_entry():
    big = http.KEEP_BODY + 10
    (r,) = http.RequestParser().feed(b"POST /guestbook HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % big)
    assert parse_response(guestbook.commands(r))[0] == 413


def test_answers_from_replies():
    st, _, body = parse_response(guestbook.answer(req("GET"), [7, 2, [b"a", b"b"]]))
    assert st == 200 and body == b"visitor 7; 2 entries, the latest:\n- a\n- b\n"
    st, _, body = parse_response(guestbook.answer(req("POST", b"a"), [3]))
    assert st == 201 and body == b"entry 3 saved\n"
    st, _, body = parse_response(guestbook.unavailable(req("GET"), "gone"))
    assert st == 503 and b"gone" in body


@pytest.mark.parametrize("address", ["localhost", "h:0", "h:99999", ":6379", "h:x", 6379])
def test_a_bad_redis_address_is_one_sentence(address):
    with pytest.raises(netlab.NetlabError, match="HOST:PORT"):
        netlab.Server("epoll", redis=address)


def test_without_a_backend_the_guestbook_says_how_to_get_one():
    with netlab.serve("epoll") as srv:
        st, _, body = get(srv.port, "/guestbook")
    assert st == 503 and b"redis=" in body


# ---------------------------------------------------------------- the private Redis

@pytest.fixture
def rds():          # one per test: the leak check runs after each test (and it starts in ~20 ms)
    if BINARY is None:
        pytest.skip(WHY)
    with redis_server() as r:
        yield r


@pytest.fixture
def clean(rds):
    c = rds.client()
    c.flushall()
    yield c
    c.close()


def http_call(port, method="GET", body=b"", path="/guestbook"):
    raw = (f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return get(port, raw=raw, timeout=10)


@needs_redis
def test_redis_runs_private_on_loopback_and_leaves_nothing():
    with redis_server() as r:
        c = r.client()
        assert c.ping() and c.config_get("save") == {"save": ""}
        assert c.config_get("appendonly") == {"appendonly": "no"}
        assert c.config_get("bind")["bind"] == "127.0.0.1"
        pid, port = r.pid, r.port
        c.close()
    assert proc_group(pid) == [] and not port_listening(port)


@needs_redis
def test_redis_is_stopped_when_its_owner_dies():
    code = ("import os, signal; from netlab.peers import redis_server\n"
            "r = redis_server()\nprint(r.pid, r.port, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    pid, port = map(int, out.stdout.split())
    from netlab.monitor import wait_until
    assert wait_until(lambda: not proc_group(pid) and not port_listening(port), timeout=10)


def test_a_missing_redis_server_is_one_sentence(monkeypatch):
    monkeypatch.setattr("netlab.peers.redis.redis_binary", lambda: (None, "redis-server is not installed: x"))
    with pytest.raises(netlab.NetlabError, match="not installed"):
        redis_server()


@needs_redis
@pytest.mark.parametrize("model", MODELS)
def test_every_model_counts_every_visit_and_keeps_every_entry(model, rds, clean):
    """100 clients at once: 100 POSTs store exactly 100 entries, and every GET answered is
    exactly one visit counted, whatever the model (no lost update, no double count)."""
    n = 100
    with netlab.serve(model, redis=rds.address) as srv:
        with cf.ThreadPoolExecutor(n) as pool:
            posts = list(pool.map(lambda i: http_call(srv.port, "POST", b"entry %d" % i), range(n)))
        bad = [r for r in posts if r[0] != 201]
        assert not bad, f"{len(bad)} failed, the first: {bad[0][0]} {bad[0][2]!r}"
        assert clean.llen(guestbook.ENTRIES) == n
        assert sorted(clean.lrange(guestbook.ENTRIES, 0, -1)) == sorted(f"entry {i}" for i in range(n))
        visits = netlab.load.run(srv.url, n, requests=3 * n, path="/guestbook", timeout=30)
        assert visits.requests == 3 * n and visits.error_count == 0, visits.summary()
        assert int(clean.get(guestbook.VISITS)) == 3 * n
        assert [http_call(srv.port, "POST", b"")[0], http_call(srv.port, "POST", b"x" * 2000)[0],
                http_call(srv.port, "PUT", b"x")[0]] == [400, 413, 405]
        assert get(srv.port)[0] == 200


@needs_redis
@pytest.mark.parametrize("model", MODELS)
def test_redis_gone_is_503_and_the_server_keeps_serving(model):
    with redis_server() as r, netlab.serve(model, redis=r.address) as srv:
        assert http_call(srv.port, "POST", b"before")[0] == 201
        r.stop()
        for _ in range(2):           # the broken connection, then a refused reconnect
            st, _, body = http_call(srv.port)
            assert st == 503 and b"Redis" in body and body.count(b"\n") == 1
        assert get(srv.port)[0] == 200 and srv.alive


class GateProxy:
    """A TCP proxy in front of Redis that holds what the server sends while ``gate`` is shut,
    so a test knows for certain that a request is waiting on Redis (no sleep, no timing)."""

    def __init__(self, port):
        self.target, self.gate, self.held = port, threading.Event(), threading.Event()
        self.gate.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.socks += [client, upstream]
                threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
                threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        except OSError:
            return

    def _pipe(self, src, dst, gated):
        try:
            while data := src.recv(65536):
                if gated and not self.gate.is_set():
                    self.held.set()
                    self.gate.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.gate.set()
        for sock in self.socks:
            sock.close()


@needs_redis
@pytest.mark.parametrize("model", LOOPS)
def test_a_readiness_loop_serves_others_while_a_request_waits_on_redis(model, rds, clean):
    """A guestbook request parked on Redis (the proxy holds its commands) does not hold `/`, and
    the loop stays one thread: the Redis call is a state on the loop, not a blocked thread."""
    proxy = GateProxy(rds.port)
    try:
        with netlab.serve(model, redis=f"127.0.0.1:{proxy.port}") as srv:
            assert http_call(srv.port)[0] == 200             # connected to Redis through the proxy
            threads = psutil.Process(srv.pid).num_threads()
            proxy.gate.clear()
            answers = []
            parked = threading.Thread(target=lambda: answers.append(http_call(srv.port)[0]))
            parked.start()
            assert proxy.held.wait(10), "the guestbook request never reached Redis"
            assert get(srv.port)[0] == 200 and answers == []  # served while the other waits
            proxy.gate.set()
            parked.join(10)
            assert answers == [200]
            assert threads == 1 and psutil.Process(srv.pid).num_threads() == 1
    finally:
        proxy.close()


@needs_redis
def test_cli_serve_with_a_private_redis_leaves_nothing():
    proc = subprocess.Popen([sys.executable, "-m", "netlab", "serve", "epoll", "--redis"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        redis_line, listen_line = proc.stdout.readline(), proc.stdout.readline()
        redis_pid = int(redis_line.split("(pid ")[1].split(")")[0])
        port = int(listen_line.rstrip().rstrip("/").rsplit(":", 1)[1])
        assert http_call(port, "POST", b"from the CLI")[0] == 201
        st, _, body = http_call(port)
        assert st == 200 and body.startswith(b"visitor 1; 1 entry") and b"from the CLI" in body
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        proc.stdout.close()
    assert proc.returncode == 0
    from netlab.monitor import wait_until
    assert wait_until(lambda: not psutil.pid_exists(redis_pid) or
                      psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE, timeout=10)


@needs_redis
@needs_strace
@pytest.mark.parametrize("model", ["epoll", "poll", "select"])
def test_under_strace_the_redis_socket_is_in_the_loops_own_wait(model):
    """The kernel's own account: the socket connected to Redis is the fd the loop registers
    with epoll_ctl (or passes to poll/select), and one thread makes all those calls."""
    from netlab.experiments import ripping
    got = ripping.loop_wait(model)
    assert got["status"] == 200 and got["redis_fd"] is not None, got
    assert got["registered"] and got["threads"] == 1, got


@pytest.mark.parametrize("target, status", [("/fanout/0", 400), ("/fanout/65", 400),
                                            ("/fanout/x", 400), ("/fanout/", 400)])
def test_a_bad_fanout_is_400(target, status):
    assert parse_response(guestbook.commands(req("GET", target=target)))[0] == status


def test_fanout_asks_k_independent_calls():
    assert guestbook.commands(req("GET", target="/fanout/3")) == [
        ("INCR", "netlab:fanout:0"), ("INCR", "netlab:fanout:1"), ("INCR", "netlab:fanout:2")]
    assert parse_response(guestbook.commands(req("POST", b"x", target="/fanout/3")))[0] == 405
    st, _, body = parse_response(guestbook.answer(req("GET", target="/fanout/3"), [1, 1, 1]))
    assert st == 200 and body == b"3 calls answered\n"


@needs_redis
def test_the_delay_proxy_adds_its_delay_to_each_round_trip_and_leaves_nothing(rds):
    from netlab.peers import delay_proxy
    with delay_proxy(rds.port, 30) as slow:
        import redis
        c = redis.Redis(port=slow.port)
        c.ping()
        t0 = time.perf_counter()
        for _ in range(3):
            c.ping()
        serial = time.perf_counter() - t0
        c.close()
        pid, port = slow.pid, slow.port
    assert serial >= 3 * 0.030 * 0.95        # a floor: the proxy holds each call 30 ms
    assert proc_group(pid) == [] and not port_listening(port)


@needs_redis
def test_k_calls_cost_k_round_trips_blocking_and_one_on_an_event_loop():
    """The floor is certain (each serial call waits out the proxy's delay); the event loops'
    ceiling has a 4x margin over what they take (about one delay)."""
    from netlab.experiments import ripping
    df = ripping.fanout(ks=(8,), delay_ms=20, requests=3).set_index("style")
    assert df.loc["blocking", "median_ms"] >= 8 * 20 * 0.95
    for style in ("states on the loop", "async/await"):
        assert df.loc[style, "min_ms"] < 0.5 * 8 * 20, df


def test_the_three_styles_code_is_counted():
    from netlab.experiments import ripping
    df = ripping.code().set_index("style")
    assert list(df.index) == ["blocking", "states on the loop", "async/await"]
    assert df.loc["blocking", "stack_cuts"] == 0 < df.loc["async/await", "stack_cuts"]
    assert df.loc["states on the loop", "functions"] > df.loc["blocking", "functions"]
    assert (df["lines"] > 0).all()


@needs_redis
def test_netlab_post_stores_an_entry_and_fetch_reads_it(rds, clean):
    with netlab.serve("epoll", redis=rds.address) as srv:
        assert netlab.post(srv.url, "/guestbook", b"hello").status == 201
        reply = netlab.fetch(srv.url, "/guestbook")
    assert reply.status == 200 and reply.body.endswith(b"- hello\n")
    with pytest.raises(netlab.NetlabError, match="bytes"):
        netlab.post("http://127.0.0.1:9/", "/guestbook", "text")


def _students_server(listen_sock, app):
    """A student's server: a thread per connection, netlab's handler (so app.respond)."""
    import threading as _threading
    while True:
        conn, _ = listen_sock.accept()
        _threading.Thread(target=netlab.handle_connection, args=(conn, app), daemon=True).start()


@needs_redis
def test_a_students_server_serves_the_guestbook_through_app(rds, clean):
    with netlab.serve(_students_server, redis=rds.address) as srv:
        assert http_call(srv.port, "POST", b"mine")[0] == 201
        st, _, body = http_call(srv.port)
    assert st == 200 and body.endswith(b"- mine\n") and clean.llen(guestbook.ENTRIES) == 1


def test_ripping_plot_draws_a_line_per_style_and_both_laws():
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd
    from netlab.experiments import ripping
    rows = [dict(style=s, k=k, delay_ms=5.0, median_ms=k * 5.0 if s == "blocking" else 5.5)
            for s in ripping.STYLES for k in (1, 2, 4)]
    fig = ripping.plot(pd.DataFrame(rows))
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels[:3] == list(ripping.STYLES) and len(labels) == 5
    import matplotlib.pyplot as plt
    plt.close(fig)


@needs_redis
def test_a_loop_holds_one_redis_connection_and_a_pool_one_per_thread():
    from netlab.experiments import ripping
    assert ripping.redis_connections("epoll", clients=10, requests=100) == 1
    assert ripping.redis_connections("prethreaded", clients=10, requests=100) <= 8


def test_a_reply_nobody_asked_for_fails_the_waiting_calls_and_does_not_crash_the_loop():
    """Redis answering more than it was asked (two replies to one command) breaks the pairing of
    replies with requests: the connection is dropped and what waits gets a sentence; the loop's
    read must stop there, not read on from a socket that is gone."""
    from netlab.servers.backend import LoopBackend
    from netlab.servers.session import Timers
    listener = socket.create_server(("127.0.0.1", 0))
    watched, got = [], []
    backend = LoopBackend(f"127.0.0.1:{listener.getsockname()[1]}",
                          lambda fd, r, w: watched.append((fd, r, w)), Timers())
    try:
        backend.call([("PING",)], got.append)
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(10)
            backend.ready()                   # connected (the loop would say: writable): send
            assert peer.recv(100) == b"*1\r\n$4\r\nPING\r\n"
            peer.sendall(b"+PONG\r\n+EXTRA\r\n")
            from netlab.monitor import wait_until
            assert wait_until(lambda: backend.ready() or backend.sock is None, timeout=5)
        assert got == [[b"PONG"]] and backend.sock is None and watched[-1][1:] == (False, False)
    finally:
        backend.close()
        listener.close()
