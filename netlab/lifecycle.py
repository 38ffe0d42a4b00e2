"""Start a server in its own process group, wait until it listens, stop it, prove nothing is left.

Why a separate process: the notebook kernel never blocks and never forks (forking a process
that runs threads, like a Jupyter kernel, is unsafe); the server's CPU and memory can be measured
apart from the client's; and stopping can kill the whole process group, children included.

    with netlab.serve("epoll", backend_ms=10) as srv:
        ...  # srv.url, srv.port, srv.pid

A student's own server function ``fn(listen_sock, app)`` runs the same way: it is shipped to
the server process by value (cloudpickle), so functions defined in a notebook cell work.
"""

from __future__ import annotations

import errno
import faulthandler
import json
import logging
import os
import pickle
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Callable, Optional, Sequence, Union

from . import servers
from .servers import NetlabError, forks
from .workload import App, Workload

POSIX = os.name == "posix"
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerError(NetlabError):
    """The server could not start, or it died, or it left something behind."""


# ---------------------------------------------------------------------------------------------
# Inside the server process
# ---------------------------------------------------------------------------------------------

def open_listener(host: str, port: int, reuseport: bool = False) -> socket.socket:
    """Bind and listen; a port in use or a bad address becomes one sentence."""
    _check_port(port)
    _check_host(host)
    if reuseport:
        # SO_REUSEPORT would quietly join another server already on this port and split its
        # clients with it; an ordinary bind first proves the port is ours
        probe = _bind(host, port, reuseport=False)
        port = probe.getsockname()[1]
        probe.close()
    return _bind(host, port, reuseport, listen=True)


