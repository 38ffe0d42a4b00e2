"""The uring model's own promises: a late completion cannot reach the wrong connection, why it
is unavailable is one precise sentence, batching saves system calls, and no kernel worker
thread (io-wq) appears behind the one thread. The HTTP promises are test_conformance's."""

from __future__ import annotations

import errno
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

import netlab
from netlab import NetlabError
from netlab.monitor import wait_until
from netlab.servers import FEATURES, ring

from conftest import get, needs_strace, needs_uring, read_response



# ---------------------------------------------------------------- closing and fd reuse

@pytest.fixture
def loop():
    from netlab.servers.uring import UringLoop
    from netlab.workload import App, Workload
    listener = socket.create_server(("127.0.0.1", 0))
    lp = UringLoop(listener, App(Workload()))
    yield lp
    lp.close()
    listener.close()


def _conn_on(loop, fd):
    from netlab.servers.uring import Conn
    c = Conn(loop, fd)
    loop.conns.add(c)
    c.flush()                                   # its first recv goes in flight
    return c


@needs_uring
def test_a_closed_connections_late_completion_is_ignored_when_its_fd_is_reused(loop):
    server_side, client = socket.socketpair()
    fd = server_side.detach()
    a = _conn_on(loop, fd)
    stale = a.recving
    a.close()
    os.fstat(fd)                                # still open: its recv is still in flight
    assert wait_until(lambda: loop.turn() or a.fd == -1, timeout=10)   # cancelled, then closed
    assert wait_until(lambda: loop.turn() or _closed(fd), timeout=10)  # the CLOSE went through
    other, client2 = socket.socketpair()        # a new connection gets the same number
    new = other.detach()
    if new != fd:                               # (the kernel gave it the lowest free one)
        os.dup2(new, fd)
        os.close(new)
    b = _conn_on(loop, fd)
    loop.complete([(stale, 5, 0)])              # the old recv's completion, arriving late
    assert stale not in loop.ops and not b.session.queue and b.recving is not None
    client2.sendall(b"GET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\n")
    client2.settimeout(0)
    got = bytearray()

    def answered():
        loop.turn()
        try:
            got.extend(client2.recv(4096))
        except BlockingIOError:
            pass
        return got.endswith(b"xxx")
    assert wait_until(answered, timeout=10)
    assert got.startswith(b"HTTP/1.1 200")
    client.close()
    client2.close()


def _closed(fd):
    try:
        os.fstat(fd)
        return False
    except OSError:
        return True


# ---------------------------------------------------------------- setup flags

@needs_uring
def test_a_kernel_without_coop_taskrun_gets_a_plain_ring(monkeypatch):
    """COOP_TASKRUN is Linux 5.19: before it io_uring_setup says EINVAL, and the loop falls
    back to a ring without it instead of failing."""
    from netlab.servers import uring
    from netlab.workload import App, Workload
    made, real = [], uring.Ring

    def old_kernel(entries, flags=0):
        made.append(flags)
        if flags:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(entries, flags)

    monkeypatch.setattr(uring, "Ring", old_kernel)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        uring.UringLoop(listener, App(Workload())).close()
    assert made == [ring.COOP_TASKRUN, 0]


@needs_uring
def test_coop_false_serves_too():
    with netlab.serve("uring", coop=False) as s:
        assert [get(s.port)[0] for _ in range(20)] == [200] * 20


# ---------------------------------------------------------------- why not available

@pytest.fixture
def refused(monkeypatch, tmp_path):
    """io_uring_setup fails with ``errno``; the sysctl reads ``disabled``."""
    def set_(err, disabled="0"):
        def fail(*a, **k):
            raise OSError(err, os.strerror(err))
        monkeypatch.setattr(ring, "Ring", fail)
        (tmp_path / "disabled").write_text(disabled + "\n")
        monkeypatch.setattr(ring, "DISABLED", str(tmp_path / "disabled"))
    return set_


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe needs Linux")
@pytest.mark.parametrize("err, disabled, words", [
    (errno.EPERM, "2", "io_uring_disabled is 2"),
    (errno.EPERM, "1", "io_uring_group"),
    (errno.EPERM, "0", "seccomp"),
    (errno.ENOSYS, "0", "ENOSYS"),
    (errno.ENOMEM, "1", "ulimit -l"),          # not the sysctl's doing: only EPERM is
])
def test_a_refused_ring_says_why_in_one_sentence(refused, err, disabled, words):
    refused(err, disabled)
    ok, why = ring.support()
    assert not ok and words in why and why.count(". ") == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe needs Linux")
