"""The course notes' Java NIO selector loop (NioServer.java, next to this file), completed into
a small HTTP/1.1 server: one thread, one Selector, the same design as netlab's reactor model.
The first start compiles it, once per version of its source."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from ..env import TOOLS, need
from ..servers import NetlabError, ServerError
from ..sockets import check_port, free_port
from ..supervisor import check_wrap
from . import PEERS_DIR, Peer, build_slot, cache_dir

JAVA_SOURCE = PEERS_DIR / "NioServer.java"


def java_classes() -> Optional[Path]:
    """The compiled NioServer, if this version of its source was compiled before."""
    key = hashlib.sha256(JAVA_SOURCE.read_bytes()).hexdigest()[:16]
    d = cache_dir("java") / key
    return d if (d / "NioServer.class").exists() else None


def compile_java() -> Path:
    """Compile NioServer.java once per version of its source, into ~/.cache/netlab/java/<hash>/
    (only the first start pays for javac)."""
    found = java_classes()
    if found:
        return found
    javac = shutil.which("javac")
    if javac is None:
        raise NetlabError(f"javac is not installed: {TOOLS['java'][1]} (the built-in models "
                          "run without it)")
    key = hashlib.sha256(JAVA_SOURCE.read_bytes()).hexdigest()[:16]
    final, tmp = build_slot("java", key, "the compiled Java server")
    try:
        out = subprocess.run([javac, "-d", str(tmp), str(JAVA_SOURCE)], capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            raise ServerError(f"javac could not compile NioServer.java: "
                              f"{(out.stderr.strip() or out.stdout.strip() or 'no output').splitlines()[-1]}")
        try:
            os.rename(tmp, final)
        except OSError:             # another process compiled it first: use theirs
            if not (final / "NioServer.class").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def java(port: int = 0, *, wrap=None) -> Peer:
    """Start the course notes' Java NIO selector loop, completed into a small HTTP/1.1 server
    (netlab/peers/NioServer.java): one thread, one Selector. The first start compiles it."""
    check_port(port)
    wrap = check_wrap(wrap)
    exe = need("java", "the built-in models run without it")
    classes = compile_java()
    if port:
        free_port(port)
    return Peer("java", [exe, "-cp", str(classes), "NioServer", str(port)], port=port,
                wrap=wrap, announce=r"Listening on [\d.]+:(\d+)").start()
