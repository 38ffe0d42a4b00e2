"""Tokio, the runtime the course notes' Rust example uses (tokio_src/, next to this file): a
hello server as a peer, and the notes' mini-redis-style client. The server runs a task per
connection on the multi-thread runtime (``#[tokio::main]``'s default: a worker thread per
core, each able to wait in epoll_wait) or on the current-thread runtime (one thread,
one loop, like netlab's epoll model and Node's libuv).

It is built offline, once per version of its source, from Debian's packaged crates: crates.io
is not needed (``apt-get install cargo librust-tokio-dev``; a cargo source replacement points
at /usr/share/cargo/registry).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from ..env import TOOLS
from ..servers import NetlabError, ServerError
from ..sockets import check_port, free_port
from ..supervisor import check_wrap
from . import PEERS_DIR, Peer, build_slot, cache_dir

SOURCE = PEERS_DIR / "tokio_src"
BINARIES = ("tokio-hello", "tokio-redis-client")
REGISTRY = Path("/usr/share/cargo/registry")
INSTALL = TOOLS["cargo"][1]      # apt-get install cargo librust-tokio-dev
FLAVORS = ("multi", "current")
CARGO_CONFIG = f"""# offline: crates come from Debian's packages, never from crates.io
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "{REGISTRY}"

[net]
offline = true
"""


def _key() -> str:
    h = hashlib.sha256()
    for path in [SOURCE / "Cargo.toml", *sorted((SOURCE / "src" / "bin").glob("*.rs"))]:
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def tokio_binary(name: str = "tokio-hello") -> Optional[Path]:
    """A built binary (``BINARIES``), if this version of the source was built before."""
    exe = cache_dir("tokio") / _key() / name
    return exe if exe.exists() else None


def unavailable() -> str:
    """Why Tokio cannot run here, in one sentence ('' when it can, built or buildable)."""
    if tokio_binary() is not None:
        return ""
    if shutil.which("cargo") is None:
        return f"cargo is not installed: {INSTALL}"
    if not any(REGISTRY.glob("tokio-1*")):
        return f"Debian's tokio crates are not installed: {INSTALL}"
    return ""


def build(name: str = "tokio-hello") -> Path:
    """Build tokio_src with cargo, offline, into ~/.cache/netlab/tokio/<hash>/ (the first
    start pays for it: about 10 s; later starts reuse it); the path of binary ``name``."""
    found = tokio_binary(name)
    if found:
        return found
    why = unavailable()
    if why:
        raise NetlabError(why)
    final, work = build_slot("tokio", _key(), "the Tokio server")
    try:
        shutil.copytree(SOURCE, work / "src-tree")
        (work / "src-tree" / ".cargo").mkdir(exist_ok=True)
        (work / "src-tree" / ".cargo" / "config.toml").write_text(CARGO_CONFIG)
        out = subprocess.run(["cargo", "build", "--release", "--offline", "--quiet"],
                             cwd=work / "src-tree", capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, CARGO_TARGET_DIR=str(work / "target")))
        if out.returncode != 0:
            lines = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()
            error = next((ln for ln in lines if ln.startswith("error")), lines[-1])
            raise ServerError(f"cargo could not build the Tokio server ({error.strip()}); "
                              f"{INSTALL} provides what it needs")
        final.mkdir(exist_ok=True)
        for binary in BINARIES:               # the server last: its presence means "built"
            shutil.copy2(work / "target" / "release" / binary, final / f".{binary}")
        for binary in reversed(BINARIES):
            os.replace(final / f".{binary}", final / binary)   # whole, or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final / name


def tokio(port: int = 0, flavor: str = "multi", *, wrap=None) -> Peer:
    """Start the Tokio hello server on ``port`` (0: it picks one and says which), on the
    ``flavor`` runtime: "multi" (the default of ``#[tokio::main]``) or "current"."""
    check_port(port)
    if flavor not in FLAVORS:
        raise NetlabError(f"flavor is 'multi' or 'current', not {flavor!r}")
    wrap = check_wrap(wrap)
    exe = build()
    if port:
        free_port(port)
    name = "tokio" if flavor == "multi" else "tokio-current"
    return Peer(name, [str(exe), str(port), flavor], port=port, wrap=wrap,
                announce=r"Listening on [\d.]+:(\d+)").start()