def test_another_architecture_is_refused_in_one_sentence(monkeypatch):
    import types
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: types.SimpleNamespace(
        sysname=real.sysname, release=real.release, machine="aarch64"))
    ok, why = ring.support()
    assert not ok and "aarch64" in why and "memory ordering" in why


@needs_uring
def test_a_kernel_missing_an_opcode_is_named(monkeypatch):
    monkeypatch.setattr(ring.Ring, "supported", lambda self: {ring.ACCEPT, ring.SEND})
    ok, why = ring.support()
    assert not ok and "RECV" in why and "5.7" in why


def test_off_linux_it_is_linux_only(monkeypatch):
    monkeypatch.setattr(ring, "_libc", None)
    assert ring.support() == (False, "needs io_uring, which is Linux-only (5.7 or later)")


def test_an_unavailable_uring_is_listed_with_its_reason_and_refused(monkeypatch):
    monkeypatch.setitem(FEATURES, "uring", (False, "io_uring is switched off here (x)"))
    model = netlab.model("uring")
    assert not model.available and model.reason == "io_uring is switched off here (x)"
    with pytest.raises(NetlabError, match="switched off"):
        model.check()


def test_multishot_needs_5_19_and_says_so():
    assert ring.multishot_accept("6.1.0-18-amd64") == ""
    why = ring.multishot_accept("5.15.0-91-generic")
    assert "5.19" in why and "5.15.0-91-generic" in why


@needs_uring
def test_multishot_on_an_old_kernel_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr(ring, "multishot_accept", lambda: "multishot=True needs Linux 5.19")
    with pytest.raises(NetlabError, match="5.19"):
        netlab.model("uring").check(options={"multishot": True})


def test_importing_netlab_sets_up_no_ring():
    """FEATURES is built at import; io_uring's entry is probed only when asked."""
    out = subprocess.run([sys.executable, "-c", "import sys, netlab; "
                          "print('netlab.servers.ring' in sys.modules)"],
                         capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- batching, threads

@needs_uring
@needs_strace
def test_batch_false_makes_more_io_uring_enter_calls_than_batch_true(monkeypatch):
    """strace's count: batch=True submits a round's operations with its wait (~0.6 calls per
    keep-alive request here); batch=False adds one call per operation (~2.5)."""
    from netlab.experiments import syscalls
    monkeypatch.setenv("NETLAB_QUICK", "1")
    per = {b: syscalls.profile("uring", requests=300, keepalive=True, batch=b)
           .set_index("syscall")["calls_per_request"].get("io_uring_enter", 0.0)
           for b in (True, False)}
    assert per[True] > 0 and per[False] >= per[True] + 1, per


@needs_uring
def test_no_kernel_worker_thread_appears_under_load():
    """io_uring may run an operation on an io-wq worker (a thread of ours, iou-wrk-N) when it
    cannot wait by polling; accept, recv, send, poll and close on sockets never need one."""
    with netlab.serve("uring") as s:
        proc, most, done = psutil.Process(s.pid), [], threading.Event()

        def watch():
            while not done.is_set():
                most.append(proc.num_threads())

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            conns = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(16)]
            for c in conns:                      # big answers: partial sends, waiting sends
                c.sendall(b"GET /bytes/2000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            for _ in range(50):                  # connection per request: accept, close
                assert get(s.port)[0] == 200
            for c in conns:
                with c, c.makefile("rb") as f:
                    assert len(read_response(f)[2]) == 2_000_000
        finally:
            done.set()
            watcher.join()
        assert most and max(most) == 1, max(most)


# ---------------------------------------------------------------- found by an adversarial review

def _io_wq_workers(pid):
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                n += f.read().startswith("iou-wrk")
        except OSError:
            pass
    return n


@needs_uring
def test_no_kernel_worker_thread_appears_when_clients_half_close():
    """Clients that pipeline big answers, half-close and stop reading: a send with no room
    must wait on the ring (MSG_DONTWAIT, then POLL_ADD), not in a kernel worker thread, which
    io_uring made for each such client after 128 fruitless wake-ups (20 threads for 20)."""
    n = 20
    with netlab.serve("uring") as srv:
        peak, done = [0], threading.Event()

        def watch():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], _io_wq_workers(srv.pid))
                except OSError:
                    pass
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        socks, stalled = [], threading.Barrier(n)

        def client():
            s = socket.create_connection(("127.0.0.1", srv.port))
            socks.append(s)

            def write():
                s.sendall(b"GET /bytes/100000 HTTP/1.1\r\nHost: t\r\n\r\n" * 1000)
                s.shutdown(socket.SHUT_WR)          # half-close: "that is all I ask"
            threading.Thread(target=write, daemon=True).start()
            s.settimeout(20)
            got = 0
            while got < 30_000_000:                 # read fast for a while...
                got += len(s.recv(1 << 20))
            stalled.wait()
            time.sleep(1)                           # ...then stop reading

        try:
            clients = [threading.Thread(target=client) for _ in range(n)]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
        finally:
            done.set()
            watcher.join()
            for s in socks:
                s.close()
        assert peak[0] == 0, f"{peak[0]} io-wq workers for {n} half-closed clients"


