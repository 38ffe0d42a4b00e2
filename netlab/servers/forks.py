"""Forked processes done carefully: every child is reaped, and none outlives the server.

Used by the models that fork (forking, preforked, reuseport) and by the event-loop models when
``workers > 1`` (N processes, each with its own loop, sharing one listening socket: nginx's
classic layout).

Stopping from the inside lives here too: ``stop_children`` and ``stop_own_group`` run in the
server process, which cannot stop its group the way ``netlab.supervisor`` and its watchdog do
from outside: they signal their own children or group but must spare themselves, and reap
with waitpid(), as only a parent can.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time

from ..supervisor import proc_group

log = logging.getLogger("netlab.server")


try:
    _prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def die_with_parent(parent: int) -> None:
    """Linux: ask the kernel to SIGTERM us when ``parent`` (our parent's pid) dies, so a
    crashed supervisor cannot leave orphaned workers holding ports. Elsewhere: nothing."""
    if _prctl is None:
        return
    _prctl(1, signal.SIGTERM, 0, 0, 0)               # PR_SET_PDEATHSIG
    if os.getppid() != parent:                       # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


# what asks a server to stop: SIGTERM (the harness), SIGINT (Ctrl-C), SIGHUP (terminal gone)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT) + ((signal.SIGHUP,) if os.name == "posix" else ())


def fork_child(fn, *args, into: set) -> int:
    """Fork; the child runs ``fn(*args)`` and exits without returning into the parent's code.

    The child's pid is added to ``into`` with the stop signals held, so a stop request arriving
    mid-fork cannot leave a child that the parent does not know about (and so never stops).
    """
    parent = os.getpid()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    pid = os.fork()
    if pid:
        into.add(pid)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return pid
    code = 0
    try:                        # from here on, never return into the parent's code
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        die_with_parent(parent)
        fn(*args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        pass
    except BaseException:
        log.exception("worker process %d failed", os.getpid())
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)          # never run the parent's cleanup (finally blocks, atexit) twice


def describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with status {code}"


def stop_children(pids, timeout: float = 2.0) -> None:
    """SIGTERM each child, reap it, SIGKILL whoever is still alive after ``timeout``."""
    pids = set(pids)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids:
        for pid in list(pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pids.discard(pid)
        if pids and time.monotonic() > deadline:
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            deadline = float("inf")
        if pids:
            time.sleep(0.01)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_workers(n: int, target, *args, always_fork: bool = False) -> None:
    """Run ``target(*args)`` here if n == 1 (unless ``always_fork``), else in n forked workers."""
    if n == 1 and not always_fork:
        target(*args)
    else:
        supervise(fork_all([(target, args)] * n))


def fork_all(calls) -> set:
    """Fork one child per ``(fn, args)``; if we are stopped halfway, stop those already forked."""
    pids = set()
    try:
        for fn, args in calls:
            fork_child(fn, *args, into=pids)
    except BaseException:
        stop_children(pids)
        raise
    return pids


def supervise(pids: set) -> None:
    """Wait on the workers; stop and reap them all when we are stopped or one of them dies.

    A worker that dies stops the whole server, loudly, in the log: a half-dead server would
    make every later measurement lie.
    """
    try:
        while pids:
            pid, status = os.wait()
            pids.discard(pid)
            log.error("worker %d %s; stopping the server", pid, describe_exit(status))
            raise SystemExit(1)
    finally:
        stop_children(pids)


def stop_own_group(grace: float = 2.0) -> None:
    """On the way out, take down whatever is left in our process group: netlab's models
    have reaped their workers by now, but a student's server may have forked its own."""
    if os.name != "posix":
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    me, group = os.getpid(), os.getpgrp()
    if group != me:
        return                      # not a group leader (the CLI in a shell's job): not ours
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass                # reap our own children as they go
        except ChildProcessError:
            pass
        if not [p for p in proc_group(group) if p != me]:
            return
        time.sleep(0.01)
    # whatever ignored SIGTERM (even a grandchild): SIGKILL, sparing ourselves
    for pid in proc_group(group):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
