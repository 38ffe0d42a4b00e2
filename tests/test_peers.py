"""netlab.loadtools (the wrk/ab adapters, on recorded outputs and live) and netlab.peers."""

from __future__ import annotations

import gc
import importlib
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netlab
import netlab.supervisor
from netlab import loadtools, peers, sockets
from netlab.http import HELLO
from netlab.supervisor import proc_group
from netlab.results import ERROR_KINDS, LoadResult

from conftest import LINUX, port_listening

DATA = Path(__file__).parent / "data"
tokio_peer = importlib.import_module("netlab.peers.tokio")   # the module (peers.tokio is the factory)
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not LINUX, reason="peers and load tools are tested on Linux")


def needs(tool):
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed")


def peer_params():
    for name, spec in peers.PEERS.items():
        marks = [needs(spec.tool)] if spec.tool else []
        if name == "uvloop":
            why = dict((n, r) for n, _, r in peers.available_peers())["uvloop"]
            marks = [pytest.mark.skipif(bool(why), reason=why or "-")]
        if name.startswith("tokio"):
            why = tokio_peer.unavailable()
            marks = [pytest.mark.skipif(bool(why), reason=why or "-")]
        if name == "java":
            marks.append(pytest.mark.skipif(
                shutil.which("javac") is None and peers.java_classes() is None,
                reason="javac is not installed"))
        yield pytest.param(name, marks=marks, id=name)


def text(name):
    return (DATA / name).read_text()


def nan(x):
    return isinstance(x, float) and math.isnan(x)