def _bind(host: str, port: int, reuseport: bool, listen: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if POSIX:   # restart on a port still in TIME_WAIT; never share a port being listened on
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(4096)       # the kernel caps it at net.core.somaxconn
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServerError(f"port {port} on {host} is already in use: stop the other "
                              "server or pick another port (port 0 picks a free one)") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise ServerError(f"not allowed to listen on port {port}: ports below 1024 need "
                              "root; pick a port above 1024 or port 0") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise ServerError(f"cannot listen on {host}: it is not an address of this "
                              "machine (use 127.0.0.1)") from None
        raise ServerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _check_port(port) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ServerError(f"port must be a whole number from 0 to 65535, not {port!r}")


def _check_host(host) -> None:
    if not isinstance(host, str) or not host.strip():
        raise ServerError(f"host must be an address such as 127.0.0.1, not {host!r} (an empty "
                          "host would listen on every interface)")


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


_stop_requested = False


def _stop_on_signal(signum, frame):
    """The first stop signal starts an orderly shutdown; repeats (the harness's killpg, the
    supervisor's own SIGTERM, PDEATHSIG) must not interrupt that shutdown halfway."""
    global _stop_requested
    _stop_requested = True
    for sig in forks.STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(0)


def exit_status(e: SystemExit) -> int:
    """0 if we were asked to stop. Otherwise the server ended on its own: a worker died
    (status 1), or a student's server called sys.exit() (reported, status 3 if it said 0)."""
    if _stop_requested:
        return 0
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if code == 0:
        sys.stderr.write("the server called sys.exit() before it was asked to stop: a server "
                         "must keep serving until it is stopped\n")
        return 3
    return code


def check_function(fn, options: dict, workers=None) -> None:
    """A student's server function must take (listen_sock, app) plus any options given."""
    import inspect
    name = getattr(fn, "__name__", repr(fn))
    if workers not in (None, 1):
        raise ServerError(f"workers applies to the built-in models; {name} runs as one "
                          "process (fork or start threads inside it if you want more)")
    try:
        inspect.signature(fn).bind(None, None, **options)
    except TypeError as e:
        extra = "".join(f", {k}" for k in options)
        raise ServerError(f"{name} must accept (listen_sock, app{extra}): {e}") from None
    except ValueError:          # a builtin without a signature: let it run
        pass


def run(spec: dict, announce: Callable[[str], None]) -> None:
    """Run one server described by ``spec`` in this process until SIGTERM/SIGINT."""
    target = spec["target"]
    workload = Workload(**spec.get("workload", {}))
    options = dict(spec.get("options", {}))
    if callable(target):
        model = None
        check_function(target, options, spec.get("workers"))
    else:
        model = servers.get(target)
        model.check(spec.get("workers"), options)
        model.module            # import it now, so the first request does not pay for it
    for sig in forks.STOP_SIGNALS:
        signal.signal(sig, _stop_on_signal)
    if hasattr(signal, "SIGUSR1"):      # `kill -USR1 PID` prints where a stuck server is
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    if spec.get("stats") and hasattr(signal, "SIGUSR2"):
        _answer_usage(spec["stats"])
    listen = open_listener(spec["host"], spec["port"], reuseport=bool(model and model.reuseport))
    try:
        app = App(workload)
        announce(f"listening on {url_of(spec['host'], listen.getsockname()[1])}")
        if model is None:
            target(listen, app, **options)
            raise ServerError(f"the server function {getattr(target, '__name__', target)} "
                              "returned: a server must keep serving until it is stopped")
        else:
            model.run(listen, app, spec.get("workers"), **options)
    finally:
        listen.close()


def _answer_usage(path: str) -> None:
    """`kill -USR2 PID` makes the server write its getrusage() to ``path``: its threads, living
    and ended, and its reaped children. /proc only shows what is alive now, so a monitor asks
    here for the context switches of a thread-per-connection server's finished threads and a
    forking server's finished children."""
    import resource
    me, seq = os.getpid(), [0]

    def answer(signum, frame):
        if os.getpid() != me:           # a forked worker inherited this handler
            return
        seq[0] += 1
        own, kids = resource.getrusage(resource.RUSAGE_SELF), \
            resource.getrusage(resource.RUSAGE_CHILDREN)
        data = {"seq": seq[0], "pid": me}
        for name, r in (("self", own), ("children", kids)):
            data[name] = dict(user=r.ru_utime, sys=r.ru_stime, voluntary=r.ru_nvcsw,
                              involuntary=r.ru_nivcsw)
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(data, f)
            os.replace(path + ".tmp", path)
        except OSError:     # out of fds (EMFILE) or disk: no answer, which the monitor allows;
            pass            # an exception here would kill the server mid-measurement

    signal.signal(signal.SIGUSR2, answer)


def child_main() -> None:
    """Entry point of the server process started by ``Server`` (python -m netlab._child)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s netlab[%(process)d] %(levelname)s %(message)s")
    spec = pickle.loads(sys.stdin.buffer.read())
    if spec.get("die_with_parent"):
        forks.die_with_parent(spec["parent"])
    if spec.get("lifeline") is not None:
        # stop signals stay with the main thread (it must leave accept() to run the handler)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, forks.STOP_SIGNALS)
        threading.Thread(target=_watch_lifeline, args=(spec["lifeline"], spec.get("stats")),
                         daemon=True, name="netlab-lifeline").start()
        signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def announce(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)   # nothing more goes to the harness's pipe
        os.dup2(devnull, 1)
        os.close(devnull)

    me = os.getpid()
    try:
        run(spec, announce)
    except NetlabError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        pass
    except SystemExit as e:
        sys.exit(exit_status(e))
    finally:
        if os.getpid() == me:       # not in a process that a student's server forked
            _stop_group()
            if hasattr(signal, "SIGUSR2"):  # a late usage question must not write it back
                signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            _remove(spec.get("stats"))  # a harness that was killed cannot remove it


def _stop_group(grace: float = 2.0) -> None:
    """On the way out, take down whatever is left in our process group: netlab's models
    have reaped their workers by now, but a student's server may have forked its own."""
    if not POSIX:
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
        if not [p for p in _proc_group(group) if p != me]:
            return
        time.sleep(0.01)
    # whatever ignored SIGTERM (even a grandchild): SIGKILL, sparing ourselves
    for pid in _proc_group(group):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


LIFELINE_GRACE = 3.0


def _watch_lifeline(fd: int, stats: Optional[str] = None) -> None:
    """The harness holds the write end of this pipe. When the harness exits, crashes or is
    killed, the read returns EOF, and we stop our whole process group: netlab's workers and
    any process a student's server forked. (PDEATHSIG alone covers neither of those, nor a
    harness thread that exits, nor macOS.) A killed harness leaves the usage file to us."""
    try:
        while os.read(fd, 64):
            pass
    except OSError:
        pass
    os.killpg(0, signal.SIGTERM)        # the main thread gets it and shuts down in order
    time.sleep(LIFELINE_GRACE)
    _remove(stats)                      # the main thread ignored SIGTERM: it never will
    os.killpg(0, signal.SIGKILL)        # whatever ignored SIGTERM (ourselves included)


# ---------------------------------------------------------------------------------------------
# In the harness (the notebook kernel, a test, the CLI)
# ---------------------------------------------------------------------------------------------

def _proc_group(pgid: int) -> list:
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


def _kill_group(proc: subprocess.Popen, sig) -> None:
    try:
        if POSIX:
            os.killpg(proc.pid, sig)
        elif sig == signal.SIGTERM:
            proc.terminate()
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_group_gone(proc: subprocess.Popen, timeout: float) -> list:
    """Workers and children got the same SIGTERM; give them ``timeout``, then SIGKILL; the
    processes still there after that (none, normally)."""
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        left = _proc_group(proc.pid)
        if not left:
            return []
        if time.monotonic() > deadline:
            if killed:
                return left
            _kill_group(proc, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + timeout
        time.sleep(0.01)


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


def _finalize(proc: subprocess.Popen, lifeline: Optional[int], owner: int,
              stats: Optional[str] = None) -> None:
    """Last resort (garbage collection, interpreter exit): kill the server's group. Only in
    the process that started it: a forked copy of the harness exiting must not."""
    if os.getpid() != owner:
        return
    _close_fd(lifeline)
    if proc.poll() is None:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
    elif POSIX:
        _kill_group(proc, signal.SIGKILL)
    _remove(stats)                  # after the kill: a dying server could still answer


def _remove(path: Optional[str]) -> None:
    for p in (path, path and path + ".tmp"):
        if p:
            try:
                os.unlink(p)
            except OSError:
                pass


def _close_fd(fd: Optional[int]) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class Server:
    """A running server: ``url``, ``host``, ``port``, ``pid``; a context manager that stops it.

    ``wrap`` runs the server under a command prefix, e.g. ``["strace", "-f", "-c", "-o", path]``
    (tracing needs the tracer to start the server: attaching to a running one needs privileges).
    The prefix's process is then ``pid``, the group leader; it gets the same SIGTERM on stop,
    so it must outlive the server it wraps (strace -o blocks SIGTERM and writes its summary
    when the server exits).
    """

    def __init__(self, target: Union[str, Callable] = "epoll", *, host: str = "127.0.0.1",
                 port: int = 0, workers: Optional[int] = None, backend_ms: float = 0,
                 cpu_us: float = 0, body_bytes: Optional[int] = None,
                 startup_timeout: float = 15.0, wrap: Optional[Sequence[str]] = None,
                 **options):
        if callable(target):
            check_function(target, options, workers)
            self.model = getattr(target, "__name__", "custom")
            self.workers = 1
        else:
            model = servers.get(target)
            self.workers = model.check(workers, options)
            self.model = model.name
        try:
            workload = Workload(backend_ms, cpu_us, body_bytes)
        except (ValueError, TypeError) as e:
            raise ServerError(str(e)) from None
        _check_port(port)
        _check_host(host)
        if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) \
                or not 0 < startup_timeout <= 600:
            raise ServerError(f"startup_timeout must be seconds between 0 and 600, not "
                              f"{startup_timeout!r}")
        if wrap is not None:
            if isinstance(wrap, str) or not wrap or not all(isinstance(a, str) for a in wrap):
                raise ServerError(f"wrap must be a command prefix as a list of strings, such as "
                                  f"['strace', '-f'], not {wrap!r}")
            if shutil.which(wrap[0]) is None:
                raise ServerError(f"cannot wrap the server in {wrap[0]}: it is not installed")
        self._wrap = list(wrap or ())
        self.host, self.options, self.workload = host, options, workload
        self.port: Optional[int] = None
        self.url: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self._spec = dict(target=target, host=host, port=port, workers=workers,
                          workload=workload.as_dict(), options=options)
        self._startup_timeout = startup_timeout
        self._log = None
        self._lifeline: Optional[int] = None
        self._stopped = False
        self.stats_path: Optional[str] = None     # where the server answers usage questions

    # -- start --------------------------------------------------------------------------------
    def start(self) -> "Server":
        if self.proc is not None:
            raise ServerError("this server was already started; create a new one")
        spec = dict(self._spec, parent=os.getpid(),
                    # PDEATHSIG follows the thread that forks us: only trust the main thread
                    die_with_parent=threading.current_thread() is threading.main_thread()
                    and not self._wrap)     # a wrapped server's parent is the wrapper
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_PARENT, env.get("PYTHONPATH")) if p)
        read_end = None
        if POSIX:
            # the lifeline: we keep the write end; the server stops its group at EOF
            read_end, self._lifeline = os.pipe()
            spec["lifeline"] = read_end
            kwargs = dict(start_new_session=True, pass_fds=(read_end,))
            if not self._wrap:          # a wrapper's pid is not the server's: no usage answers
                fd, self.stats_path = tempfile.mkstemp(prefix="netlab-usage-", suffix=".json")
                os.close(fd)
                spec["stats"] = self.stats_path
        else:
            kwargs = dict(creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        try:
            payload = _dumps(spec)
            self._log = tempfile.TemporaryFile()
            if POSIX:       # the server shares this file's offset: it must always append
                import fcntl
                fd = self._log.fileno()
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            self.proc = subprocess.Popen(self._wrap + [sys.executable, "-m", "netlab._child"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log, env=env, close_fds=True, **kwargs)
        except BaseException:
            _close_fd(self._lifeline)
            self._lifeline = None
            _remove(self.stats_path)    # no server was started to remove it
            if self._log is not None:
                self._log.close()
            raise
        finally:
            _close_fd(read_end)
        self._finalizer = weakref.finalize(self, _finalize, self.proc, self._lifeline,
                                           os.getpid(), self.stats_path)
        try:
            self.proc.stdin.write(payload)
            self.proc.stdin.close()
            line = self._read_announcement()
            self._await_workers()
        except BaseException:
            self.stop(check=False)
            raise
        self.url = line.split(" ", 2)[2]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        return self

    def _await_workers(self) -> None:
        """Return once a pool's worker processes exist. They are forked after the server
        announces that it listens: connections queue meanwhile, but a measurement started at
        once would charge the forks to its first requests and see fewer processes."""
        if callable(self._spec["target"]) or self._wrap:
            return
        want = servers.get(self.model).forked_at_start(self.workers)
        if not want:
            return
        try:
            import psutil
        except ImportError:
            return
        from .monitor import wait_until

        def forked() -> bool:
            if self.proc.poll() is not None:
                raise ServerError(self._tail() or f"the {self.model} server exited with "
                                  f"status {self.proc.returncode} while forking its workers")
            return len(psutil.Process(self.proc.pid).children()) >= want

        if not wait_until(forked, timeout=self._startup_timeout, interval=0.01):
            raise ServerError(f"the {self.model} server did not fork its {want} workers "
                              f"within {self._startup_timeout:.0f} s; its log: {self._tail()}")

    def _read_announcement(self) -> str:
        deadline = time.monotonic() + self._startup_timeout
        out = self.proc.stdout
        fd = out.fileno()
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerError(f"the {self.model} server did not start listening within "
                                      f"{self._startup_timeout:.0f} s; its log: {self._tail()}")
                if sel.select(left):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        self.proc.wait()
                        raise ServerError(self._tail() or f"the {self.model} server exited "
                                          f"with status {self.proc.returncode} before listening")
                    buf += chunk
        out.close()
        return buf.split(b"\n", 1)[0].decode()

    # -- state ----------------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's whole process tree, including
        children it has already reaped (the forking model's finished children)."""
        return tree_cpu_seconds(self.pid)

    def log(self) -> str:
        """Everything the server wrote to stderr so far (warnings, a student's traceback)."""
        if self._log is None or self._log.closed:
            return getattr(self, "_final_log", "")
        if hasattr(os, "pread"):        # read without moving the offset the server writes at
            fd, chunks, at = self._log.fileno(), [], 0
            while True:
                chunk = os.pread(fd, 1 << 20, at)
                if not chunk:
                    break
                chunks.append(chunk)
                at += len(chunk)
            return b"".join(chunks).decode(errors="replace")
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _tail(self) -> str:
        lines = [ln for ln in self.log().strip().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    # -- stop -----------------------------------------------------------------------------------
    def stop(self, timeout: float = 3.0, check: bool = True) -> None:
        """SIGTERM the group, SIGKILL after ``timeout``, reap, and verify nothing is left.

        With ``check``, raises ServerError if the server had died on its own with an error
        (its last log line says why) or if a process of its group survived. Interrupting a
        stop (Ctrl-C while it waits) kills the group at once rather than leave it running.
        """
        proc = self.proc
        if proc is None or self._stopped:
            return
        died_early = proc.poll()
        try:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()
            leftover = self._wait_group_gone(timeout) if POSIX else []
        except BaseException:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            self._release()
        if not check:
            return
        if leftover:
            raise ServerError(f"processes {leftover} of the {self.model} server survived "
                              "SIGKILL; this is a bug in netlab, please report it")
        if self.port and _accepts(self.host, self.port):
            raise ServerError(f"port {self.port} still accepts connections after the "
                              f"{self.model} server stopped: a process it started left its "
                              "process group (setsid, setpgid or start_new_session)")
        if died_early is not None and died_early not in (0, -signal.SIGTERM):
            raise ServerError(f"the {self.model} server had already exited with status "
                              f"{died_early}: {self._tail()}")

    def _release(self) -> None:
        """Close everything of ours that pointed at the server process (idempotent)."""
        self._stopped = True
        proc = self.proc
        for pipe in (proc.stdin, proc.stdout):
            if pipe and not pipe.closed:
                pipe.close()
        _close_fd(self._lifeline)
        self._lifeline = None
        _remove(self.stats_path)
        if not self._log.closed:
            self._final_log = self.log()
            self._log.close()
        self._finalizer.detach()

    def _wait_group_gone(self, timeout: float) -> list:
        return wait_group_gone(self.proc, timeout)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and self.proc is not None and self.proc.poll() not in (None, 0):
            # the block failed, perhaps *because* the server died: say so next to the error
            note = f"netlab: the {self.model} server had exited: {self._tail()}"
            if hasattr(exc, "add_note"):
                exc.add_note(note)
            else:
                sys.stderr.write(note + "\n")
        self.stop(check=exc_type is None)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<netlab.Server {self.model} {self.url} pid={self.pid} {state}>"


def _dumps(spec: dict) -> bytes:
    """Pickle the spec; a student's function travels by value (cloudpickle) with its globals."""
    target = spec["target"]
    if not callable(target):
        return pickle.dumps(spec)
    import cloudpickle
    mod = sys.modules.get(getattr(target, "__module__", None) or "")
    if mod is not None and mod.__name__ != "__main__" and not mod.__name__.startswith("netlab"):
        cloudpickle.register_pickle_by_value(mod)    # e.g. a test module the child can't import
    try:
        return cloudpickle.dumps(spec)
    except Exception as e:
        raise ServerError(f"cannot send {getattr(target, '__name__', target)!r} to the server "
                          f"process ({e}); define it at the top level of a cell or module") from None


def serve(target: Union[str, Callable] = "epoll", **kwargs) -> Server:
    """Start a server model (by name) or your own ``fn(listen_sock, app)``; returns a Server.

    Keyword arguments: host ("127.0.0.1"), port (0: any free port), workers, backend_ms,
    cpu_us, body_bytes, and the model's own options (e.g. ``edge=True`` for epoll).
    """
    return Server(target, **kwargs).start()
