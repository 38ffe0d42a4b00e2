"""The course notes' Node.js hello-world server (hello.mjs, next to this file): one thread, one
libuv event loop, the same design as netlab's epoll model."""

from __future__ import annotations

from ..env import need
from ..sockets import check_port, free_port
from ..supervisor import check_wrap
from . import PEERS_DIR, Peer


def node(port: int = 0, *, wrap=None) -> Peer:
    """Start hello.mjs on ``port`` (0: it picks one and says which)."""
    check_port(port)
    wrap = check_wrap(wrap)
    exe = need("node", "the built-in models run without it")
    if port:
        free_port(port)
    return Peer("node", [exe, str(PEERS_DIR / "hello.mjs"), str(port)], port=port, wrap=wrap,
                announce=r"Listening on [\d.]+:(\d+)").start()
