"""Start a server in its own process group, wait until it listens, stop it, prove nothing is left.

Why a separate process: the notebook kernel never blocks and never forks (forking a process
that runs threads, like a Jupyter kernel, is unsafe); the server's CPU and memory can be measured
apart from the client's; and stopping can kill the whole process group, children included.

    with netlab.serve("epoll", backend_ms=10) as srv:
        ...  # srv.url, srv.port, srv.pid

A student's own server function ``fn(listen_sock, app)`` runs the same way: it is shipped to
the server process by value (cloudpickle), so functions defined in a notebook cell work.

This is the harness's side. The server process's side is ``netlab.server_process``; starting,
watching and stopping a process group is ``netlab.supervisor``'s, shared with the peers.
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence, Union

from . import servers
from .server_process import check_function
from .servers import ServerError
from .sockets import check_host, check_port
from .supervisor import Supervised, check_wrap, python_env, remove
from .workload import Workload

CHILD = "from netlab.server_process import child_main; child_main()"


class Server(Supervised):
    """A running server: ``url``, ``host``, ``port``, ``pid``; a context manager that stops it.

    ``wrap`` runs the server under a command prefix, e.g. ``["strace", "-f", "-c", "-o", path]``
    (tracing needs the tracer to start the server: attaching to a running one needs privileges).
    The prefix's process is then ``pid``, the group leader; it gets the same SIGTERM on stop,
    so it must outlive the server it wraps (strace -o blocks SIGTERM and writes its summary
    when the server exits).
    """

    kind = "server"
    clean_exits = (0, -signal.SIGTERM)

    def __init__(self, target: Union[str, Callable] = "epoll", *, host: str = "127.0.0.1",
                 port: int = 0, workers: Optional[int] = None, backend_ms: float = 0,
                 cpu_us: float = 0, body_bytes: Optional[int] = None, trace: bool = False,
                 redis: Optional[str] = None, startup_timeout: float = 15.0, wrap: Optional[Sequence[str]] = None,
                 **options):
        if callable(target):
            check_function(target, options, workers)
            name = getattr(target, "__name__", "custom")
            self.workers = 1
        else:
            model = servers.get(target)
            self.workers = model.check(workers, options)
            name = model.name
        super().__init__(name)
        try:
            workload = Workload(backend_ms, cpu_us, body_bytes, trace, redis)
        except (ValueError, TypeError) as e:
            raise ServerError(str(e)) from None
        check_port(port)
        check_host(host)
        if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) \
                or not 0 < startup_timeout <= 600:
            raise ServerError(f"startup_timeout must be seconds between 0 and 600, not "
                              f"{startup_timeout!r}")
        self._wrap = check_wrap(wrap) or []
        self.host, self.options, self.workload = host, options, workload
        self._spec = dict(target=target, host=host, port=port, workers=workers,
                          workload=workload.as_dict(), options=options)
        self._startup_timeout = startup_timeout
        self.stats_path: Optional[str] = None     # where the server answers usage questions

    # -- start --------------------------------------------------------------------------------
    def start(self) -> "Server":
        if self.proc is not None:
            raise ServerError("this server was already started; create a new one")
        spec = dict(self._spec, parent=os.getpid(),
                    # PDEATHSIG follows the thread that forks us: only trust the main thread
                    die_with_parent=threading.current_thread() is threading.main_thread()
                    and not self._wrap)     # a wrapped server's parent is the wrapper
        if os.name == "posix" and not self._wrap:   # a wrapper's pid is not the server's
            fd, self.stats_path = tempfile.mkstemp(prefix="netlab-usage-", suffix=".json")
            os.close(fd)
            spec["stats"] = self.stats_path
            self._cleanup += [self.stats_path, self.stats_path + ".tmp"]
        try:
            payload = _dumps(spec)
        except BaseException:
            remove(*self._cleanup)          # no server was started to remove it
            raise
        self._spawn(self._wrap + [sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, env=python_env())
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
                raise ServerError(self.last_line() or f"the {self.model} server exited with "
                                  f"status {self.proc.returncode} while forking its workers")
            return len(psutil.Process(self.proc.pid).children()) >= want

        if not wait_until(forked, timeout=self._startup_timeout, interval=0.01):
            raise ServerError(f"the {self.model} server did not fork its {want} workers "
                              f"within {self._startup_timeout:.0f} s; its log: {self.last_line()}")

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
                                      f"{self._startup_timeout:.0f} s; its log: {self.last_line()}")
                if sel.select(left):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        self.proc.wait()
                        raise ServerError(self.last_line() or f"the {self.model} server exited "
                                          f"with status {self.proc.returncode} before listening")
                    buf += chunk
        out.close()
        return buf.split(b"\n", 1)[0].decode()


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
    cpu_us, body_bytes, trace (stamp each answer with the process and thread that produced it,
    for ``netlab.timeline``), redis ('HOST:PORT' of the Redis behind ``/guestbook``; see
    ``netlab.peers.redis_server``), and the model's own options (e.g. ``edge=True`` for epoll).
    """
    return Server(target, **kwargs).start()
