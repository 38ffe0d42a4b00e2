"""Out of file descriptors: a server whose accept() fails with EMFILE says so once, pauses
accepting instead of spinning on the error, keeps serving the connections it has, and accepts
again once some close.

Two layers. The unit tests drive ``blocking.accept``, ``accept_waiting``, the event loops'
``_accept`` and the reactor's ``Acceptor`` with a listening socket whose accept() fails as
the kernel's does: every branch, and the pause, are seen without timing anything. The
integration tests lower a running server's RLIMIT_NOFILE (prlimit, through psutil) to a few
fds above what it holds, open more idle clients than fit, and watch it from outside.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

import netlab
from netlab.monitor import wait_until
from netlab.servers import blocking, eventloop, reactor
from conftest import get, needs_uring, read_response

OUT_OF_FDS = "the process is out of file descriptors"

# the models whose accept path each layer covers. The blocking accept: threaded is the one of
# its models whose one process holds every connection (iterative serves one at a time, forking
# and preforked hand them to children, prethreaded's pool holds 8).
BLOCKING = [("threaded", {})]
LOOPS = [("select", {}), ("poll", {}), ("epoll", {}), ("epoll", {"edge": True})]
REACTOR = [("reactor", {})]
# not multishot=True here: the kernel copies RLIMIT_NOFILE into an accept request when it is
# submitted, so a limit lowered under a running multishot accept does not apply to it
# (test_uring's out-of-fds test sets the limit before the server starts)
URING = [pytest.param("uring", {}, marks=needs_uring)]

needs_prlimit = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(psutil.Process, "rlimit"),
    reason="lowering another process's RLIMIT_NOFILE needs prlimit() (Linux)")


# -- unit: the accept paths, with a socket that fails as the kernel does ---------------------------

class FailingListener(socket.socket):
    """A real, blocking, listening socket (selectors accept it) whose accept() follows
    ``plan``: an errno is raised as the kernel would raise it, None is a real accept(); once
    the plan is used up, every call raises ``then`` (None: real accepts)."""

    def __init__(self, plan=(), then=None):
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.plan, self.then = list(plan), then
        self.calls = 0

    def accept(self):
        self.calls += 1
        err = self.plan.pop(0) if self.plan else self.then
        if err is None:
            return super().accept()
        raise OSError(err, os.strerror(err))


@pytest.fixture
def fd_warnings(monkeypatch, caplog):
    """The out-of-fds warnings logged by netlab.server (the once-only flag reset)."""
    monkeypatch.setattr(blocking, "_fd_warned", False)
    caplog.set_level(logging.WARNING, logger="netlab.server")
    return lambda: [r.getMessage() for r in caplog.records
                    if r.name == "netlab.server" and OUT_OF_FDS in r.getMessage()]


def test_warn_fd_limit_says_what_to_do_once(fd_warnings):
    blocking.warn_fd_limit(OSError(errno.EMFILE, os.strerror(errno.EMFILE)))
    blocking.warn_fd_limit(OSError(errno.ENFILE, os.strerror(errno.ENFILE)))
    said = fd_warnings()
    assert len(said) == 1, said                      # once per process, not once per failure
    assert os.strerror(errno.EMFILE) in said[0] and "ulimit -n" in said[0]


@pytest.mark.parametrize("err", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_blocking_accept_waits_out_fd_exhaustion(err, fd_warnings, monkeypatch):
    pauses = []
    monkeypatch.setattr(blocking, "time", SimpleNamespace(sleep=pauses.append))
    with FailingListener([err, err, err]) as listen, \
            socket.create_connection(listen.getsockname()) as client:
        conn = blocking.accept(listen)
        with conn:
            assert conn.getpeername() == client.getsockname()
    assert listen.calls == 4
    assert pauses == [0.1] * 3                      # a pause after each failure: no busy loop
    assert len(fd_warnings()) == 1


def test_blocking_accept_is_silent_on_an_aborted_handshake(fd_warnings, monkeypatch):
    pauses = []
    monkeypatch.setattr(blocking, "time", SimpleNamespace(sleep=pauses.append))
    with FailingListener([errno.ECONNABORTED]) as listen, \
            socket.create_connection(listen.getsockname()):
        blocking.accept(listen).close()
    assert listen.calls == 2 and pauses == [] and fd_warnings() == []
    with FailingListener([errno.EBADF]) as listen, pytest.raises(OSError) as info:
        blocking.accept(listen)                     # anything else is a bug: not swallowed
    assert info.value.errno == errno.EBADF


def test_accept_waiting_returns_what_it_got_and_says_out_of_fds(fd_warnings):
    # an aborted handshake is skipped, two connections are taken, then the fds run out
    with FailingListener([errno.ECONNABORTED, None, None], then=errno.EMFILE) as listen:
        clients, got = [socket.create_connection(listen.getsockname()) for _ in range(2)], []
        try:
            got, out = blocking.accept_waiting(listen)
            assert (len(got), out) == (2, True) and listen.calls == 4
            assert len(fd_warnings()) == 1
        finally:
            for s in got + clients:
                s.close()


def test_accept_waiting_is_silent_when_the_backlog_is_drained(fd_warnings):
    with FailingListener() as listen:
        listen.setblocking(False)                    # what the event loops do
        with socket.create_connection(listen.getsockname()):
            got, outs = [], []

            def take():                              # the handshake completes in its own time
                more, out = blocking.accept_waiting(listen)
                got.extend(more)
                outs.append(out)
                return got

            try:
                assert wait_until(take, timeout=10, interval=0.01)
                assert len(got) == 1 and not any(outs)
                assert blocking.accept_waiting(listen) == ([], False)
            finally:
                for s in got:
                    s.close()
        assert fd_warnings() == []


def _loops():
    from netlab.servers import FEATURES, epoll_loop, poll_loop, select_loop
    return [select_loop.SelectLoop] + [cls for need, cls in (("poll", poll_loop.PollLoop),
                                                             ("epoll", epoll_loop.EpollLoop))
                                       if FEATURES[need][0]]


@pytest.mark.parametrize("cls", _loops(), ids=lambda c: c.__name__)
def test_an_event_loop_stops_watching_the_listener_while_out_of_fds(cls, fd_warnings):
    calls = []

    class Watched(cls):
        def register(self, fd, events):
            calls.append(("register", fd, events))
            super().register(fd, events)

        def unregister(self, fd):
            calls.append(("unregister", fd))
            super().unregister(fd)

    with FailingListener([errno.EMFILE]) as listen:
        loop = Watched(listen, app=None)
        try:
            loop.register(loop.lfd, eventloop.READ)
            t0 = time.monotonic()
            loop._accept()                           # the listener was readable: EMFILE
            assert calls[-1] == ("unregister", loop.lfd) and not loop.conns
            assert len(fd_warnings()) == 1
            assert loop.timers.timeout() is not None     # it looks again after a pause...
            assert wait_until(lambda: loop.timers.timeout() == 0, timeout=10, interval=0.01)
            assert time.monotonic() - t0 >= 0.1          # ...of 0.1 s (a lower bound: exact)
            assert calls[-1] == ("unregister", loop.lfd)
            loop.timers.run_due()
            assert calls[-1] == ("register", loop.lfd, eventloop.READ)
            assert loop.timers.timeout() is None     # one retry scheduled, not one per wake-up
        finally:
            loop.close()


def test_the_reactor_stops_watching_the_listener_while_out_of_fds(fd_warnings):
    r = reactor.Reactor()
    with FailingListener([errno.EMFILE]) as listen:
        try:
            acceptor = reactor.Acceptor(r, listen, app=None)
            assert r.selector.get_key(listen).data == acceptor.on_event
            t0 = time.monotonic()
            acceptor.on_event(reactor.READ)          # EMFILE
            assert listen not in r.selector.get_map()
            assert len(fd_warnings()) == 1
            assert r.timers.timeout() is not None
            assert wait_until(lambda: r.timers.timeout() == 0, timeout=10, interval=0.01)
            assert time.monotonic() - t0 >= 0.1
            assert listen not in r.selector.get_map()
            r.timers.run_due()
            key = r.selector.get_key(listen)
            assert key.events == reactor.READ and key.data == acceptor.on_event
            assert r.timers.timeout() is None
        finally:
            r.selector.close()


# -- integration: a real server run out of fds -----------------------------------------------------

def _limit_fds(pid: int, spare: int) -> tuple:
    """Lower ``pid``'s soft open-file limit to ``spare`` fd numbers above the highest it holds.
    Returns (soft limit, how many more fds it can open)."""
    used = [int(n) for n in os.listdir(f"/proc/{pid}/fd")]
    soft = max(used) + 1 + spare
    proc = psutil.Process(pid)
    proc.rlimit(psutil.RLIMIT_NOFILE, (soft, proc.rlimit(psutil.RLIMIT_NOFILE)[1]))
    return soft, soft - len(used)


def _request(sock) -> int:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")       # keep-alive: the client stays
    with sock.makefile("rb") as f:
        return read_response(f)[0]


SPARE = 16          # fds the server may still open
BEYOND = 8          # clients more than fit: they wait in the listen backlog


@contextlib.contextmanager
def _out_of_fds(srv):
    """Lower the server's fd limit to SPARE above what it holds and connect BEYOND more clients
    than fit; yield (process, limit, fds it had free, clients) once it holds all it may."""
    proc = psutil.Process(srv.pid)
    soft, free = _limit_fds(srv.pid, SPARE)
    clients = []
    try:
        for _ in range(free + BEYOND):
            clients.append(socket.create_connection(("127.0.0.1", srv.port), timeout=30))
        assert wait_until(lambda: proc.num_fds() >= soft, timeout=30), \
            f"{proc.num_fds()} fds, limit {soft}"
        yield proc, soft, free, clients
    finally:
        for c in clients:
            c.close()


@needs_prlimit
@pytest.mark.parametrize("model,options", BLOCKING + LOOPS + REACTOR + URING,
                         ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in v.items()))
def test_a_server_out_of_fds_pauses_keeps_serving_and_recovers(model, options):
    with netlab.serve(model, **options) as srv:
        assert get(srv.port)[0] == 200
        assert OUT_OF_FDS not in srv.log()           # silent while fds are plenty
        with _out_of_fds(srv) as (proc, soft, free, clients):
            # it took every fd it could, then accept() failed: said so, and is alive
            assert wait_until(lambda: OUT_OF_FDS in srv.log(), timeout=30), srv.log()
            assert srv.alive
            # the connections it holds are served while it cannot accept (the backlog is FIFO:
            # the first client was accepted)
            assert _request(clients[0]) == 200
            # paused, not spinning on the error: CPU over a window 100 clock ticks long.
            # Paused, it retries 10 times a second (about 1 ms of CPU in all); a busy retry
            # loop takes all the CPU it can get (0.4 s and more, on a loaded 2-core machine)
            cpu0, t0 = srv.cpu_seconds(), time.monotonic()
            time.sleep(1.0)                          # a measuring window, not a wait for state
            cpu, wall = srv.cpu_seconds() - cpu0, time.monotonic() - t0
            assert cpu < 0.1 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s while out of fds"
            assert srv.alive and proc.num_fds() >= soft
            assert srv.log().count(OUT_OF_FDS) == 1, srv.log()      # once, not per failure
            assert "Traceback" not in srv.log()
            # free more than the backlog needs: every client left is served, then a new one
            for c in clients[:len(clients) // 2]:
                c.close()
            left = clients[len(clients) // 2:]
            assert len(left) + 1 <= free
            for c in left:
                assert _request(c) == 200            # those in the backlog once accepted
            assert get(srv.port, timeout=30)[0] == 200


@needs_prlimit
def test_asking_usage_of_a_server_out_of_fds_does_not_kill_it():
    """measure() asks the server for its usage (SIGUSR2) at the start and end of every run; a
    run with more idle clients than the server's fd limit must not kill it."""
    from netlab.monitor import ask_usage
    with netlab.serve("epoll") as srv:
        with _out_of_fds(srv) as (proc, soft, free, clients):
            ask_usage(srv)                           # None (no answer) is acceptable
            assert srv.alive and _request(clients[0]) == 200, srv.log()
