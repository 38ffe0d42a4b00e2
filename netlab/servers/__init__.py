"""The server models, in the order the course meets them, with what each needs to run.

Each model is one small module with ``serve(listen, app, ...)``: it gets a bound, listening
socket and the shared ``App`` and serves forever. Everything around that (creating the socket,
announcing it, stopping, reaping, checking for leaks) is the same for all of them and lives in
``netlab.lifecycle`` (the harness's side) and ``netlab.server_process`` (the server's).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import select as _select
import socket
from dataclasses import dataclass, field


class NetlabError(Exception):
    """An error with a one-sentence message meant for the user (no traceback needed)."""

    def _render_traceback_(self):
        # IPython/Jupyter calls this instead of printing a traceback: show just the sentence
        return [f"{type(self).__name__}: {self}"]


class ServerError(NetlabError):
    """A server or peer could not start, or it died, or it left something behind."""


class _Probed:
    """A (present here?, why not) pair found by trying, once, on first use: io_uring can be
    compiled in and still refused (a sysctl, a container's seccomp filter), and a trial costs
    a ring's setup, which importing netlab should not pay."""

    def __init__(self, probe):
        self._probe, self._value = probe, None

    def _get(self):
        if self._value is None:
            self._value = self._probe()
        return self._value

    def __iter__(self):
        return iter(self._get())

    def __getitem__(self, i):
        return self._get()[i]


def _uring_support():
    from .ring import support
    return support()


# feature -> (present here?, why not when absent). Checked by attribute, never by a failed call
# (except io_uring, which only a trial can tell: see _Probed).
FEATURES = {
    "fork": (hasattr(os, "fork"), "needs os.fork(), which Windows lacks (use WSL)"),
    "poll": (hasattr(_select, "poll"), "needs select.poll(), which Windows lacks (use WSL)"),
    "epoll": (hasattr(_select, "epoll"),
              "needs epoll, which is Linux-only (on macOS the reactor model uses kqueue)"),
    "reuseport": (hasattr(socket, "SO_REUSEPORT") and hasattr(_select, "epoll"),
                  "needs SO_REUSEPORT load balancing and epoll, which are Linux features"),
    "exclusive": (hasattr(_select, "EPOLLEXCLUSIVE"),
                  "needs EPOLLEXCLUSIVE (Linux 4.5 or later)"),
    "uring": _Probed(_uring_support),
}


def uvloop_missing() -> str:
    """Why asyncio cannot run on uvloop here, in one sentence ('' when it can)."""
    if importlib.util.find_spec("uvloop") is None:
        return ("uvloop is not installed: pip install uvloop (requirements.txt installs it "
                "where a wheel exists)")
    return ""


@dataclass(frozen=True)
class Model:
    name: str
    summary: str
    workers: str = ""            # what ``workers`` counts: "processes", "threads" or "" (n/a)
    default_workers: int = 1
    options: dict = field(default_factory=dict)   # extra keyword options: name -> default
    needs: tuple = ()
    reuseport: bool = False      # the listening socket must be created with SO_REUSEPORT
    always_forks: bool = False   # forks its workers even when there is only one

    @property
    def available(self) -> bool:
        return not self.reason

    @property
    def reason(self) -> str:
        """Why this model cannot run here ('' when it can)."""
        for need in self.needs:
            ok, why = FEATURES[need]
            if not ok:
                return why
        return ""

    @property
    def module(self):
        """Its module: ``netlab/servers/<name>.py``, or ``<name>_loop.py`` for the event loops
        whose names are standard modules (a file called select.py would shadow ``select``
        for anyone running Python inside that folder)."""
        return importlib.import_module(f"netlab.servers.{self.module_name}")

    @property
    def module_name(self) -> str:
        return f"{self.name}_loop" if self.name in ("select", "poll", "epoll", "asyncio") \
            else self.name

    def check(self, workers=None, options=None) -> int:
        """Validate arguments; return the worker count to use. Raises NetlabError."""
        if not self.available:
            raise NetlabError(f"the {self.name} model is not available here: {self.reason}")
        options = options or {}
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise NetlabError(f"the {self.name} model has no option {unknown[0]!r} "
                              f"(its options: {known})")
        for key, value in options.items():
            default = self.options[key]
            if isinstance(default, bool) and not isinstance(value, bool):
                raise NetlabError(f"option {key} must be True or False, not {value!r}")
        if options.get("uvloop") and uvloop_missing():
            raise NetlabError(uvloop_missing())
        if options.get("exclusive") and not FEATURES["exclusive"][0]:
            raise NetlabError(f"exclusive=True {FEATURES['exclusive'][1]}")
        if options.get("exclusive") and (workers or self.default_workers) < 2:
            raise NetlabError("exclusive=True only matters with workers > 1 (it decides which "
                              "of several processes waiting on one socket is woken)")
        if options.get("multishot"):
            from .ring import multishot_accept
            if why := multishot_accept():
                raise NetlabError(why)
        if workers is None:
            return self.default_workers
        if not self.workers:
            if workers != 1 or isinstance(workers, bool):
                raise NetlabError(f"the {self.name} model has no workers option: "
                                  "it always runs as one process")
            return 1
        from ..arguments import whole       # (it imports NetlabError from here)
        whole("workers", workers, 1, 1024)
        if workers > 1 and self.workers == "processes" and not FEATURES["fork"][0]:
            raise NetlabError(f"workers > 1 {FEATURES['fork'][1]}")
        return workers

    def forked_at_start(self, workers: int) -> int:
        """How many worker processes it forks once it is listening (0: it serves itself)."""
        if self.workers != "processes":
            return 0
        return workers if workers > 1 or self.always_forks else 0

    def run(self, listen, app, workers=None, **options) -> None:
        n = self.check(workers, options)
        if self.workers:
            options["workers"] = n
        self.module.serve(listen, app, **options)


_EVENT_LOOP = dict(workers="processes", default_workers=1)

MODELS = [
    Model("iterative", "one connection at a time in a single accept loop (attempt 1)"),
    Model("forking", "fork() a child process per connection (attempt 2)", needs=("fork",)),
    Model("preforked", "N processes forked up front, all blocking in accept() on one socket",
          workers="processes", default_workers=4, needs=("fork",), always_forks=True),
    Model("threaded", "a new thread per connection"),
    Model("prethreaded", "a pool of N threads taking turns on accept() under a mutex",
          workers="threads", default_workers=8, options={"lock": True}),
    Model("select", "one thread, select() over every connection (fds < 1024 only)",
          **_EVENT_LOOP),
    Model("poll", "one thread, poll() over an array of every connection", needs=("poll",),
          **_EVENT_LOOP),
    Model("epoll", "one thread, epoll: the kernel keeps the interest list (edge=True for ET)",
          options={"edge": False, "exclusive": False}, needs=("epoll",), **_EVENT_LOOP),
    Model("reactor", "the Reactor pattern: selectors.DefaultSelector dispatching to callbacks",
          **_EVENT_LOOP),
    Model("asyncio", "coroutines on the asyncio event loop (uvloop=True: on libuv's)",
          options={"uvloop": False}, **_EVENT_LOOP),
    Model("reuseport", "N processes, each with its own SO_REUSEPORT socket and epoll loop",
          workers="processes", default_workers=os.cpu_count() or 2, options={"edge": False},
          needs=("fork", "reuseport"), reuseport=True, always_forks=True),
    Model("uring", "one thread, io_uring: submit operations, reap completions (Linux 5.7+)",
          options={"batch": True, "multishot": False, "coop": True}, needs=("uring",),
          **_EVENT_LOOP),
]

_BY_NAME = {m.name: m for m in MODELS}


def get(name: str) -> Model:
    """The model called ``name``; a one-sentence NetlabError if there is none."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise NetlabError(f"unknown model {name!r}: choose one of "
                          f"{', '.join(_BY_NAME)}") from None
