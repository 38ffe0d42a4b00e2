"""Completion against readiness, measured: the uring model (io_uring) next to epoll, on the same
HTTP, the same load generator and the same harness.

epoll answers "which sockets are ready?", and the loop then makes each recv and send itself: a
system call each. io_uring is told "do this recv, this send", in entries written to a ring in
shared memory, and one ``io_uring_enter`` hands the kernel all of them and waits for their
completions. So this module counts, for each model and for ``batch=True`` (every SQE of a round
in the enter that also waits) and ``batch=False`` (an enter per operation):

- ``syscalls``: system calls per request (strace -c, an idle twin subtracted: ``syscalls``);
- ``cpu``: CPU per request, user and system, throughput and p99, server pinned to one core so
  the load generator has the other, each run with what limited it (``ratios`` reads them, and
  says when a comparison is void);
- ``idle``: K idle connections held (``c10k.Holders``), the server's memory per connection
  and the kernel's, then busy clients' throughput next to them;
- ``batching``: ``io_uring_enter`` calls per request against concurrency, which sets how many
  completions one enter can reap.

    from netlab.experiments import completion
    completion.syscalls(modes=("keep-alive",))
"""

from __future__ import annotations

from ..progress import Progress
from ..servers import NetlabError

VARIANTS = {"epoll": ("epoll", {}), "uring": ("uring", {}),
            "uring, batch=False": ("uring", {"batch": False}),
            "uring, coop=False": ("uring", {"coop": False})}
MODES = {"keep-alive": True, "a connection per request": False}
READINESS_CALLS = ("epoll_wait", "recvfrom", "sendto", "epoll_ctl", "accept4", "close")


def sizes() -> dict:
    """Class sizes, or small ones in quick mode (NETLAB_QUICK)."""
    from ..env import quick_mode
    if quick_mode():
        return dict(requests=300, concurrency=4, clients=20, duration=0.4, repeats=2,
                    held=1000, levels=(1, 16))
    return dict(requests=2000, concurrency=4, clients=50, duration=1.5, repeats=3,
                held=10_000, levels=(1, 4, 16, 64))


def unavailable() -> str:
    """Why the uring model cannot run here, in one sentence ('' when it can)."""
    from ..servers import get
    return get("uring").reason


def _variants(names):
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise NetlabError(f"variants are {', '.join(VARIANTS)}, not {unknown or names!r}")
    return names


def _modes(names):
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in MODES]
    if unknown or not names:
        raise NetlabError(f"modes are {', '.join(repr(m) for m in MODES)}, "
                          f"not {unknown or names!r}")
    return names


def _each(modes, variants, title, progress, doing=""):
    """(mode, variant, model, options) for every mode × variant, with a progress bar."""
    modes, variants = _modes(modes), _variants(variants)
    with Progress(progress, len(modes) * len(variants), title) as bar:
        for mode in modes:
            for v in variants:
                bar.step(f"{v}, {mode}{doing}")
                yield (mode, v) + VARIANTS[v]


def syscalls(variants=("epoll", "uring", "uring, batch=False"), modes=tuple(MODES), requests=None,
             concurrency=None, progress=False):
    """System calls per request under strace: a row per (mode, variant, syscall) with
    calls_per_request and errors_per_request. strace slows every call: counts, not speeds."""
    import pandas as pd
    from . import syscalls as sc
    d = sizes()
    frames = [sc.profile(model, requests or d["requests"], concurrency or d["concurrency"],
                         keepalive=MODES[mode], **opts).assign(mode=mode, variant=v)
              for mode, v, model, opts in _each(modes, variants, "syscalls", progress,
                                                ", under strace")]
    out = pd.concat(frames, ignore_index=True)
    return out[["mode", "variant", "syscall", "calls_per_request", "errors_per_request"]]


def per_request(calls):
    """``syscalls``'s rows → a row per (mode, variant): io_uring_enter, the readiness loop's
    calls (epoll_wait, recvfrom, sendto, epoll_ctl, accept4, close) and all, per request."""
    wide = calls.pivot_table(index=["mode", "variant"], columns="syscall",
                             values="calls_per_request", aggfunc="sum", fill_value=0.0)
    out = wide.reindex(columns=["io_uring_enter", *READINESS_CALLS], fill_value=0.0)
    out["all"] = wide.sum(axis=1)
    return out


def cpu(variants=("epoll", "uring"), modes=tuple(MODES), concurrency=None, duration=None,
        repeats=None, progress=False):
    """Each variant in each mode, the server pinned to core 0 (``pin=True``): ``repeats`` runs
    of ``duration`` s with ``concurrency`` clients, a row each (netlab.sweep's columns), plus
    mode, variant and the server's user and system CPU per request (µs)."""
    import pandas as pd
    from ..harness import sweep
    d = sizes()
    frames = [sweep([model], [concurrency or d["clients"]], pin=True,
                    duration=duration or d["duration"], repeats=repeats or d["repeats"],
                    keepalive=MODES[mode], server_options=opts,
                    timeout=5.0).assign(mode=mode, variant=v)
              for mode, v, model, opts in _each(modes, variants, "cpu", progress)]
    runs = pd.concat(frames, ignore_index=True)
    n = runs["requests"].clip(lower=1)
    runs["user_us_per_req"] = runs["server_cpu_user_s"] / n * 1e6
    runs["sys_us_per_req"] = runs["server_cpu_sys_s"] / n * 1e6
    return runs


RATIO_COLUMNS = ("server_cpu_us_per_req", "user_us_per_req", "sys_us_per_req", "rps", "p99_ms")