def gone(pgid, port, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc_group(pgid) and not port_listening(port):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# parse_wrk / parse_ab on recorded outputs: the numbers exactly as printed
# ---------------------------------------------------------------------------------------------

def test_parse_wrk_keepalive_with_latency_distribution():
    r = loadtools.parse_wrk(text("wrk-keepalive-latency.txt"))
    assert isinstance(r, LoadResult)
    assert (r.tool, r.url, r.mode, r.concurrency) == ("wrk", "http://127.0.0.1:8181/",
                                                      "keepalive", 10)
    assert r.requests == 31290 and r.error_count == 0
    assert set(r.errors) == set(ERROR_KINDS)
    assert r.duration_s == pytest.approx(31290 / 15625.14)
    assert r.rps == pytest.approx(15625.14)
    assert r.mean_ms == pytest.approx(0.79646)
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == pytest.approx((0.605, 1.46, 4.57))
    assert r.max_ms == pytest.approx(8.99)
    assert nan(r.p999_ms)
    assert r.client_cores == 1


def test_parse_wrk_close_without_latency_has_no_percentiles():
    r = loadtools.parse_wrk(text("wrk-close.txt"), mode="close")
    assert (r.mode, r.concurrency, r.client_cores) == ("close", 10, 2)
    assert r.requests == 11576 and r.error_count == 0
    assert r.rps == pytest.approx(5746.96)
    assert r.mean_ms == pytest.approx(1.71) and r.max_ms == pytest.approx(12.93)
    assert all(nan(x) for x in (r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms))


def test_parse_wrk_errors_map_onto_netlab_kinds():
    r = loadtools.parse_wrk(text("wrk-errors.txt"))
    # 8340 completed, 2780 of them 404: those are bad_status, not requests
    assert r.requests == 8340 - 2780
    assert r.errors["bad_status"] == 2780
    assert r.errors["short_read"] == 1390            # wrk's read errors (the resets)
    assert r.error_count == 2780 + 1390
    assert r.params["wrk_errors"] == {"connect": 0, "read": 1390, "write": 0, "status": 2780,
                                      "timeout": 0}
    assert r.p50_ms == pytest.approx(0.538) and r.p99_ms == pytest.approx(8.47)
    assert r.rps == pytest.approx(5560 / (8340 / 8308.23))


def test_parse_ab_keepalive_text_and_percentile_file():
    out = text("ab-keepalive.txt")
    r = loadtools.parse_ab(out)
    assert (r.tool, r.url, r.mode, r.concurrency) == ("ab", "http://127.0.0.1:8181/",
                                                      "keepalive", 10)
    assert r.requests == 1000 and r.error_count == 0
    assert r.params["keepalive_requests"] == 1000
    assert r.rps == pytest.approx(16321.73)
    assert r.mean_ms == pytest.approx(0.613)
    # the text table: whole milliseconds
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (1.0, 1.0, 1.0, 1.0)
    assert nan(r.p999_ms)
    # the -e file refines them
    r = loadtools.parse_ab(out, percentiles_csv=text("ab-keepalive.csv"))
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (0.595, 0.708, 1.107, 1.440)
    assert nan(r.p999_ms)


def test_parse_ab_close():
    r = loadtools.parse_ab(text("ab-close.txt"))
    assert r.mode == "close" and r.params["keepalive_requests"] is None
    assert r.requests == 500 and r.error_count == 0
    assert r.duration_s == pytest.approx(500 / 2725.97)
    assert r.mean_ms == pytest.approx(3.668)
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (3.0, 8.0, 10.0, 10.0)


def test_parse_ab_counts_each_failure_once():
    # 300 complete: 85 were 404s, 43 were reset; ab also counts those 128 as Length failures
    # and the resets again as Exceptions (see tests/data/README.md)
    r = loadtools.parse_ab(text("ab-errors.txt"))
    assert r.requests == 172
    assert r.errors == {"refused": 0, "reset": 43, "timeout": 0, "bad_status": 85,
                        "short_read": 0, "other": 0}
    assert r.params["ab_failed"]["length"] == 128


@pytest.mark.parametrize("parse", [loadtools.parse_wrk, loadtools.parse_ab])
def test_parsers_refuse_other_text(parse):
    with pytest.raises(netlab.NetlabError, match="not (wrk|ab)'s output"):
        parse("Hello from netlab!\n")


# ---------------------------------------------------------------------------------------------
# Arguments, safety and missing tools: no tool needed for these
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: loadtools.wrk("http://10.1.2.3:80/"),
    lambda: loadtools.wrk("http://example.com/"),
    lambda: loadtools.ab("http://192.168.1.1/", requests=10),
], ids=["wrk-ip", "wrk-name", "ab-ip"])
def test_non_loopback_targets_are_refused(call):
    with pytest.raises(netlab.NetlabError, match="loopback targets only") as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(duration=0), "duration"),
    (dict(duration=601), "duration"),
    (dict(concurrency=0), "concurrency"),
    (dict(concurrency=10, threads=11), "threads"),
    (dict(timeout=-1), "timeout"),
    (dict(cpus=[10_000]), "cpus"),
    (dict(cpus=[]), "cpus"),
])
def test_wrk_bad_arguments_are_one_sentence(kwargs, match):
    with pytest.raises(netlab.NetlabError, match=match) as e:
        loadtools.wrk("http://127.0.0.1:9/", **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("url, kwargs, match", [
    ("http://127.0.0.1:9/", dict(requests=10_000_001), "requests"),
    ("http://127.0.0.1:9/", dict(requests=0), "requests"),
    ("http://127.0.0.1:9/", dict(requests=10, concurrency=11), "concurrency"),
    ("127.0.0.1:9", {}, "URL like"),
    ("ftp://127.0.0.1/", {}, "URL like"),
    ("http://127.0.0.1:99999/", {}, "URL like"),
])
def test_ab_bad_arguments_are_one_sentence(url, kwargs, match):
    with pytest.raises(netlab.NetlabError, match=match):
        loadtools.ab(url, **kwargs)


def test_missing_tools_say_how_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(netlab.NetlabError) as e:
        loadtools.wrk("http://127.0.0.1:9/")
    assert str(e.value) == ("wrk is not installed: apt-get install wrk "
                            "(netlab.load.run measures without it)")
    with pytest.raises(netlab.NetlabError, match=r"^ab is not installed: apt-get install "
                       r"apache2-utils \(netlab.load.run measures without it\)$"):
        loadtools.ab("http://127.0.0.1:9/")
    for name, tool in (("nginx", "nginx"), ("node", "node"), ("java", "java")):
        with pytest.raises(netlab.NetlabError, match=rf"^{tool} is not installed: apt-get "):
            peers.PEERS[name].factory()
    rows = {name: (ok, why) for name, ok, why in peers.available_peers()}
    assert rows["http.server"] == (True, "")
    assert rows["nginx"] == (False, "nginx is not installed: apt-get install nginx")
    assert not rows["node"][0] and not rows["java"][0]


def test_missing_tool_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(netlab.NetlabError, match="^wrk is not installed"):
        loadtools.wrk("http://127.0.0.1:9/")


def test_peer_table():
    assert set(peers.PEERS) == {"nginx", "node", "java", "tokio", "tokio-current", "uvloop",
                                "http.server"}
    for name, (factory, tool, description) in peers.PEERS.items():
        assert callable(factory) and description
        assert tool is None or tool in netlab.env.TOOLS
    assert [row[0] for row in peers.available_peers()] == list(peers.PEERS)


def test_peer_files_are_package_data():
    for name in ("hello.mjs", "NioServer.java", "nginx.conf.template"):
        assert (peers.PEERS_DIR / name).is_file()
    assert loadtools.WRK_SCRIPT.is_file() and netlab.supervisor.WATCHDOG.is_file()
    text = (Path(netlab.__file__).parent.parent / "pyproject.toml").read_text()
    line = text.split("[tool.setuptools.package-data]", 1)[1].split("\n")[1]    # tomllib: 3.11
    patterns = line.split("=", 1)[1].strip(" []").replace('"', "").split(", ")
    sources = [peers.PEERS_DIR / "tokio_src" / "Cargo.toml",
               *(peers.PEERS_DIR / "tokio_src" / "src" / "bin").glob("*.rs"),
               *(Path(netlab.__file__).parent / "clients").glob("*.mjs")]
    assert len(sources) == 6
    for path in (loadtools.WRK_SCRIPT, peers.PEERS_DIR / "hello.mjs", *sources):
        rel = path.relative_to(Path(netlab.__file__).parent)
        assert any(rel.match(p) for p in patterns), f"{rel} is not package data"
    # the peers answer with netlab's body, spelled out in their own language
    assert HELLO == b"Hello from netlab!\n"
    assert "'Hello from netlab!\\n'" in (peers.PEERS_DIR / "hello.mjs").read_text()
    assert '"Hello from netlab!\\n"' in (peers.PEERS_DIR / "NioServer.java").read_text()
    assert 'b"Hello from netlab!\\n"' in (peers.PEERS_DIR / "tokio_src/src/bin/hello.rs").read_text()


# ---------------------------------------------------------------------------------------------
# Peers: start, answer, stop, leave nothing
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(peer_params()))
def test_peer_serves_and_leaves_nothing(name):
    with peers.PEERS[name].factory() as srv:
        assert srv.model == name and srv.alive
        assert srv.url == f"http://127.0.0.1:{srv.port}/" and srv.host == "127.0.0.1"
        reply = netlab.fetch(srv.url)
        assert reply.status == 200 and reply.body == HELLO
        assert srv.pid in proc_group(srv.pid)
        # /proc counts CPU in 10 ms ticks, and a fast nginx serves 1,000 connections in about
        # that: load it until the count moves
        before = srv.cpu_seconds()
        for _ in range(10):
            assert netlab.load.run(srv.url, 4, requests=1000, timeout=10).requests == 1000
            if srv.cpu_seconds() > before:
                break
        assert srv.cpu_seconds() > before, "10,000 requests later, the peer used no CPU"
        pid, port = srv.pid, srv.port
    assert not srv.alive
    assert proc_group(pid) == []
    assert not port_listening(port)
    srv.stop()                      # twice is fine


