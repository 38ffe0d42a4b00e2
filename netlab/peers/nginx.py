"""nginx: a master and N worker processes, each an epoll loop, in C (nginx.conf.template, next
to this file, is its whole configuration). The production version of netlab's epoll model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from string import Template
from typing import Optional

from ..arguments import number
from ..env import fd_limit, need
from ..http import HELLO
from ..servers import NetlabError
from ..sockets import check_port, free_port
from ..supervisor import proc_group
from ..supervisor import check_wrap
from . import PEERS_DIR, Peer

def _nginx_answer(body) -> tuple:
    """(the nginx directive answering GET /, the body bytes to write to a file or None)."""
    if body is None:
        body = HELLO
    elif isinstance(body, int) and not isinstance(body, bool):
        number("body", body, 0, 16 * 1024 * 1024, integer=True)
        body = b"x" * body                  # like netlab's body_bytes
    elif isinstance(body, str):
        body = body.encode()
    if not isinstance(body, (bytes, bytearray)):
        raise NetlabError(f"body must be bytes, text or a size in bytes, not {body!r}")
    body = bytes(body)
    text = body.decode("latin-1")
    simple = len(body) <= 2048 and "$" not in text and all(
        32 <= ord(c) < 127 or c in "\n\t" for c in text)
    if simple:      # nginx's `return` answers from memory, like netlab's models
        quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .replace("\t", "\\t")
        return f'return 200 "{quoted}";', None
    # anything else (large, binary, or with '$', which `return` would expand) from a file
    return "root ${dir}/www;\n            try_files /body =404;", body


def _nginx_user() -> str:
    """As root, nginx's workers switch user: to nobody where it exists, else they stay root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "# not root: the workers run as this user"
    try:
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
    except (ImportError, KeyError):
        return "user root;"


def nginx(port: int = 0, workers: int = 1, body=None, *, connections: Optional[int] = None,
          wrap=None) -> Peer:
    """Start nginx (``workers`` worker processes, each an epoll loop) answering every path with
    ``body`` (netlab's default body; or bytes, or a size in bytes like ``body_bytes``).

    ``connections`` is nginx's worker_connections (default: as many as this process may open
    files, at most 65,536). nginx cannot bind port 0, so port 0 picks a free port first (and
    picks again if another program takes it before nginx binds it).
    """
    check_port(port)
    number("workers", workers, 1, 256, integer=True)
    answer, file_body = _nginx_answer(body)
    soft, hard = fd_limit() or (1024, 1024)
    if connections is None:
        connections = max(64, min(soft, 65536) - 32)
    number("connections", connections, 16, 1_000_000, integer=True)
    exe = need("nginx", "the built-in models run without it")
    nofile = min(max(soft, connections + 32), hard)     # raising past the hard limit fails
    wrap = check_wrap(wrap)
    template = Template((PEERS_DIR / "nginx.conf.template").read_text())
    version = _nginx_version(exe)
    first = free_port(port)
    d = tempfile.mkdtemp(prefix="netlab-nginx-")
    try:                            # until a Peer owns the folder, an error must remove it
        peer = _configured(d, exe, version, template, answer, file_body, workers, nofile,
                           connections, first, port, wrap)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    return peer.start()


def _configured(d, exe, version, template, answer, file_body, workers, nofile, connections,
                first, port, wrap) -> Peer:
    """The nginx Peer for workdir ``d``: its files written, not yet started."""
    os.chmod(d, 0o755)              # the workers (nobody, when we are root) must reach www/
    if file_body is not None:
        os.mkdir(os.path.join(d, "www"))
        Path(d, "www", "body").write_bytes(file_body)
        os.chmod(os.path.join(d, "www"), 0o755)
        os.chmod(os.path.join(d, "www", "body"), 0o644)
    conf = os.path.join(d, "nginx.conf")

    def configure(p: int):
        text = template.substitute(
            user=_nginx_user(), workers=workers, nofile=nofile,
            connections=connections, dir=d, host="127.0.0.1", port=p,
            answer=Template(answer).safe_substitute(dir=d))
        Path(conf).write_text(text)
        argv = [exe, "-p", d + "/", "-c", conf]
        if version >= (1, 19, 5):
            argv += ["-e", "stderr"]        # no write to /var/log before the config is read
        return p, argv

    chosen, argv = configure(first)

    def ready(peer: Peer) -> bool:
        # the pid file is written once the port is bound (by nginx, not by another program
        # that took it first); then wait for every worker, or a run's first second has fewer
        pidfile = os.path.join(d, "nginx.pid")
        counted = sys.platform.startswith("linux")         # elsewhere we cannot count them
        group = workers + 1 + bool(wrap)                    # master, workers, a wrapper
        return os.path.exists(pidfile) and (not counted or len(proc_group(peer.pid)) >= group)

    retry = (lambda: configure(free_port())) if port == 0 else None
    return Peer("nginx", argv, port=chosen, workers=workers, workdir=d, wrap=wrap, ready=ready,
                retry_port=retry)


_nginx_versions: dict = {}


def _nginx_version(exe: str) -> tuple:
    if exe not in _nginx_versions:
        try:
            out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
            m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out.stderr + out.stdout)
            _nginx_versions[exe] = tuple(map(int, m.groups())) if m else (0, 0, 0)
        except (OSError, subprocess.SubprocessError):
            _nginx_versions[exe] = (0, 0, 0)
    return _nginx_versions[exe]
