"""Process groups we start, watch and stop: netlab's servers, real peers, experiments' helpers.

Why one supervisor: a measurement that leaves a process behind spoils the next one (it holds a
port, it uses a core), and a notebook kernel interrupted or killed mid-run must not leave any.
So everything netlab starts runs in a process group of its own, and is stopped the same way:

    SIGTERM to the group -> wait ``timeout`` -> SIGKILL -> reap -> no process of the group left?
    -> the port closed?

A small watchdog process (``netlab/watchdog.py``) stops the group if the harness that started
it dies; a finalizer stops it if the harness merely forgets it. ``Supervised`` carries all of
that; ``Server`` (netlab's models), ``Peer`` (nginx, node, ...) and ``Helper`` (an
experiment's Python child) add only how they start. The one other place that stops a group is
the server process's own exit (``netlab.servers.forks.stop_own_group``): it runs inside the
group, takes down what a student's server forked, and must spare itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import watchdog
from .servers import ServerError
from .sockets import LOOPBACK, accepts, url_of

POSIX = os.name == "posix"
PKG_PARENT = str(Path(__file__).resolve().parent.parent)    # where `import netlab` finds us
WATCHDOG = Path(__file__).resolve().parent / "watchdog.py"
WATCHDOG_GRACE = 3.0         # seconds between SIGTERM and SIGKILL when the harness died
LOG_TAIL = 64 * 1024         # log() returns at most this much of the end of the log


class HelperTimeout(ServerError, TimeoutError):
    """A helper did not finish in time (one sentence, like every netlab error)."""


def python_env(env: Optional[dict] = None) -> dict:
    """The environment for a Python child that must import this netlab (not an installed one)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_PARENT, env.get("PYTHONPATH")) if p)
    return env


# ---------------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------------

def proc_group(pgid: int) -> list:
    """PIDs of live (non-zombie) processes in a process group."""
    if sys.platform.startswith("linux"):
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                found.append(int(name))
        return found
    try:
        os.killpg(pgid, 0)
        return [pgid]
    except (ProcessLookupError, PermissionError):
        return []


def kill_group(proc: subprocess.Popen, sig) -> None:
    """Signal the group ``proc`` leads (on Windows: the process itself); gone already is fine."""
    try:
        if POSIX:
            os.killpg(proc.pid, sig)
        elif sig == signal.SIGTERM:
            proc.terminate()
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass


def stop_group(proc: subprocess.Popen, timeout: float) -> list:
    """SIGTERM the group, SIGKILL after ``timeout``, reap the leader, give the SIGKILL another
    ``timeout``; the pids that survived (none, normally). Interrupted while waiting (Ctrl-C),
    it kills the group at once rather than leave it running."""
    if proc.returncode is not None and (not POSIX or not proc_group(proc.pid)):
        return []       # reaped and nothing left: its pid may be another process's by now
    try:
        if not POSIX:
            kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc, signal.SIGKILL)
                proc.wait()
            return []

        def alive() -> bool:
            proc.poll()                     # reap the leader as soon as it exits
            return bool(proc_group(proc.pid))

        gone = watchdog.stop(proc.pid, timeout, alive)
        proc.wait()
        return [] if gone else proc_group(proc.pid)
    except BaseException:
        kill_group(proc, signal.SIGKILL)
        proc.wait()
        raise


def tree_cpu_seconds(pid) -> float:
    """CPU time (user + system) of a process, its descendants, and the children they reaped."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except (psutil.Error, TypeError, ValueError):
        return float("nan")
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def check_wrap(wrap) -> Optional[list]:
    """A command prefix such as ["strace", "-f"], installed, or ServerError in one sentence."""
    if wrap is None:
        return None
    if isinstance(wrap, str) or not wrap or not all(isinstance(a, str) for a in wrap):
        raise ServerError(f"wrap must be a command prefix as a list of strings, such as "
                          f"['strace', '-f'], not {wrap!r}")
    if shutil.which(wrap[0]) is None:
        raise ServerError(f"cannot wrap the server in {wrap[0]}: it is not installed")
    return list(wrap)


def remove(*paths) -> None:
    """Remove files and folders that may or may not exist."""
    for p in paths:
        if p and os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif p:
            try:
                os.unlink(p)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# The watchdog, and the last resort
# ---------------------------------------------------------------------------------------------

def watch(pgid: int, paths: Sequence[str] = ()) -> Optional[subprocess.Popen]:
    """Start a watchdog for group ``pgid`` (removing ``paths`` after it): it stops the group if
    this process dies. Unbuffered, so dismiss()'s "d" is on its way at once."""
    if not POSIX:
        return None
    return subprocess.Popen([sys.executable, "-I", "-S", str(WATCHDOG), str(pgid),
                             str(WATCHDOG_GRACE), *paths],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, bufsize=0,
                            stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)