@pytest.mark.parametrize("name", list(peer_params()))
def test_abandoned_peer_is_stopped(name):
    srv = peers.PEERS[name].factory()
    pid, port = srv.pid, srv.port
    assert port_listening(port)
    del srv
    gc.collect()
    assert gone(pid, port)


def test_peer_is_stopped_when_the_harness_dies():
    """A harness killed outright (no finalizers) still takes its peers down: the watchdog."""
    code = ("import os, signal; from netlab import peers\n"
            "p = peers.http_server()\n"
            "print(p.pid, p.port, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env=env)
    pid, port = map(int, out.stdout.split())
    assert gone(pid, port, timeout=8), f"http.server {pid} survived its harness"


@needs("nginx")
def test_nginx_workers_body_and_port():
    with peers.nginx(workers=2, body=5000) as srv:
        assert len(proc_group(srv.pid)) == 3           # master and two workers
        reply = netlab.fetch(srv.url, "/any/path")
        assert reply.status == 200 and reply.body == b"x" * 5000
    with peers.nginx(body='say "$1" \\ done\n') as srv:
        assert netlab.fetch(srv.url).body == b'say "$1" \\ done\n'
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(netlab.NetlabError, match="already in use"):
            peers.nginx(port=busy.getsockname()[1])
    finally:
        busy.close()


@needs("java")
@pytest.mark.skipif(shutil.which("javac") is None and peers.java_classes() is None,
                    reason="javac is not installed")
def test_java_pipelining_partial_writes_and_close():
    with peers.java() as srv:
        n = 3000                    # ~300 KB of answers: more than a socket buffer takes at once
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * n)
            time.sleep(0.3)         # let the server fill the socket and wait on OP_WRITE
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")          # HTTP/1.0: then it closes
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK\r\n") == n + 1
        assert data.count(HELLO) == n + 1
        assert data.endswith(b"Connection: close\r\n\r\n" + HELLO)


# ---------------------------------------------------------------------------------------------
# wrk and ab, live, against a netlab server
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def epoll_server():
    with netlab.serve("epoll") as srv:
        yield srv


def check_clean(r: LoadResult, tool, mode, wall):
    """``wall``: seconds the test saw the tool run; the tool's own window lies inside it."""
    assert r.tool == tool and r.mode == mode and r.concurrency == 10
    assert r.requests > 0 and r.error_count == 0, r.errors
    assert 0 < r.duration_s <= wall and r.rps >= r.requests / wall
    assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert r.client_cpu_s > 0 and r.client_procs == 1


