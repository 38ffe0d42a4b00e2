"""Stack ripping, measured: the same guestbook handler written three ways, and what each costs.

von Behren, Condit and Brewer ("Why Events Are A Bad Idea (for high-concurrency servers)",
HotOS 2003) argue that an event loop forces the programmer to rip the stack: the code after a
call to a backend moves into a callback, and the local variables into a state object. Threads
keep the call a call. Async/await is the third way: the compiler rips the stack for you.

netlab runs ZeroHTTPd's guestbook (``netlab.guestbook``) in all three styles:

- **blocking** (``threaded``): ``BlockingBackend.respond`` makes each Redis call and waits;
- **states on the loop** (``epoll``): ``Session`` parks the request in a state, ``LoopBackend``
  sends the commands on the loop's own socket, and callbacks resume it when the replies come;
- **async/await** (``asyncio``): ``_guestbook`` awaits ``redis.asyncio``.

``code()`` counts what each style takes to write (functions, lines, callbacks or awaits);
``fanout()`` measures one request making K calls behind a backend d ms away (about K·d when
the calls are made one after another, about d when they are made at once); ``load()`` measures
throughput and p99 of the guestbook under C clients, behind the same delay.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import time

STYLES = {            # style -> (model, the functions that make up its guestbook path)
    "blocking": ("threaded", ["netlab.guestbook:BlockingBackend.respond"]),
    "states on the loop": ("epoll", [
        "netlab.servers.session:Session._advance", "netlab.servers.session:Session.backend_done",
        "netlab.servers.connection:Connection.schedule",
        "netlab.servers.connection:Connection.backend_done",
        "netlab.servers.backend:LoopBackend.call", "netlab.servers.backend:LoopBackend.ready",
        "netlab.servers.backend:LoopBackend._deliver"]),
    "async/await": ("asyncio", ["netlab.servers.asyncio_loop:_guestbook"]),
}


def _resolve(ref: str):
    import importlib
    module, _, qual = ref.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _lines(src: str) -> int:
    """Lines of code: not blank, not a comment, not the docstring."""
    tree = ast.parse(textwrap.dedent(src))
    doc = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            first = node.body[0]
            doc.update(range(first.lineno, first.end_lineno + 1))
    return sum(1 for i, line in enumerate(textwrap.dedent(src).splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in doc)


def code():
    """A DataFrame, a row per style: the functions its guestbook path spans, their lines of
    code, and the places where the request's stack is cut (a callback registered, or an
    ``await``) -- the states the programmer keeps, by hand or by compiler."""
    import pandas as pd
    rows = []
    for style, (model, refs) in STYLES.items():
        lines = cuts = 0
        for ref in refs:
            src = inspect.getsource(_resolve(ref))
            lines += _lines(src)
            tree = ast.parse(textwrap.dedent(src))
            cuts += sum(isinstance(n, ast.Await) for n in ast.walk(tree))
            cuts += sum(isinstance(n, ast.Call) and getattr(n.func, "attr", "") in
                        ("call", "call_later") for n in ast.walk(tree))
        rows.append(dict(style=style, model=model, functions=len(refs), lines=lines,
                         stack_cuts=cuts))
    return pd.DataFrame(rows)


def loop_wait(model: str = "epoll") -> dict:
    """The kernel's account of where ``model`` waits for Redis: it runs under ``strace -f`` for
    one guestbook request, and the trace says which fd connected to Redis, whether the loop
    added that fd to its own wait set (epoll_ctl, or the fd lists of poll/pselect6), and how
    many threads made those calls. A dict: model, redis_fd, registered, threads, wait_call."""
    import re
    import tempfile
    from ..client import fetch
    from ..experiments.syscalls import strace
    from ..lifecycle import serve
    from ..peers import redis_server
    from ..supervisor import remove
    wait = {"epoll": "epoll_ctl", "poll": "poll,ppoll", "select": "select,pselect6"}[model]
    fd, trace = tempfile.mkstemp(prefix="netlab-ripping-", suffix=".strace")
    import os
    os.close(fd)
    try:
        with redis_server() as rds:
            with serve(model, redis=rds.address,
                       wrap=[strace(), "-f", "-e", f"trace=connect,{wait}", "-o", trace]) as srv:
                status = fetch(srv.url, "/guestbook", timeout=30).status
            text = open(trace).read()
        m = re.search(rf"connect\((\d+), .*sin_port=htons\({rds.port}\)", text)
        redis_fd = int(m.group(1)) if m else None
        found = {"epoll": rf"epoll_ctl\(\d+, EPOLL_CTL_ADD, {redis_fd}, ",
                 "poll": rf"poll\(\[.*\{{fd={redis_fd}, ",
                 "select": rf"select6?\(\d+, \[[^\]]*\b{redis_fd}\b"}[model]
        calls = [ln for ln in text.splitlines()
                 if "connect(" in ln or any(f"{w}(" in ln for w in wait.split(","))]
        return dict(model=model, status=status, redis_fd=redis_fd,
                    registered=bool(m and re.search(found, text)),
                    threads=len({ln.split()[0] for ln in calls}), wait_call=wait.split(",")[0])
    finally:
        remove(trace)


def _backend(delay_ms: float):
    """A private Redis behind a delaying proxy: (context stack, the address servers use)."""
    import contextlib
    from ..peers import delay_proxy, redis_server
    stack = contextlib.ExitStack()
    rds = stack.enter_context(redis_server())
    address = rds.address
    if delay_ms:
        address = stack.enter_context(delay_proxy(rds.port, delay_ms)).address
    return stack, address


def fanout(ks=(1, 2, 4, 8), delay_ms: float = 5.0, requests: int = 5, styles=None,
           progress=False):
    """One client, ``requests`` requests of ``/fanout/K`` for each K, each style, behind a
    backend ``delay_ms`` away: a row per (style, K) with the median latency and what the two
    laws predict (K·d for calls made one after another, d for calls made at once)."""
    import pandas as pd
    from ..client import fetch
    from ..lifecycle import serve
    from ..progress import Progress
    styles = list(STYLES) if styles is None else list(styles)
    rows = []
    stack, address = _backend(delay_ms)
    with stack, Progress(progress, len(styles) * len(ks), "fan-out") as bar:
        for style in styles:
            model = STYLES[style][0]
            with serve(model, redis=address) as srv:
                fetch(srv.url, "/fanout/1", timeout=30)           # connect to Redis first
                for k in ks:
                    bar.step(f"{style}, K={k}")
                    times = []
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        reply = fetch(srv.url, f"/fanout/{k}", timeout=30)
                        times.append((time.perf_counter() - t0) * 1000)
                        if reply.status != 200:
                            raise RuntimeError(f"{model} answered /fanout/{k} with "
                                               f"{reply.status}: {reply.body[:200]!r}")
                    times.sort()
                    rows.append(dict(style=style, model=model, k=k, delay_ms=delay_ms,
                                     median_ms=times[len(times) // 2], min_ms=times[0],
                                     max_ms=times[-1], serial_law_ms=k * delay_ms,
                                     concurrent_law_ms=delay_ms))
    return pd.DataFrame(rows)


def load(concurrency: int = 20, delay_ms: float = 5.0, duration: float = 2.0, styles=None,
         progress=False, **load_kwargs):
    """Every style's guestbook (GET /guestbook) under ``concurrency`` clients behind a backend
    ``delay_ms`` away: one ``netlab.measure`` Result row per style."""
    from ..harness import measure
    from ..lifecycle import serve
    from ..progress import Progress
    from ..results import frame
    styles = list(STYLES) if styles is None else list(styles)
    results = []
    stack, address = _backend(delay_ms)
    with stack, Progress(progress, len(styles), "guestbook load") as bar:
        for style in styles:
            bar.step(style)
            with serve(STYLES[style][0], redis=address) as srv:
                results.append(measure(srv, concurrency, duration=duration, path="/guestbook",
                                       **load_kwargs))
    df = frame(results)
    df.insert(0, "style", styles)
    return df


def plot(df, ax=None, title=None):
    """``fanout()``'s table as lines: median latency against K for each style, with the two
    laws (K·D dashed, D dotted). Returns the Figure."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    d = float(df["delay_ms"].iloc[0])
    ks = sorted(df["k"].unique())
    for style, g in df.groupby("style", sort=False):
        ax.plot(g.k, g.median_ms, marker="o", label=style)
    ax.plot(ks, [k * d for k in ks], "k--", lw=1, label="K · D (one after another)")
    ax.axhline(d, color="grey", ls=":", lw=1, label="D (all at once)")
    ax.set(xlabel="calls per request (K)", ylabel="latency of one request (ms, median)",
           title=title or f"Fan-out with Redis {d:g} ms away")
    ax.legend(fontsize="small")
    return ax.figure


def redis_connections(model: str, clients: int = 20, requests: int = 200) -> int:
    """How many connections ``model`` holds open to Redis after ``clients`` concurrent
    clients made ``requests`` guestbook requests: counted by Redis (CLIENT LIST), once the
    number has settled (a forking server's children close theirs as they exit)."""
    from ..lifecycle import serve
    from ..load import run
    from ..monitor import wait_until
    from ..peers import redis_server
    with redis_server() as rds, serve(model, redis=rds.address) as srv:
        db = rds.client()
        run(srv.url, clients, requests=requests, path="/guestbook", timeout=30)
        counts = []

        def settled() -> bool:
            counts.append(len(db.client_list()) - 1)          # not our own
            return len(counts) >= 5 and len(set(counts[-5:])) == 1
        wait_until(settled, timeout=10, interval=0.05)
        db.close()
        return counts[-1]