def ratios(runs, of="uring", to="epoll"):
    """Per mode, the medians of ``of`` ÷ those of ``to`` (CPU per request, user, system,
    throughput, p99), taken from the runs the server's CPU limited: only those measure the
    server. ``bound`` is False (the comparison void, ``why`` says what limited the runs) unless
    at least half of each variant's runs were server-bound; ``why`` also says how many were."""
    import pandas as pd
    rows = []
    for mode, g in runs.groupby("mode", sort=False):
        g = g[g["variant"].isin([of, to])]
        ok = g[g["limited_by"] == "server-cpu"]
        a, b = ok[ok["variant"] == of], ok[ok["variant"] == to]
        counts = g["variant"].value_counts()
        bound = all(len(x) and 2 * len(x) >= counts.get(v, 0) for x, v in ((a, of), (b, to)))
        other = sorted(set(g["limited_by"]) - {"server-cpu"})
        if bound:
            row = {c: a[c].median() / b[c].median() for c in RATIO_COLUMNS}
            why = (f"from the {len(ok)} of {len(g)} runs limited by the server's CPU" +
                   (f" (the others, by {', '.join(other)}, left out)" if other else ""))
        else:
            row = {c: g.loc[g["variant"] == of, c].median() / g.loc[g["variant"] == to, c].median()
                   for c in RATIO_COLUMNS}
            why = (f"only {len(ok)} of {len(g)} runs were limited by the server's CPU (the others "
                   f"by {', '.join(other)}): the comparison is void, rerun on a quieter machine")
        row.update(mode=mode, bound=bound, why=why)
        rows.append(row)
    return pd.DataFrame(rows).set_index("mode")


def idle(variants=("epoll", "uring"), held=None, clients=None, duration=None, progress=False):
    """Per variant, one server: busy keep-alive clients measured (pinned) with no idle
    connection, then with ``held`` idle ones (as many as the open-file limit allows, which is
    said in ``note``). A row per (variant, held): rps, p99_ms, server CPU per request,
    limited_by, and for the held row the server's USS and the kernel's slab per idle
    connection (kB; the slab counts both ends of each loopback pair)."""
    import pandas as pd
    from ..env import raise_fd_limit
    from ..harness import measure
    from ..lifecycle import serve
    from ..monitor import server_usage
    from .c10k import Holders, kernel_usage
    variants, d = _variants(variants), sizes()
    clients, duration = clients or d["clients"], duration or d["duration"]
    want = held or d["held"]
    k = max(0, min(want, raise_fd_limit() - 64 - clients))
    note = "" if k == want else (f"{k:,} idle connections, not {want:,}: the open-file limit "
                                 "(ulimit -n) allows no more")
    rows = []
    with Progress(progress, 2 * len(variants), "idle") as bar:
        for v in variants:
            model, opts = VARIANTS[v]
            with serve(model, **opts) as srv:
                bar.step(f"{v}, no idle connection")
                r0 = measure(srv, clients, duration=duration, keepalive=True, pin=True)
                s0, k0 = server_usage(srv.pid), kernel_usage()
                bar.step(f"{v}, {k:,} idle connections")
                with Holders(srv.host, srv.port, pid=srv.pid) as holders:
                    got = holders.grow(k, timeout=20 + k / 500) if k else {"held": 0}
                    s1, k1 = server_usage(srv.pid), kernel_usage()
                    accepted = s1["sockets"] - s0["sockets"]
                    r1 = measure(srv, clients, duration=duration, keepalive=True, pin=True)
            for n, r, extra in ((0, r0, {}), (k, r1, dict(
                    accepted=accepted, connected=got["held"],
                    server_kb_per_conn=(s1["uss"] - s0["uss"]) / max(accepted, 1) / 1024,
                    kernel_kb_per_conn=(k1["slab"] - k0["slab"]) / max(got["held"], 1) / 1024))):
                rows.append(dict(variant=v, held=n, rps=r.load.rps, p99_ms=r.load.p99_ms,
                                 server_cpu_us_per_req=r.row()["server_cpu_us_per_req"],
                                 limited_by=r.limited_by, errors=r.load.error_count, **extra))
    df = pd.DataFrame(rows)
    df.attrs.update(note=note, clients=clients)
    return df


def batching(levels=None, variants=("uring", "uring, batch=False", "epoll"), requests=None,
             progress=False):
    """System calls per request, keep-alive, against concurrency (clients), under strace: a row
    per (variant, clients) with io_uring_enter (or epoll_wait) per request, all calls per
    request, and for uring the completions each enter reaped (2 per request, recv and send,
    over the enters: how much one call carries)."""
    import pandas as pd
    from . import syscalls as sc
    variants, d = _variants(variants), sizes()
    levels = list(levels or d["levels"])
    rows = []
    with Progress(progress, len(levels) * len(variants), "batching") as bar:
        for c in levels:
            for v in variants:
                bar.step(f"{v}, {c} clients, under strace")
                model, opts = VARIANTS[v]
                per = sc.profile(model, requests or d["requests"], c, keepalive=True,
                                 **opts).set_index("syscall")["calls_per_request"]
                wait = "io_uring_enter" if model == "uring" else "epoll_wait"
                enters = per.get(wait, 0.0)
                rows.append(dict(variant=v, clients=c, waits_per_request=enters,
                                 syscalls_per_request=per.sum(),
                                 completions_per_enter=2 / enters if model == "uring" and enters
                                 else float("nan")))
    return pd.DataFrame(rows)


def plot_batching(df, ax=None):
    """System calls per request against clients, a line per variant (log x)."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for v, g in df.groupby("variant", sort=False):
        ax.plot(g["clients"], g["syscalls_per_request"], "o-", label=v)
    ax.set(xscale="log", xlabel="keep-alive clients", ylabel="system calls per request",
           title="What one system call carries: strace -c, an idle twin subtracted")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax.figure
