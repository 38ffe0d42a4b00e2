"""One measured run, and sweeps of them: load from the client side, usage from the server side,
and a verdict on what limited the result — printed next to every number.

    with netlab.serve("epoll") as srv:
        r = netlab.measure(srv, concurrency=100, duration=2)
    r.limited_by, r.load.rps, r.load.p99_ms

    df = netlab.sweep(["threaded", "epoll"], concurrency=[1, 10, 100], duration=1)
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Iterable, Optional, Sequence

from . import load as _load
from .arguments import whole
from .client import fetch
from .env import machine, quick_mode
from .lifecycle import serve
from .monitor import Monitor, pin as _pin, server_cores, settle_sockets
from .progress import Progress
from .results import Result, frame, limited_by, save, spread_warning
from .servers import NetlabError


def _cores_split(cpus: int):
    """Pinned runs: the server gets core 0, the load generator the rest."""
    if cpus < 2:
        raise NetlabError("pinning needs at least 2 cores (one for the server, one for the "
                          "load generator); run with pin=False")
    return [0], list(range(1, cpus))


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle, since boot."""
    import psutil
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)


def measure(server, concurrency: int = 10, requests: Optional[int] = None,
            duration: Optional[float] = None, *, pin: bool = False, repeat: int = 0,
            interval: float = 0.1, **load_kwargs) -> Result:
    """Load ``server`` (a running netlab Server or peer) and watch it: one ``results.Result``.

    ``pin=True`` puts the server on core 0 and the load generator on the others, so neither
    steals the other's CPU and ``limited_by`` is clean. Other keywords go to ``netlab.load.run``
    (keepalive, slow, idle, think_ms, processes, timeout, path, ...).
    """
    if not hasattr(server, "url") or not getattr(server, "alive", False):
        raise NetlabError("measure() needs a running server: `with netlab.serve(\"epoll\") as "
                          "srv: netlab.measure(srv)`")
    cpus = os.cpu_count() or 1
    if pin:
        server_cpus, client_cpus = _cores_split(cpus)
        _pin(server, server_cpus)
        load_kwargs["cpus"] = client_cpus
        load_kwargs.setdefault("processes", len(client_cpus))
    cores = server_cores(server)
    mon = Monitor(server, interval=interval, cores=cores)
    before = []

    def started():            # idle connections are held: count from here
        if load_kwargs.get("idle"):   # once accepted: accepting them is not the requests' work
            settle_sockets(server.pid, until=time.monotonic() + 5.0, want=load_kwargs["idle"])
        before.append((_machine_busy(), _own_cpu()))
        mon.start()

    try:
        lr = _load.run(server.url, concurrency, requests, duration, on_start=started,
                       **load_kwargs)
    finally:
        if before:
            usage = mon.stop()
    # what everything else on the machine did meanwhile: a busy neighbour disturbs any number
    # (this process — the monitor's thread, a notebook kernel — is part of measuring, not other,
    # but the cores it took were not there for the server or the client either)
    busy0, own0 = before[0]
    own = _own_cpu() - own0
    others = max(0.0, (_machine_busy() - busy0 - own - usage.cpu_s - lr.client_cpu_s)
                 / max(usage.seconds, 1e-9))
    measuring = max(0.0, own) / max(usage.seconds, 1e-9)
    verdict, why = limited_by(lr.duration_s, usage.cpu_s, usage.cores, lr.client_cpu_s,
                              lr.client_cores, cpus, others + measuring)
    if others >= 0.5:
        why += (f"; other processes kept {others:.1f} core(s) busy meanwhile, so the absolute "
                "numbers are disturbed: rerun on a quieter machine")
    wl = getattr(server, "workload", None)
    workload = wl.as_dict() if hasattr(wl, "as_dict") else {}
    if not workload.get("trace"):       # instrumentation, not load: a column only when it was on
        workload.pop("trace", None)
    return Result(model=getattr(server, "model", "server"), workload=workload, load=lr,
                  server=usage, limited_by=verdict, why=why, machine=machine(),
                  when=datetime.datetime.now().isoformat(timespec="seconds"), repeat=repeat,
                  others_cores=round(others, 3))


def _as_list(x, name, kind=int) -> list:
    vals = [x] if isinstance(x, (int, float, str)) else list(x)
    if not vals:
        raise NetlabError(f"{name} needs at least one value")
    for v in vals:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NetlabError(f"{name} must be positive whole numbers, not {v!r}")
    return vals


