"""Real servers run like netlab's models: nginx, Node.js, Java NIO, Tokio, asyncio on uvloop and
python -m http.server.

Why peers: to compare netlab's models with real servers under the same load. The lesson is that
the architecture matters more than the language. nginx (an epoll loop per worker process, in C),
the course notes' Node.js server (one libuv loop, in JavaScript), their Java NIO selector loop,
Tokio's runtime (in Rust) and asyncio on uvloop (libuv again) are the same design as netlab's
``epoll`` and ``reactor`` models, and they behave alike when the
same clients load them. ``python -m http.server``, the notes' baseline (a thread per
connection behind a listen backlog of 5), is there to show where the course starts.

    from netlab import peers
    with peers.nginx() as srv:                   # the same surface as netlab.serve(...)
        print(srv.url, srv.cpu_seconds())

One small module per peer sits next to its source or template file. Every peer is optional: a
missing program is one sentence with its install command, and the rest of netlab runs without
it. ``wrap=["strace", "-f", ...]`` runs a peer under a command prefix, as ``netlab.serve`` does.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

from ..env import TOOLS
from ..servers import ServerError, uvloop_missing
from ..supervisor import Supervised

PEERS_DIR = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 20.0


class Peer(Supervised):
    """A real server in its own process group: ``url``, ``host``, ``port``, ``pid``, ``alive``,
    ``cpu_seconds()``, ``log()`` (stdout and stderr), ``stop()``; a context manager.

    It runs in ``workdir`` (a temp folder of its own, removed once it is stopped). ``announce``
    is a regex that finds the port in its log when it picked one itself (port 0); ``ready``
    says when more than an accepting port is needed; ``retry_port`` gives another (port, argv)
    when another program took the port first (nginx cannot bind port 0).
    """

    kind = "peer"

    def __init__(self, model: str, argv: list, *, port: int, workers: int = 1,
                 announce: Optional[str] = None, workdir: Optional[str] = None,
                 env: Optional[dict] = None, wrap: Optional[Sequence[str]] = None,
                 ready: Optional[Callable[["Peer"], bool]] = None,
                 retry_port: Optional[Callable[[], tuple]] = None):
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"netlab-{model}-")
        super().__init__(model, cleanup=[self.workdir])
        self.workers = workers
        self.port = port or None
        self._argv, self._announce, self._env = argv, announce, env
        self._wrap = list(wrap or ())
        self._ready = ready
        self._retry_port = retry_port

    def start(self) -> "Peer":
        if self.proc is not None:
            raise ServerError(f"{self} was already started; create a new one")
        attempts = 5 if self._retry_port else 1
        ready = self._ready and (lambda: self._ready(self))
        try:
            for attempt in range(attempts):
                try:
                    self._spawn(self._wrap + self._argv, cwd=self.workdir, env=self._env)
                    self.wait_listening(STARTUP_TIMEOUT, self._announce, ready)
                    return self
                except ServerError:
                    if attempt + 1 == attempts or "Address already in use" not in self.log():
                        raise
                self._end(timeout=3.0)         # another program took the port: pick again
                self._log.close()
                self.proc = None
                self.port, self._argv = self._retry_port()
        except BaseException:
            self.stop(check=False)             # whatever failed, nothing of it is left
            raise
        raise AssertionError("unreachable")

    @property
    def address(self) -> str:
        """'HOST:PORT', the form ``serve(redis=...)`` and ``delay_proxy`` users take."""
        return f"{self.host}:{self.port}"


def cache_dir(kind: str) -> Path:
    """Where a peer built from source keeps its builds: ~/.cache/netlab/<kind>/ (or under
    XDG_CACHE_HOME), one folder per version of the source, so only the first start pays."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netlab" / kind


def build_slot(kind: str, key: str, what: str) -> tuple:
    """(the build's final folder, a fresh temp folder beside it to build in, then rename or
    copy from); ServerError in one sentence when the cache cannot be written."""
    final = cache_dir(kind) / key
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return final, Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    except OSError as e:
        raise ServerError(f"cannot write {what} to {final.parent} ({e.strerror or e}): set "
                          "XDG_CACHE_HOME to a writable folder") from None


from .http_server import http_server  # noqa: E402  (they build on Peer)
from .java import java, java_classes  # noqa: E402
from .nginx import nginx  # noqa: E402
from .node import node  # noqa: E402
from .redis import Redis, redis_binary, redis_server  # noqa: E402,F401  (a backend, not in PEERS)
from .delay import delay_proxy  # noqa: E402,F401  (latency in user space, not in PEERS)
from . import tokio as _tokio  # noqa: E402
from .tokio import tokio  # noqa: E402


class PeerSpec(NamedTuple):
    factory: Callable[..., Peer]
    tool: Optional[str]             # the program it needs on PATH (None: only Python)
    description: str


PEERS = {
    "nginx": PeerSpec(nginx, "nginx", "nginx: a master and N worker processes, each an epoll "
                      "loop, in C"),
    "node": PeerSpec(node, "node", "the notes' Node.js hello world: one libuv event loop"),
    "java": PeerSpec(java, "java", "the notes' Java NIO selector loop, one thread"),
    "tokio": PeerSpec(tokio, "cargo", "Tokio's default multi-thread runtime: a task per "
                      "connection, a worker thread per core (Rust)"),
    "tokio-current": PeerSpec(functools.partial(tokio, flavor="current"), "cargo",
                              "Tokio's current-thread runtime: one thread, one loop (Rust)"),
    "uvloop": PeerSpec(lambda wrap=None: _uvloop(wrap), None, "netlab's asyncio model on uvloop: "
                       "the same coroutines on libuv's loop (Node.js's), in C"),
    "http.server": PeerSpec(http_server, None, "python -m http.server: a thread per connection, "
                            "listen backlog 5"),
}


def _uvloop(wrap=None):
    """netlab's asyncio model on uvloop, started like a peer (a Server: the same surface)."""
    from ..lifecycle import serve
    srv = serve("asyncio", uvloop=True, wrap=wrap)
    srv.model = "uvloop"            # what tables and messages call it
    return srv


def available_peers() -> list:
    """[(name, available, reason)] for every peer; the reason says how to install what is
    missing ('' when it runs here)."""
    rows = []
    for name, spec in PEERS.items():
        reason = ""
        if name.startswith("tokio"):          # a build in the cache runs without cargo
            reason = _tokio.unavailable()
        elif spec.tool and shutil.which(spec.tool) is None:
            reason = f"{spec.tool} is not installed: {TOOLS[spec.tool][1]}"
        elif name == "java" and shutil.which("javac") is None and java_classes() is None:
            reason = f"javac is not installed (needed once, to compile): {TOOLS['java'][1]}"
        elif name == "uvloop":
            reason = uvloop_missing()
        rows.append((name, not reason, reason))
    return rows