@needs("wrk")
@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "close"])
def test_wrk_against_netlab(epoll_server, keepalive):
    before = os.sched_getaffinity(0)
    cpus = [max(before)] if keepalive else None
    t0 = time.monotonic()
    r = loadtools.wrk(epoll_server.url, concurrency=10, duration=1, keepalive=keepalive,
                     cpus=cpus)
    check_clean(r, "wrk", "keepalive" if keepalive else "close", time.monotonic() - t0)
    assert r.duration_s >= 0.9                          # wrk ran for the -d it was given
    assert r.p99_ms <= r.p999_ms <= r.max_ms            # exact, from wrk's histogram
    assert r.client_cores == 1 and r.params["cpus"] == cpus
    assert os.sched_getaffinity(0) == before            # pinning wrk did not pin us


@needs("ab")
@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "close"])
def test_ab_against_netlab(epoll_server, keepalive):
    url = epoll_server.url.rstrip("/")                  # ab needs a path: the adapter adds it
    t0 = time.monotonic()
    r = loadtools.ab(url, requests=200, concurrency=10, keepalive=keepalive)
    check_clean(r, "ab", "keepalive" if keepalive else "close", time.monotonic() - t0)
    assert r.requests == 200 and r.params["complete"] == 200      # ab's -n: a count, exactly
    assert r.params["keepalive_requests"] == (200 if keepalive else None)
    assert nan(r.p999_ms)


@pytest.mark.parametrize("tool,kwargs", [("wrk", dict(duration=1)), ("ab", dict(requests=10))])
def test_a_load_tool_finds_nothing_listening(tool, kwargs):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    port = sockets.free_port()
    with pytest.raises(netlab.NetlabError, match="nothing listening"):
        getattr(loadtools, tool)(f"http://127.0.0.1:{port}/", **kwargs)


@needs("ab")
def test_a_load_tool_runs_under_a_watchdog(epoll_server, monkeypatch):
    """A harness killed mid-load must not leave ab (or wrk) loading for minutes."""
    calls, real_watch, real_dismiss = [], loadtools.watch, loadtools.dismiss

    def watch(pid, paths=()):
        calls.append("watch")
        return real_watch(pid, paths)

    def dismiss(watchdog):
        calls.append("dismiss" if watchdog is not None else "dismiss nothing")
        real_dismiss(watchdog)

    monkeypatch.setattr(loadtools, "watch", watch)
    monkeypatch.setattr(loadtools, "dismiss", dismiss)
    assert loadtools.ab(epoll_server.url, requests=20, concurrency=2).requests == 20
    assert calls == ["watch", "dismiss"]


def test_a_peer_started_twice_says_so_and_keeps_serving():
    with peers.http_server() as p:
        with pytest.raises(netlab.ServerError, match="^the http.server peer was already started"):
            p.start()
        assert p.alive and netlab.fetch(p.url).status == 200


def _waiting_in(pid) -> dict:
    """thread name -> what the kernel says it waits in (wchan), for each thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[f"{(task / 'comm').read_text().strip()}/{task.name}"] = (task / "wchan").read_text().strip()
        except OSError:
            pass
    return out


@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.skipif(bool(tokio_peer.unavailable()), reason=tokio_peer.unavailable() or "-")
def test_tokio_multi_thread_has_a_worker_per_core_and_current_thread_one_thread():
    """#[tokio::main]'s runtime: a worker per core, sharing one I/O driver, so one of them at a
    time waits in epoll_wait and the others park (futex); current_thread: one thread, in
    epoll_wait."""
    from netlab.monitor import wait_until
    cores = os.cpu_count()
    with peers.tokio() as multi:
        assert netlab.fetch(multi.url).body == HELLO
        assert wait_until(lambda: list(_waiting_in(multi.pid).values()).count("do_epoll_wait") == 1,
                          timeout=5), _waiting_in(multi.pid)
        workers = [k for k in _waiting_in(multi.pid) if k.startswith("tokio-runtime-w")]
        assert len(workers) == cores
    with peers.tokio(flavor="current") as current:
        assert netlab.fetch(current.url).body == HELLO
        assert wait_until(lambda: list(_waiting_in(current.pid).values()) == ["do_epoll_wait"],
                          timeout=5), _waiting_in(current.pid)
    with pytest.raises(netlab.NetlabError, match="'multi' or 'current'"):
        peers.tokio(flavor="green")


def test_uvloop_is_an_option_of_the_asyncio_model_and_says_when_it_is_missing(monkeypatch):
    with pytest.raises(netlab.NetlabError, match="True or False"):
        netlab.Server("asyncio", uvloop="yes")
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real(name, *a))
    with pytest.raises(netlab.NetlabError, match="pip install uvloop"):
        netlab.Server("asyncio", uvloop=True)
    assert "pip install uvloop" in dict((n, r) for n, _, r in peers.available_peers())["uvloop"]
