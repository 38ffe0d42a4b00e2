"""Nothing of netlab's stays in the temp folder: not a server's usage file, not a peer's workdir,
however the harness ends (a ``with`` block, a failed start, garbage collection, SIGKILL).

A student's notebook kernel is restarted, crashes or is killed many times a term; each left
file used to stay in /tmp for good. Each test gets a temp folder of its own (TMPDIR, which the
harness scripts and the servers inherit), so other runs on the machine cannot interfere.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import netlab
from netlab import peers
from netlab.supervisor import proc_group
from netlab.monitor import wait_until

PREFIX = "netlab-"


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """A private temp folder, for this process (tempfile caches it) and its children."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(d)
    return d


def netlab_entries(d) -> list:
    return sorted(n for n in os.listdir(d) if n.startswith(PREFIX))


STUBBORN = """
def stubborn_loop(listen, app):     # ignores SIGTERM: only the watchdog's SIGKILL stops it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        conn, _ = listen.accept()
        netlab.handle_connection(conn, app)
"""


def run_and_kill_owner(script: str) -> tuple:
    """Run ``script`` as the harness; it prints a pid and then what it made in the temp folder.
    SIGKILL it (no finalizer, no atexit runs) once it has printed; (pid, the printed paths)."""
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                             stdout=subprocess.PIPE, text=True)
    try:
        words = owner.stdout.readline().split()
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    assert words, "the harness script printed nothing"
    return int(words[0]), words[1:]


def test_with_block_leaves_no_usage_file(tmp):
    with netlab.serve("epoll") as srv:
        assert os.path.dirname(srv.stats_path) == str(tmp)
        assert netlab_entries(tmp) == [os.path.basename(srv.stats_path)]
    assert netlab_entries(tmp) == []


def test_a_failed_start_leaves_no_usage_file(tmp):
    import threading
    lock = threading.Lock()

    def loop(listen, app):          # cannot be sent to the server: the start fails
        with lock:
            pass

    with pytest.raises(netlab.ServerError, match="cannot send"):
        netlab.serve(loop)
    assert netlab_entries(tmp) == []


@pytest.mark.parametrize("target", ["epoll", "stubborn"])
def test_a_server_whose_harness_is_killed_removes_its_usage_file(tmp, target):
    """The harness cannot remove it then: the server does, on its way out, or (a server that
    ignores SIGTERM) its watchdog does, once the SIGKILL has ended it."""
    start = "netlab.serve('epoll')" if target == "epoll" else "netlab.serve(stubborn_loop)"
    pid, (path,) = run_and_kill_owner("import signal, time, netlab\n" + STUBBORN +
                                      f"srv = {start}\n"
                                      "print(srv.pid, srv.stats_path, flush=True)\n"
                                      "time.sleep(60)\n")
    assert os.path.dirname(path) == str(tmp)
    assert wait_until(lambda: not proc_group(pid), timeout=15), "the server outlived its harness"
    assert wait_until(lambda: not netlab_entries(tmp), timeout=10), netlab_entries(tmp)


def test_a_peer_whose_harness_is_killed_leaves_no_workdir(tmp):
    """The watchdog that stops the peer removes its workdir too."""
    pid, (workdir,) = run_and_kill_owner("""
        from netlab import peers
        p = peers.http_server()
        print(p.pid, p.workdir, flush=True)
        import time; time.sleep(60)
    """)
    assert os.path.dirname(workdir) == str(tmp)
    assert wait_until(lambda: not proc_group(pid), timeout=15), "the peer outlived its harness"
    assert wait_until(lambda: not netlab_entries(tmp), timeout=10), netlab_entries(tmp)


def test_a_stopped_peer_leaves_no_workdir(tmp):
    with peers.http_server() as p:
        assert netlab_entries(tmp) == [os.path.basename(p.workdir)]
    assert netlab_entries(tmp) == []


@pytest.mark.filterwarnings("error::ResourceWarning")
def test_an_abandoned_peer_removes_its_workdir_itself(tmp):
    """Its finalizer removes it once the peer is dead, not TemporaryDirectory's last resort
    (which warns "Implicitly cleaning up", and may run before the peer is killed)."""
    p = peers.http_server()
    pid = p.pid
    del p
    gc.collect()
    assert not proc_group(pid)
    assert netlab_entries(tmp) == []