@needs_uring
@pytest.mark.parametrize("options", [{}, {"multishot": True}, {"batch": False}])
def test_more_completions_than_the_cq_holds_are_all_handled(options):
    """6,000 recvs complete while the server is stopped (SIGSTOP): 3x the CQ's 2,048 slots,
    and each answer needs two SQEs (send, recv): 12,000 prepared in one round (SQ: 1,024)."""
    n = 6000
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < n + 200:
        pytest.skip("needs ulimit -n above 6200")
    with netlab.serve("uring", **options) as srv:
        proc = psutil.Process(srv.pid)
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(n)]
        assert wait_until(lambda: proc.num_fds() >= n, timeout=30)
        proc.suspend()
        try:
            for s in socks:
                s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.5)
        finally:
            proc.resume()
        sel, bufs, answered = selectors.DefaultSelector(), {}, 0
        for s in socks:
            s.setblocking(False)
            bufs[s] = bytearray()
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while answered < n and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                d = key.fileobj.recv(65536)
                bufs[key.fileobj] += d
                if not d or bufs[key.fileobj].endswith(b"x" * 10):
                    answered += bufs[key.fileobj].endswith(b"x" * 10)
                    sel.unregister(key.fileobj)
        for s in socks:
            s.close()
        sel.close()
        assert answered == n


@needs_uring
@pytest.mark.parametrize("options", [{}, {"multishot": True}])
def test_out_of_fds_it_keeps_accepting_once_fds_free(options):
    """RLIMIT_NOFILE 64 in the server; 300 Connection: close clients at once: all answered.
    The limit is set before the server starts: a multishot accept reads it once, when it is
    submitted (test_fd_exhaustion lowers it under a running server, for the single-shot one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        srv = netlab.serve("uring", **options)         # the server inherits the limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with srv:
        socks = []
        for _ in range(300):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", srv.port))
            socks.append(s)
        sel, bufs, answered, live = selectors.DefaultSelector(), {}, 0, len(socks)
        for s in socks:
            bufs[s] = bytearray()
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 30
        while live and time.monotonic() < deadline:
            for key, ev in sel.select(1):
                s = key.fileobj
                if ev & selectors.EVENT_WRITE:
                    s.send(b"GET /bytes/10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                d = s.recv(65536)
                bufs[s] += d
                if not d:
                    answered += bufs[s].endswith(b"x" * 10)
                    sel.unregister(s)
                    live -= 1
        for s in socks:
            s.close()
        sel.close()
        assert answered == 300
        assert "out of file descriptors" in srv.log()