def sweep(models: Sequence, concurrency: Iterable = (1, 10, 100), *,
          duration: Optional[float] = None, requests: Optional[int] = None, repeats: int = 1,
          warmup: float = 0.3, workloads: Sequence[dict] = ({},), server_options: dict = None,
          pin: bool = False, progress: bool = False, spread: float = 0.2,
          save_as: Optional[str] = None, fresh_server: bool = False, **load_kwargs):
    """Every model × workload × concurrency × repeat: one DataFrame row per run.

    Each (model, workload) gets one server, warmed up with a short run first (imports, caches,
    the first fork) that is not recorded. ``fresh_server=True`` starts a new one for every
    concurrency level instead: a server that queues work it cannot refuse (the iterative model
    behind a slow backend) would otherwise carry one level's backlog into the next. ``workloads`` are dicts of serve() keywords
    (backend_ms, cpu_us, body_bytes). Repeats that disagree by more than ``spread`` produce a
    warning (in ``df.attrs["warnings"]``, and printed when ``progress``). ``save_as`` writes the
    table under data/runs/ with its metadata.
    """
    models = [models] if isinstance(models, str) or callable(models) else list(models)
    if not models:
        raise NetlabError("sweep needs at least one model")
    levels = _as_list(concurrency, "concurrency")
    whole("repeats", repeats, 1, 20)
    if duration is None and requests is None:
        duration = 0.5 if quick_mode() else 2.0
    results, warnings = [], []
    bar = Progress(progress, len(models) * len(workloads) * len(levels) * repeats, "sweep")

    def one_level(srv, c, wl):
        rates = []
        for rep in range(repeats):
            bar.step(f"{srv.model}, {c} clients" + (f", repeat {rep + 1}" if repeats > 1 else ""))
            r = measure(srv, c, requests, duration, pin=pin, repeat=rep, **load_kwargs)
            results.append(r)
            rates.append(r.load.rps)
        w = spread_warning(rates, spread)
        if w:
            warnings.append(f"{srv.model} c={c} {wl or ''}: {w}")
            bar.note(f"warning: {warnings[-1]}")

    def warm(srv):
        """Whole requests, one at a time, for ``warmup`` s (imports, caches, the first fork).
        Not a duration-bound run: that abandons the request in flight when its clock stops,
        and a forking server's child still serving it behind a slow backend was counted by
        the first level (3 processes at peak with 1 client, in notebook 02)."""
        if not warmup:
            return
        end = time.monotonic() + warmup
        while True:
            try:
                fetch(srv.url, load_kwargs.get("path"), timeout=max(5.0, 2 * srv.workload.backend_ms / 1000))
            except NetlabError:          # a server that cannot answer yet is measured as it is
                return
            if time.monotonic() >= end:
                return

    with bar:
        for target in models:
            for wl in workloads:
                opts = dict(server_options or {})
                opts.update(wl)
                if fresh_server:
                    for c in levels:
                        with serve(target, **opts) as srv:
                            warm(srv)
                            one_level(srv, c, wl)
                else:
                    with serve(target, **opts) as srv:
                        warm(srv)
                        for c in levels:
                            one_level(srv, c, wl)
    df = frame(results)
    df.attrs["warnings"] = warnings
    if save_as:
        save(df, save_as, models=[getattr(m, "__name__", m) for m in models],
             concurrency=levels, duration=duration, requests=requests, repeats=repeats,
             workloads=list(workloads), pin=pin, load=load_kwargs)
    return df


EVENT_LOOP_MODELS = ("epoll", "reactor", "asyncio")


def peers(models: Sequence = EVENT_LOOP_MODELS, names: Optional[Sequence] = None,
          concurrency: int = 50, duration: Optional[float] = None,
          modes: Sequence[str] = ("close", "keepalive"), pin: bool = True,
          progress: bool = False, **load_kwargs):
    """netlab's event-loop models next to real servers (nginx, Node.js, Java NIO,
    http.server) under the same load: one row per server and mode, unavailable peers included
    with the reason. Other keywords (slow, idle, think_ms, ...) go to the load generator. The
    lesson it is for: the architecture matters more than the language."""
    from . import peers as _peers
    import pandas as pd
    if duration is None:
        duration = 0.5 if quick_mode() else 2.0
    for m in modes:
        if m not in ("close", "keepalive"):
            raise NetlabError(f"modes are 'close' and 'keepalive', not {m!r}")
    pin = pin and (os.cpu_count() or 1) >= 2
    available = {n: (ok, why) for n, ok, why in _peers.available_peers()}
    names = list(available) if names is None else list(names)
    for n in names:
        if n not in available:
            raise NetlabError(f"unknown peer {n!r}: choose from {', '.join(available)}")
    targets = [(m, lambda m=m: serve(m)) for m in models]
    targets += [(n, _peers.PEERS[n].factory) for n in names]
    rows = []
    runs = sum(1 for n, _ in targets if n not in available or available[n][0]) * len(modes)
    with Progress(progress, runs, "peers") as bar:
        for name, start in targets:
            if name in available and not available[name][0]:
                rows.append(dict(server=name, available=False, reason=available[name][1]))
                continue
            with start() as srv:
                for mode in modes:
                    bar.step(f"{name}, {mode}")
                    kw = {"timeout": 3.0, **load_kwargs, "keepalive": mode == "keepalive"}
                    _load.run(srv.url, min(concurrency, 8), duration=0.2, **kw)       # warm-up
                    r = measure(srv, concurrency, duration=duration, pin=pin, **kw)
                    rows.append(dict(server=name, available=True, reason="", **r.row()))
    return pd.DataFrame(rows)
