"""netlab.supervisor: the one way netlab starts, watches and stops a process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from netlab import supervisor, watchdog
from netlab.monitor import wait_until
from netlab.servers import ServerError
from netlab.supervisor import Helper, proc_group

from conftest import LINUX

# a helper that forks a grandchild, and both ignore SIGTERM: only SIGKILL ends them
STUBBORN = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pid = os.fork()\n"
            "print(os.getpid() if pid else 0, flush=True)\n"
            "time.sleep(120)\n")


def test_a_helper_prints_exits_and_is_judged_by_its_caller():
    code = "import sys; print('hello'); sys.stderr.write('why\\n'); sys.exit(3)"
    with Helper("probe", "-c", code, text=True).start() as child:
        assert child.output(30) == "hello\n"
        assert child.proc.returncode == 3           # the caller decides what 3 means
        assert child.log().strip() == "why"         # stderr went to the log
    assert not child.alive and child.log().strip() == "why"


def test_a_helper_imports_this_netlab():
    code = "import netlab, sys; print(netlab.__file__)"
    with Helper("probe", "-c", code, text=True).start() as child:
        path = child.output(30).strip()
    assert os.path.dirname(os.path.dirname(path)) == supervisor.PKG_PARENT


@pytest.mark.skipif(not LINUX, reason="counts a process group in /proc (Linux)")
def test_stop_kills_a_group_that_ignores_sigterm_grandchildren_included():
    child = Helper("stubborn", "-c", STUBBORN, text=True).start()
    with child:
        assert wait_until(lambda: len(proc_group(child.pid)) == 2, timeout=30)
        with pytest.raises(TimeoutError, match="did not finish"):
            child.output(0.2)
        child.stop(timeout=0.5)                      # SIGTERM ignored: SIGKILL after 0.5 s
    assert proc_group(child.pid) == []
    assert child.proc.returncode == -signal.SIGKILL


def test_a_failed_start_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    helper = Helper("probe", "-c", "pass")
    with pytest.raises(ServerError, match="cannot start the probe helper"):
        helper.start()
    assert helper.proc is None and helper._log.closed


def test_the_log_is_a_bounded_tail():
    code = ("import sys\n"
            "for i in range(4000): sys.stderr.write(f'line {i:05d} ' + 'x' * 40 + '\\n')\n")
    with Helper("chatty", "-c", code).start() as child:
        child.output(30)
        text = child.log()
    assert len(text.encode()) <= supervisor.LOG_TAIL
    assert text.rstrip().endswith("line 03999 " + "x" * 40)


def test_a_stopped_group_cannot_be_started_again():
    child = Helper("probe", "-c", "pass").start()
    child.stop()
    with pytest.raises(ServerError, match="already started"):
        child.start()


@pytest.mark.skipif(not LINUX, reason="counts a process group in /proc (Linux)")
def test_the_watchdog_stops_the_group_of_a_harness_that_was_killed():
    """The harness is SIGKILLed: no finalizer runs, only the watchdog is left to stop it."""
    code = ("import time; from netlab.supervisor import Helper\n"
            f"h = Helper('stubborn', '-c', {STUBBORN!r}, text=True).start()\n"
            "print(h.pid, flush=True); time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env=supervisor.python_env(), start_new_session=True)
    pgid = None
    try:
        pgid = int(owner.stdout.readline())
        assert wait_until(lambda: len(proc_group(pgid)) == 2, timeout=30)
        owner.kill()
        owner.wait()
        # SIGTERM is ignored: the watchdog's SIGKILL follows after its grace
        assert wait_until(lambda: not proc_group(pgid), timeout=supervisor.WATCHDOG_GRACE + 15)
    finally:
        owner.stdout.close()
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if pgid and proc_group(pgid):              # the test failed: do not leak the group
            os.killpg(pgid, signal.SIGKILL)
    assert wait_until(lambda: not [p for p in psutil.process_iter(["cmdline"])
                                   if str(pgid) in (p.info["cmdline"] or [])
                                   and "watchdog.py" in " ".join(p.info["cmdline"] or [])],
                      timeout=15), "the watchdog did not leave after its work"


def test_watchdog_stop_says_whether_the_group_is_gone():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    assert watchdog.stop(proc.pid, 5, alive=lambda: proc.poll() is None)
    assert proc.returncode == -signal.SIGTERM
    # something that never goes away (here: a predicate that always says alive)
    assert watchdog.stop(proc.pid, 0.05, alive=lambda: True) is False


@pytest.mark.skipif(not LINUX, reason="counts a process group in /proc (Linux)")
@pytest.mark.parametrize("failure", [OSError(24, "Too many open files"), KeyboardInterrupt()])
def test_a_failure_once_the_group_runs_stops_it(monkeypatch, failure):
    """The watchdog cannot start (out of fds) or Ctrl-C lands just then: the group already runs,
    and nothing may be left of it."""
    seen = []

    def no_watchdog(pgid, paths=()):
        seen.append(pgid)
        raise failure

    monkeypatch.setattr(supervisor, "watch", no_watchdog)
    helper = Helper("probe", "-c", "import time; time.sleep(60)")
    expected = ServerError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        helper.start()
    assert seen and proc_group(seen[0]) == [] and helper.proc.returncode is not None
    assert helper._log.closed and helper.proc.stdout.closed
    helper.stop()                           # a no-op: it was stopped already


def test_a_second_start_says_so_and_leaves_the_first_running():
    with Helper("probe", "-c", "import time; time.sleep(60)").start() as child:
        with pytest.raises(ServerError, match="^the probe helper was already started"):
            child.start()
        assert child.alive


def test_a_helper_timeout_is_one_sentence():
    with Helper("sleeper", "-c", "import time; time.sleep(60)").start() as child:
        with pytest.raises(supervisor.HelperTimeout, match="did not finish within 0 s") as info:
            child.output(0.1)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, ServerError)
