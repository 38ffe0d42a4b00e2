"""Unit tests for the workload knobs, burn_cpu and the App every server model serves.

No sockets: requests come from the real parser, responses are checked as bytes.
"""

from __future__ import annotations

import math
import time

import pytest

from netlab import http, workload
from netlab.http import MAX_BYTES_ROUTE, RequestParser
from netlab.workload import App, Workload, burn_cpu

from conftest import parse_response


# ---------------------------------------------------------------- helpers

def request(method: str = "GET", target: str = "/", version: str = "HTTP/1.1",
            headers: str = "") -> http.Request:
    (req,) = RequestParser().feed(f"{method} {target} {version}\r\n{headers}\r\n".encode())
    return req


def ask(app: App, method: str = "GET", target: str = "/", **kw) -> tuple:
    """Respond to one request; check the framing every response must have."""
    status, headers, body = parse_response(app.respond(request(method, target, **kw)))
    if method == "HEAD":
        assert body == b"", "a HEAD answer must have no body"
    else:
        assert int(headers["content-length"]) == len(body)
    return status, headers, body


@pytest.fixture
def app() -> App:
    return App()


# ---------------------------------------------------------------- routes

def test_root_returns_the_greeting(app):
    status, headers, body = ask(app)
    assert status == 200
    assert body == http.HELLO
    assert headers["content-length"] == str(len(http.HELLO))
    assert headers["content-type"] == "text/plain"


@pytest.mark.parametrize("n", [0, 1, 1000, 65536])
def test_bytes_route_returns_exactly_n_bytes(app, n):
    status, headers, body = ask(app, target=f"/bytes/{n}")
    assert status == 200
    assert len(body) == n and headers["content-length"] == str(n)
    assert body == b"x" * n


def test_bytes_route_at_its_cap(app):
    status, headers, _ = ask(app, "HEAD", f"/bytes/{MAX_BYTES_ROUTE}")
    assert status == 200 and headers["content-length"] == str(MAX_BYTES_ROUTE)
    assert ask(app, target=f"/bytes/{MAX_BYTES_ROUTE + 1}")[0] == 400


def test_bytes_route_zero_padded(app):
    assert ask(app, target="/bytes/007")[2] == b"x" * 7


@pytest.mark.parametrize("n", ["abc", "99999999999", "-1", "", "1.5", "+3", "0x10", "1e3",
                               "%31", "\u00b2", "\u0663", "5/6", "9" * 5000,
                               "0" * 4400 + "99999999"])
def test_bytes_route_bad_n_is_400(app, n):
    """Includes a 5000-digit N (regression: int() raised past 4300 digits)."""
    target = "/bytes/" + n
    try:
        target.encode("ascii")
    except UnicodeEncodeError:
        # the parser refuses non-ASCII targets; hand App a Request directly
        req = http.Request("GET", target, "HTTP/1.1", {}, True)
        status, _, _ = parse_response(app.respond(req))
    else:
        status = ask(app, target=target)[0]
    assert status == 400


def test_bytes_route_padded_past_the_int_digit_limit_still_works(app):
    assert ask(app, target="/bytes/" + "0" * 5000 + "12")[2] == b"x" * 12


@pytest.mark.parametrize("target", ["/nope", "/bytes", "/Bytes/5", "/index.html", "//",
                                    "*", "http://h/", "/a\x00b"])
def test_unknown_path_is_404(app, target):
    req = http.Request("GET", target, "HTTP/1.1", {}, True)
    status, headers, body = parse_response(app.respond(req))
    assert status == 404 and int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get"])
