"""serve(): start, announce, stop, reap, and prove nothing is left, for models and student code."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import netlab
from netlab.lifecycle import _proc_group
from conftest import get, port_listening


def student_loop(listen, app):
    """What a student writes: an iterative loop over the shared handler."""
    from netlab.servers._blocking import handle_connection
    while True:
        conn, _ = listen.accept()
        handle_connection(conn, app)


def crashing_loop(listen, app):
    raise ValueError("my server has a bug")


def stubborn_loop(listen, app):
    """Ignores SIGTERM, and so does a child it forks: only SIGKILL stops them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        while True:
            time.sleep(1)
    student_loop(listen, app)


def _gone(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_serve_gives_url_port_pid_and_stops_on_exit():
    with netlab.serve("epoll", backend_ms=1) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/"
        assert srv.alive and psutil.pid_exists(srv.pid)
        assert get(srv.port)[0] == 200
        assert "running" in repr(srv)
    assert not srv.alive and not port_listening(srv.port)
    assert "stopped" in repr(srv)


def test_a_students_function_runs_under_the_same_harness():
    with netlab.serve(student_loop) as srv:
        assert get(srv.port, "/bytes/10")[2] == b"x" * 10
    assert not _proc_group(srv.pid)


def test_a_closure_defined_at_runtime_is_shipped_by_value():
    greeting = b"hi from a closure\n"

    def loop(listen, app):
        while True:
            conn, _ = listen.accept()
            conn.recv(1000)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(greeting), greeting))
            conn.close()

    with netlab.serve(loop) as srv:
        assert get(srv.port)[2] == greeting


def test_a_crash_in_student_code_is_reported_on_stop():
    srv = netlab.serve(crashing_loop)
    deadline = time.monotonic() + 5
    while srv.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(netlab.ServerError, match="my server has a bug"):
        srv.stop()
    assert "Traceback" in srv.log()


def test_an_exception_in_the_block_stops_the_server_and_propagates():
    with pytest.raises(KeyboardInterrupt):
        with netlab.serve("forking") as srv:
            get(srv.port)
            raise KeyboardInterrupt       # what interrupting the notebook kernel does
    assert not _proc_group(srv.pid) and not port_listening(srv.port)


def test_sigkill_after_timeout_for_a_server_that_ignores_sigterm():
    srv = netlab.serve(stubborn_loop)
    get(srv.port)
    t0 = time.monotonic()
    srv.stop(timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert not _proc_group(srv.pid)


def test_a_forgotten_server_is_killed_when_garbage_collected():
    pid = netlab.serve("preforked", workers=2).pid
    gc.collect()
    assert _gone(pid)
    deadline = time.monotonic() + 5
    while _proc_group(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _proc_group(pid)


def test_the_server_dies_with_the_process_that_started_it():
    """A crashed or SIGKILLed notebook kernel must not leave servers holding ports."""
    script = textwrap.dedent("""
        import sys, time, netlab
        srv = netlab.serve("reuseport", workers=2)
        print(srv.pid, srv.port, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    pid, port = map(int, parent.stdout.readline().split())
    assert port_listening(port)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    assert _gone(pid)
    deadline = time.monotonic() + 5
    while (_proc_group(pid) or port_listening(port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _proc_group(pid) and not port_listening(port)


def test_port_in_use_is_one_sentence():
    with netlab.serve("epoll") as a:
        with pytest.raises(netlab.ServerError, match="already in use") as info:
            netlab.serve("poll", port=a.port)
        assert info.value.__cause__ is None and info.value.__context__ is None
        assert get(a.port)[0] == 200


@pytest.mark.parametrize("kwargs,match", [
    (dict(target="nope"), "unknown model 'nope'"),
    (dict(target="iterative", workers=4), "no workers option"),
    (dict(target="preforked", workers=0), "workers must be"),
    (dict(target="epoll", turbo=True), "no option 'turbo'"),
    (dict(target="epoll", backend_ms=-5), "zero or positive"),
    (dict(target="epoll", port=70000), "port must be"),
])
def test_bad_arguments_fail_fast_with_one_sentence(kwargs, match):
    before = psutil.Process().children()
    with pytest.raises(netlab.NetlabError, match=match):
        netlab.serve(**kwargs)
    assert psutil.Process().children() == before        # nothing was started


def test_an_unpicklable_function_gets_a_clear_error():
    import threading
    lock = threading.Lock()

    def loop(listen, app):
        with lock:
            pass

    with pytest.raises(netlab.ServerError, match="cannot send 'loop'"):
        netlab.serve(loop)


def test_models_registry_lists_eleven_in_course_order():
    names = [m.name for m in netlab.models()]
    assert names == ["iterative", "forking", "preforked", "threaded", "prethreaded", "select",
                     "poll", "epoll", "reactor", "asyncio", "reuseport"]
    if sys.platform.startswith("linux"):
        assert all(m.available and m.reason == "" for m in netlab.models())


def test_data_reference_table_has_its_source_and_the_tlpi_shape():
    import pandas as pd
    from pathlib import Path
    path = Path(__file__).parent.parent / "data" / "tlpi-table-63-9.csv"
    assert "The Linux Programming Interface" in path.read_text()
    df = pd.read_csv(path, comment="#")
    assert list(df.fds) == [10, 100, 1000, 10000]
    assert df.poll_s.is_monotonic_increasing and df.epoll_s.max() < 1


def test_an_unavailable_model_is_listed_with_its_reason_and_refused(monkeypatch):
    """What macOS sees: no epoll. The model is listed, marked, and refused with the reason."""
    from netlab import servers
    monkeypatch.setitem(servers.FEATURES, "epoll", (False, "needs epoll, which is Linux-only"))
    epoll = netlab.model("epoll")
    assert not epoll.available and "Linux-only" in epoll.reason
    assert "epoll" in [m.name for m in netlab.models()]
    assert "epoll" not in [m.name for m in netlab.models(available_only=True)]
    with pytest.raises(netlab.NetlabError, match="not available here: needs epoll"):
        netlab.serve("epoll")
    table = netlab.env.models_table()
    assert table.set_index("model").loc["epoll", "why not"].startswith("needs epoll")
