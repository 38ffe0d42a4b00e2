"""Sockets both sides use: the server process binds with them, the harness probes with them.

Every port mistake (in use, privileged, not an address of this machine) becomes one sentence,
the same one whether a netlab model, a peer such as nginx, or the harness asked for the port.
"""

from __future__ import annotations

import errno
import os
import socket

from .servers import ServerError

LOOPBACK = "127.0.0.1"


def open_listener(host: str, port: int, reuseport: bool = False) -> socket.socket:
    """Bind and listen; a port in use or a bad address becomes one sentence."""
    check_port(port)
    check_host(host)
    if reuseport:
        # SO_REUSEPORT would quietly join another server already on this port and split its
        # clients with it; an ordinary bind first proves the port is ours
        port = free_port(port, host)
    return bind(host, port, reuseport, listen=True)


def bind(host: str, port: int, reuseport: bool = False, listen: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (listening if asked), or ServerError in one sentence."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":  # restart on a port in TIME_WAIT; never share one being listened on
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


def free_port(port: int = 0, host: str = LOOPBACK) -> int:
    """``port`` if nothing listens on it now (else the sentence of :func:`bind`), or for port 0
    a free port: for servers that cannot bind port 0 themselves (nginx, redis-server), and so
    that a port in use fails at once, the same way for every server."""
    check_port(port)
    probe = bind(host, port)
    port = probe.getsockname()[1]
    probe.close()
    return port


def accepts(host: str, port: int) -> bool:
    """Does something accept TCP connections on host:port right now?"""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def check_port(port) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ServerError(f"port must be a whole number from 0 to 65535, not {port!r}")


def check_host(host) -> None:
    if not isinstance(host, str) or not host.strip():
        raise ServerError(f"host must be an address such as 127.0.0.1, not {host!r} (an empty "
                          "host would listen on every interface)")


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
