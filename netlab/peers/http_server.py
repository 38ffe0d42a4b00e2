"""``python -m http.server``: the notes' baseline, a thread per connection behind a listen
backlog of 5, HTTP/1.0. It shows where the course starts."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from ..http import HELLO
from ..sockets import check_port, free_port
from ..supervisor import check_wrap
from . import Peer


def http_server(port: int = 0, *, wrap=None) -> Peer:
    """Start it serving a folder whose index.html is netlab's default body. It logs every
    request, as it does in a terminal."""
    check_port(port)
    wrap = check_wrap(wrap)
    if port:
        free_port(port)
    workdir = tempfile.mkdtemp(prefix="netlab-http.server-")
    www = Path(workdir, "www")
    try:                            # until a Peer owns the folder, an error must remove it
        www.mkdir()
        (www / "index.html").write_bytes(HELLO)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    argv = [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1",
            "--directory", str(www)]
    return Peer("http.server", argv, port=port, workdir=workdir, wrap=wrap,
                announce=r"Serving HTTP on \S+ port (\d+)").start()