def test_other_methods_are_405_with_allow(app, method):
    status, headers, _ = ask(app, method, "/")
    assert status == 405
    allowed = {m.strip() for m in headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD"}


@pytest.mark.parametrize("target", ["/", "/bytes/0", "/bytes/10", "/bytes/70000", "/nope",
                                    "/bytes/abc", "/bytes/" + "9" * 5000])
def test_head_has_gets_length_and_no_body(app, target):
    """Includes the 400 of /bytes/abc (regression: its HEAD answer carried a body)."""
    get_status, get_headers, _ = ask(app, "GET", target)
    head_raw = app.respond(request("HEAD", target))
    head_status, head_headers, head_body = parse_response(head_raw)
    assert head_status == get_status
    assert head_headers == get_headers
    assert head_body == b""
    assert head_raw == app.respond(request("GET", target))[:len(head_raw)]


@pytest.mark.parametrize("target,size", [("/?x=1", len(http.HELLO)), ("/?", len(http.HELLO)),
                                         ("/bytes/5?x=1&y=2", 5), ("/bytes/5?/bytes/9", 5)])
def test_query_string_is_ignored_for_routing(app, target, size):
    status, _, body = ask(app, target=target)
    assert status == 200 and len(body) == size


def test_query_string_does_not_rescue_a_bad_path(app):
    assert ask(app, target="/nope?/")[0] == 404


@pytest.mark.parametrize("size", [0, 1, 5000, 1 << 20])
def test_body_bytes_knob_sets_the_size_of_root(size):
    app = App(Workload(body_bytes=size))
    status, headers, body = ask(app)
    assert status == 200 and body == b"x" * size
    assert ask(app, "HEAD")[1]["content-length"] == str(size)
    assert len(ask(app, target="/bytes/3")[2]) == 3       # /bytes/N is unaffected


@pytest.mark.parametrize("target", ["/", "/bytes/3", "/bytes/abc", "/nope"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("version,conn,keep_alive", [
    ("HTTP/1.1", "", True), ("HTTP/1.1", "Connection: close\r\n", False),
    ("HTTP/1.0", "", False), ("HTTP/1.0", "Connection: keep-alive\r\n", True),
])
def test_connection_header_matches_keep_alive(app, target, method, version, conn, keep_alive):
    req = request(method, target, version, conn)
    assert req.keep_alive is keep_alive
    headers = parse_response(app.respond(req))[1]
    assert headers["connection"] == ("keep-alive" if keep_alive else "close")


def test_parser_errors_are_answered_with_their_status_and_close(app):
    for raw, status in [(b"BAD\r\n\r\n", 400), (b"GET / HTTP/2.0\r\n\r\n", 505),
                        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
                        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, 431)]:
        (req,) = RequestParser().feed(raw)
        st, headers, body = parse_response(app.respond(req))
        assert st == status
        assert headers["connection"] == "close"
        assert body == (req.detail + "\n").encode()


def test_pipelined_stream_end_to_end(app):
    p = app.new_parser()
    raw = (b"GET / HTTP/1.1\r\n\r\n"
           b"HEAD /bytes/4 HTTP/1.1\r\n\r\n"
           b"GET /bytes/4 HTTP/1.1\r\nConnection: close\r\n\r\n")
    answers = [parse_response(app.respond(r)) for r in p.feed(raw)]
    assert [(s, h["connection"], b) for s, h, b in answers] == [
        (200, "keep-alive", http.HELLO), (200, "keep-alive", b""), (200, "close", b"xxxx")]


def test_new_parser_is_fresh_each_time(app):
    a, b = app.new_parser(), app.new_parser()
    assert a is not b
    a.feed(b"GET / HTTP/1.1\r\n")
    assert a.buffered and not b.buffered


def test_respond_does_not_mutate_shared_state(app):
    first = app.respond(request())
    for _ in range(3):
        app.respond(request("HEAD"))
        app.respond(request(target="/bytes/9"))
    assert app.respond(request()) == first


# ---------------------------------------------------------------- Workload

def test_workload_defaults():
    w = Workload()
    assert (w.backend_ms, w.cpu_us, w.body_bytes, w.trace) == (0.0, 0.0, None, False)
    assert w.as_dict() == {"backend_ms": 0.0, "cpu_us": 0.0, "body_bytes": None, "trace": False,
                           "redis": None}
    assert Workload(**Workload(5, 7, 9).as_dict()) == Workload(5, 7, 9)


def test_workload_is_frozen():
    with pytest.raises(AttributeError):
        Workload().cpu_us = 5


def test_app_backend_seconds():
    assert App(Workload(backend_ms=250)).backend_s == pytest.approx(0.25)
    assert App().backend_s == 0


@pytest.mark.parametrize("kw", [
    {"backend_ms": -1}, {"cpu_us": -1}, {"backend_ms": -0.001}, {"cpu_us": -1e-9},
    {"body_bytes": -1}, {"body_bytes": MAX_BYTES_ROUTE + 1},
    # NaN is not "< 0", and inf overflows int(): both used to get through
    {"backend_ms": math.nan}, {"cpu_us": math.nan}, {"cpu_us": math.inf},
    {"backend_ms": math.inf},
])
def test_workload_rejects_bad_knobs(kw):
    with pytest.raises(ValueError):
        Workload(**kw)


@pytest.mark.parametrize("kw", [{"backend_ms": 0}, {"cpu_us": 0}, {"backend_ms": 0.5},
                                {"body_bytes": 0}, {"body_bytes": MAX_BYTES_ROUTE}])
def test_workload_accepts_edge_values(kw):
    Workload(**kw)


def test_cpu_work_is_done_per_request_but_not_for_errors(monkeypatch):
    calls = []
    monkeypatch.setattr(workload, "burn_cpu", calls.append)
    app = App(Workload(cpu_us=123))
    app.respond(request())
    app.respond(request("POST"))
    assert calls == [123, 123]
    (bad,) = RequestParser().feed(b"BAD\r\n\r\n")
    app.respond(bad)
    assert calls == [123, 123]
    App().respond(request())
    assert calls == [123, 123]


# ---------------------------------------------------------------- burn_cpu

def test_burn_cpu_consumes_cpu_time():
    """An invariant, not a timing target: 50 ms of nominal work is well over 10 ms of CPU."""
    burn_cpu(1)                         # calibrate outside the measurement
    t0 = time.thread_time()
    burn_cpu(50_000)
    assert time.thread_time() - t0 >= 0.010


@pytest.mark.parametrize("us", [0, 0.0, -5])
def test_burn_cpu_of_nothing_returns_immediately(monkeypatch, us):
    """No spinning and no calibration: checked by construction, not by a clock."""
    def boom(n):
        raise AssertionError("burn_cpu spun for a zero budget")
    monkeypatch.setattr(workload, "_spin", boom)
    monkeypatch.setattr(workload, "_iterations_per_us", None)
    burn_cpu(us)
    assert workload._iterations_per_us is None


def test_burn_cpu_calibrates_once(monkeypatch):
    """The first call calibrates (five 20,000-iteration runs); later calls only spin steps. How
    many steps a call takes depends on the thread clock (a step can take less CPU than the
    calibration promised), so count the calibration runs, not the steps."""
    spins = []
    real = workload._spin
    monkeypatch.setattr(workload, "_spin", lambda n: spins.append(n) or real(n))
    monkeypatch.setattr(workload, "_iterations_per_us", None)
    burn_cpu(10)
    calibrated = workload._iterations_per_us
    assert spins[:5] == [20_000] * 5 and calibrated > 0
    step = max(1, int(10 * calibrated))
    assert spins[5:] and set(spins[5:]) == {step}
    del spins[:]
    burn_cpu(10)
    assert workload._iterations_per_us == calibrated
    assert spins and set(spins) == {step}, "a second call calibrated again"


def test_burn_cpu_uses_the_cpu_it_is_asked_for_even_when_miscalibrated(monkeypatch):
    """The thread's CPU clock decides, not the calibration: a calibration 3x off (taken while a
    neighbour shared the core) must not make 5 ms of work take 1.7 ms or 15 ms."""
    burn_cpu(1)
    true = workload.calibrate()
    for factor in (1 / 3, 3):
        monkeypatch.setattr(workload, "_iterations_per_us", true * factor)
        assert workload.calibrate() == pytest.approx(true * factor)
        t0 = time.thread_time()
        for _ in range(4):
            burn_cpu(5000)
        per_call = (time.thread_time() - t0) / 4
        assert 0.005 <= per_call < 0.0075, (factor, per_call)