def dismiss(watchdog: Optional[subprocess.Popen]) -> None:
    """Tell a watchdog the harness stopped the group itself, and reap it."""
    if watchdog is None:
        return
    try:
        watchdog.stdin.write(b"d")
        watchdog.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        watchdog.wait(5)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _abandoned(proc: subprocess.Popen, watchdog, owner: int, paths: Sequence[str],
               log) -> None:
    """Finalizer (garbage collection, interpreter exit): kill the group, dismiss its watchdog,
    close our ends, remove its files once nothing runs there. Only in the process that started
    it, never in a forked copy of the harness."""
    if os.getpid() != owner:
        return
    if proc.poll() is None:
        kill_group(proc, signal.SIGKILL)
        proc.wait()
    elif POSIX and proc_group(proc.pid):
        kill_group(proc, signal.SIGKILL)    # what outlived its leader
    dismiss(watchdog)
    for f in (proc.stdin, proc.stdout, proc.stderr, log):
        if f is not None and not f.closed:
            f.close()
    remove(*paths)


# ---------------------------------------------------------------------------------------------
# What every supervised group has
# ---------------------------------------------------------------------------------------------

class Supervised:
    """A process group we started: ``pid``, ``alive``, ``cpu_seconds()``, ``log()``, ``stop()``;
    a context manager that stops it. Subclasses say how it starts and when it is ready."""

    kind = "process"             # in messages: "the nginx peer", "the epoll server"
    host = LOOPBACK
    clean_exits: Optional[tuple] = (0,)    # exit statuses that are not a failure (None: any)

    def __init__(self, model: str, cleanup: Sequence[str] = ()):
        self.model = model
        self.port: Optional[int] = None
        self.url: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self._cleanup = list(cleanup)     # files and folders removed once the group is gone
        self._log = None
        self._final_log = ""
        self._watchdog: Optional[subprocess.Popen] = None
        self._finalizer = None
        self._stopped = False

    # -- start ----------------------------------------------------------------------------------
    def _spawn(self, argv: Sequence[str], *, stdin=subprocess.DEVNULL, stdout=None,
               **popen) -> subprocess.Popen:
        """Start ``argv`` as the leader of a new group, stderr (and stdout unless given) to the
        log, with a watchdog and a finalizer. Raises what Popen raises, leaving nothing."""
        if self.proc is not None:
            raise ServerError(f"{self} was already started; create a new one")
        self._log = tempfile.TemporaryFile()
        if POSIX:   # the group shares this file's offset: everyone must append
            import fcntl
            fd = self._log.fileno()
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        if not POSIX:
            popen.setdefault("creationflags", getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        try:
            self.proc = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout or self._log,
                                         stderr=self._log, close_fds=True,
                                         start_new_session=POSIX, **popen)
        except BaseException as e:
            self._log.close()
            remove(*self._cleanup)
            if isinstance(e, OSError):
                raise ServerError(f"cannot start {self}: {e.strerror or e}") from None
            raise
        try:        # from here on the group runs: nothing may fail without stopping it
            self._watchdog = watch(self.proc.pid, self._cleanup)
            self._finalizer = weakref.finalize(self, _abandoned, self.proc, self._watchdog,
                                               os.getpid(), self._cleanup, self._log)
        except BaseException as e:
            _abandoned(self.proc, self._watchdog, os.getpid(), self._cleanup, self._log)
            self._watchdog, self._stopped = None, True
            if isinstance(e, OSError):
                raise ServerError(f"cannot start {self}: {e.strerror or e}") from None
            raise
        return self.proc

    def wait_listening(self, timeout: float, announce: Optional[str] = None,
                       ready: Optional[Callable[[], bool]] = None) -> None:
        """Return once the port accepts connections (the port read from the log by the regex
        ``announce`` when it was not known), and ``ready()`` if given; ServerError if the
        group's leader exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.model} exited with status {self.proc.returncode} "
                                  f"before listening: {self.last_line()}")
            if self.port is None and announce:
                m = re.search(announce, self.log())
                if m:
                    self.port = int(m.group(1))
            if self.port is not None and (ready is None or ready()) \
                    and accepts(self.host, self.port):
                self.url = url_of(self.host, self.port)
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{self.model} did not listen within {timeout:.0f} s; "
                                  f"its log: {self.last_line() or '(empty)'}")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    # -- state ----------------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the whole process tree (nginx's master and
        workers, a JVM's threads), including children it has already reaped (the forking
        model's finished children)."""
        return tree_cpu_seconds(self.pid)

    def log(self) -> str:
        """What the group wrote to its log so far (stderr, and stdout unless it was piped):
        warnings, a student's traceback, nginx's error log. At most the last 64 KiB."""
        if self._log is None or self._log.closed:
            return self._final_log
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        at = max(0, size - LOG_TAIL)
        if hasattr(os, "pread"):        # read without moving the offset the group writes at
            data = os.pread(fd, size - at, at)
        else:
            self._log.seek(at)
            data = self._log.read()
        return data.decode(errors="replace")

    def last_line(self) -> str:
        """The last line of the log that is not blank: why it failed, usually."""
        lines = [ln.strip() for ln in self.log().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    # -- stop -----------------------------------------------------------------------------------
    def stop(self, timeout: float = 3.0, check: bool = True) -> None:
        """SIGTERM the group, SIGKILL after ``timeout``, reap, and verify nothing is left.

        With ``check``, raises ServerError if it had died on its own with an error (its last
        log line says why), if a process of its group survived, or if its port still accepts
        connections. Interrupting a stop (Ctrl-C while it waits) kills the group at once.
        """
        proc = self.proc
        if proc is None or self._stopped:
            if proc is None:
                remove(*self._cleanup)      # never started (or could not be)
            return
        died_early = proc.poll()
        try:
            leftover = self._end(timeout)
        finally:
            self._release()
        if check:
            self._check_stopped(leftover, died_early)

    def _end(self, timeout: float) -> list:
        """Stop the group and dismiss the watchdog; the pids that survived."""
        try:
            return stop_group(self.proc, timeout)
        finally:
            if self._finalizer is not None:
                self._finalizer.detach()
            watchdog, self._watchdog = self._watchdog, None
            dismiss(watchdog)

    def _release(self) -> None:
        """Close everything of ours that pointed at the group, remove its files (idempotent)."""
        self._stopped = True
        proc = self.proc
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe and not pipe.closed:
                pipe.close()
        if self._log is not None and not self._log.closed:
            self._final_log = self.log()
            self._log.close()
        remove(*self._cleanup)

    def _check_stopped(self, leftover: list, died_early: Optional[int]) -> None:
        if leftover:
            raise ServerError(f"processes {leftover} of {self} survived SIGKILL; this is a bug "
                              "in netlab, please report it")
        if self.port and accepts(self.host, self.port):
            raise ServerError(f"port {self.port} still accepts connections after {self} "
                              "stopped: a process it started left its process group (setsid, "
                              "setpgid or start_new_session)")
        if died_early is not None and self.clean_exits is not None \
                and died_early not in self.clean_exits:
            raise ServerError(f"{self} had already exited with status {died_early}: "
                              f"{self.last_line()}")

    def __str__(self) -> str:
        return f"the {self.model} {self.kind}"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and self.proc is not None and self.proc.poll() not in (None, 0):
            # the block failed, perhaps *because* the group died: say so next to the error
            note = f"netlab: {self} had exited: {self.last_line()}"
            if hasattr(exc, "add_note"):
                exc.add_note(note)
            else:
                sys.stderr.write(note + "\n")
        self.stop(check=exc_type is None)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<netlab {self.kind} {self.model} {self.url} pid={self.pid} {state}>"


class Helper(Supervised):
    """An experiment's helper: ``python ARGS...`` with this netlab importable, stdout piped to
    us, in its own group; ``output()`` waits for it and returns what it printed. Its exit
    status is the experiment's to judge (``clean_exits`` is None)."""

    kind = "helper"
    clean_exits = None

    def __init__(self, model: str, *args: str, stdin=subprocess.DEVNULL, text: bool = False):
        super().__init__(model)
        self._argv = [sys.executable, *args]
        self._stdin, self._text = stdin, text

    def start(self) -> "Helper":
        self._spawn(self._argv, stdin=self._stdin, stdout=subprocess.PIPE, env=python_env(),
                    text=self._text)
        return self

    def output(self, timeout: float):
        """Everything it printed, once it has exited; TimeoutError after ``timeout`` s (the
        group keeps running until it is stopped: use it as a context manager)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HelperTimeout(f"{self} did not finish within {timeout:.0f} s") from None
        return out
