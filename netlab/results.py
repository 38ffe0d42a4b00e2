"""Results as immutable records: what the load saw, what the server used, and what limited it.

Every number netlab prints comes from one of these records, and every record carries the
parameters and the machine it was measured with, so a table can be saved, reloaded and compared
honestly (a saved run says where it came from; a fresh run says it is fresh).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional

from .servers import NetlabError

# how a request can fail, as the load generator (and the wrk/ab adapters) classify it
ERROR_KINDS = ("refused", "reset", "timeout", "bad_status", "short_read", "other")

# a side "was the limit" when it kept this share of the cores it had busy
BUSY = 0.85

SERVER_CPU, CLIENT_CPU, NEITHER = "server-cpu", "client-cpu", "neither"

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class LoadResult:
    """What a load run saw from the client side (netlab's generator, wrk or ab)."""
    tool: str                      # "netlab", "wrk", "ab"
    url: str
    mode: str                      # "close" (a connection per request) or "keepalive"
    concurrency: int
    requests: int                  # answered with the expected status
    errors: Mapping[str, int]      # kind (ERROR_KINDS) -> count
    duration_s: float
    rps: float                     # requests / duration_s
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    timeline: tuple = ()           # requests answered in each second of the run
    client_cpu_s: float = float("nan")   # user + system CPU of the load generator
    client_cores: float = 1.0      # cores the load generator could use
    client_procs: int = 1
    slow: int = 0                  # clients that sent their request in pieces
    idle: int = 0                  # connections held open without a request
    think_ms: float = 0.0
    params: Mapping[str, object] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> str:
        """One line a student can read: what ran, how fast, how slow at the tail, what failed."""
        errs = ", ".join(f"{v} {k}" for k, v in self.errors.items() if v)
        extra = "".join(f", {n} {what}" for n, what in ((self.slow, "slow"), (self.idle, "idle"))
                        if n)
        return (f"{self.concurrency} clients{extra} ({'keep-alive' if self.mode == 'keepalive' else 'new connection each'}): "
                f"{self.requests:,} ok in {self.duration_s:.2f} s = {self.rps:,.0f} req/s, "
                f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms"
                f"{', errors: ' + errs if errs else ''}")

    def row(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("errors", "timeline", "params")}
        d["errors"] = self.error_count
        for kind in ERROR_KINDS:
            d[f"err_{kind}"] = self.errors.get(kind, 0)
        return d


@dataclass(frozen=True)
class Usage:
    """What the server's whole process tree used during a run (sampled with psutil)."""
    pid: int
    seconds: float                 # wall time the monitor watched
    cpu_user_s: float
    cpu_sys_s: float
    rss_peak_mb: float             # peak of the tree's summed RSS
    rss_start_mb: float
    uss_peak_mb: Optional[float]   # unique set size (memory only this tree uses), where known
    pss_peak_mb: Optional[float]
    procs_max: int
    threads_max: int
    fds_max: int
    ctx_voluntary: int             # the process blocked: waited for I/O or a lock
    ctx_involuntary: int           # the scheduler took the CPU away
    samples: int                   # one at each end of the run, one per interval between
    cores: float                   # cores the server could use (pinning, workers, the GIL)

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @property
    def peaks_seen(self) -> bool:
        """Whether a sample fell inside the run. CPU totals are exact for any run, but peaks
        (processes, threads, fds, memory) come from samples: a run shorter than one interval
        has only its two ends, and shows none of what it created and ended."""
        return self.samples > 2

    def row(self) -> dict:
        d = {f"server_{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("pid", "samples")}
        d["server_cpu_s"] = self.cpu_s
        return d


@dataclass(frozen=True)
class Result:
    """One measured run: the server model and workload, the load, the server's usage, the verdict."""
    model: str
    workload: Mapping[str, object]           # backend_ms, cpu_us, body_bytes
    load: LoadResult
    server: Optional[Usage]
    limited_by: str                          # server-cpu / client-cpu / neither
    why: str                                 # the numbers behind limited_by, in one sentence
    machine: Mapping[str, object] = field(default_factory=dict)
    when: str = ""
    repeat: int = 0
    others_cores: float = float("nan")      # cores kept busy by other processes meanwhile

    def summary(self) -> str:
        """The load's line plus the verdict and the numbers behind it, and a warning when the
        run was too short for the server's peaks to see it (``Usage.peaks_seen``)."""
        text = f"{self.model} · {self.load.summary()}\n    limited by {self.limited_by}: {self.why}"
        if self.server is not None and not self.server.peaks_seen:
            text += ("\n    peaks (processes, threads, fds, memory) saw nothing during the run: it "
                     "ended before the monitor's first sample; run longer or pass a smaller interval=")
        return text

    def __str__(self) -> str:
        return self.summary()

    def row(self) -> dict:
        d = {"model": self.model}
        d.update(self.workload)
        d.update(self.load.row())
        if self.server is not None:
            d.update(self.server.row())
            n = max(self.load.requests, 1)
            d["server_cpu_us_per_req"] = self.server.cpu_s / n * 1e6
            d["ctx_per_req"] = (self.server.ctx_voluntary + self.server.ctx_involuntary) / n
            conns = self.load.concurrency + self.load.idle
            d["rss_kb_per_conn"] = ((self.server.rss_peak_mb - self.server.rss_start_mb)
                                    * 1024 / max(conns, 1))
        d["limited_by"] = self.limited_by
        d["why"] = self.why
        d["others_cores"] = self.others_cores
        d["repeat"] = self.repeat
        d["when"] = self.when
        return d


def limited_by(seconds: float, server_cpu_s: float, server_cores: float,
               client_cpu_s: float, client_cores: float, cpus: Optional[int] = None,
               others_cores: float = 0.0):
    """(verdict, why): which side's CPU limited a run, from each side's CPU against its cores.

    A side that kept ≥ 85% of the cores it had busy was the limit. When neither did but the
    two together filled what the machine had for them — all its cores, less what other
    processes (``others_cores``, busy meanwhile) took — the side nearer its own capacity is
    named: they competed for the same cores. Otherwise the run waited, not computed: latency-bound ("neither").
    """
    cpus = cpus or os.cpu_count() or 1
    if not seconds or seconds <= 0:
        return NEITHER, "the run took no measurable time"
    others = max(0.0, others_cores or 0.0)
    s = server_cpu_s / seconds / max(server_cores, 1e-9)
    c = client_cpu_s / seconds / max(client_cores, 1e-9)
    room = max(cpus - others, 0.05 * cpus)            # cores left for server and client
    machine = (server_cpu_s + client_cpu_s) / seconds / room
    why = (f"server used {s:.0%} of its {server_cores:g} core(s), client {c:.0%} of its "
           f"{client_cores:g}; together {min(machine, 1.0):.0%} of the "
           + (f"{room:.1f} cores other processes left them" if others >= 0.1 * cpus
              else f"{cpus} cores"))
    if s != s or c != c:          # NaN: a side we could not measure
        return NEITHER, why + " (one side was not measured)"
    if s >= BUSY and s >= c:
        return SERVER_CPU, why
    if c >= BUSY:
        return CLIENT_CPU, why
    if machine >= BUSY:
        return (SERVER_CPU if s >= c else CLIENT_CPU), \
            why + " (they competed for the same cores)"
    return NEITHER, why + ": time went to waiting, not computing"


def percentile(sorted_values, q: float) -> float:
    """The q-th percentile (0–100) of an already sorted sequence, nearest-rank (no interpolation:
    p99.9 of 1,000 samples is the slowest one, which is what a tail-latency reader expects)."""
    n = len(sorted_values)
    if n == 0:
        return float("nan")
    k = max(0, min(n - 1, -(-q * n // 100) - 1))
    return float(sorted_values[int(k)])


def frame(records: Iterable):
    """Records (Result, LoadResult, Usage or plain dicts) → one pandas DataFrame, a row each."""
    import pandas as pd
    rows = [r.row() if hasattr(r, "row") else dict(r) for r in records]
    return pd.DataFrame(rows)


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def metadata(**params) -> dict:
    """Everything a saved run must say about where it came from."""
    from .env import machine
    return {"machine": machine(), "git_commit": git_commit(),
            "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "params": params}


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def save(records, name: str, directory=None, **params) -> Path:
    """Write records as ``name.csv`` plus ``name.json`` (machine, kernel, Python, cores, netlab
    version, git commit, parameters) under data/runs/ (or ``directory``). Returns the CSV path."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise NetlabError(f"a run name is letters, digits, '.', '-' and '_', not {name!r}")
    df = records if hasattr(records, "to_csv") else frame(records)
    d = Path(directory) if directory is not None else DATA_DIR / "runs"
    d.mkdir(parents=True, exist_ok=True)
    csv = d / f"{name}.csv"
    df.to_csv(csv, index=False)
    meta = metadata(**params)
    meta["rows"] = len(df)
    meta["columns"] = list(map(str, df.columns))
    (d / f"{name}.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return csv


def load(name_or_path) -> tuple:
    """(DataFrame, metadata) of a saved run, by name (under data/runs/) or path to its CSV."""
    import pandas as pd
    p = Path(name_or_path)
    if p.suffix != ".csv":
        p = DATA_DIR / "runs" / f"{name_or_path}.csv"
    if not p.exists():
        raise NetlabError(f"no saved run at {p}: list them with `ls {p.parent}`")
    meta_path = p.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return pd.read_csv(p), meta


def spread_warning(values, threshold: float = 0.2) -> Optional[str]:
    """A sentence when repeats disagree by more than ``threshold`` (max-min over median)."""
    vals = sorted(v for v in values if v == v)
    if len(vals) < 2:
        return None
    med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    if med <= 0:
        return None
    spread = (vals[-1] - vals[0]) / med
    if spread > threshold:
        return (f"repeats disagree by {spread:.0%} (more than {threshold:.0%}): the machine is "
                f"noisy; trust shapes and ratios, rerun with more repeats for single numbers")
    return None


# column -> header with its unit, for tables shown to students (unknown columns keep their name)
UNITS = {
    "rps": "req/s", "mean_ms": "mean (ms)", "p50_ms": "p50 (ms)", "p90_ms": "p90 (ms)",
    "p99_ms": "p99 (ms)", "p999_ms": "p99.9 (ms)", "max_ms": "max (ms)",
    "duration_s": "duration (s)", "concurrency": "clients", "requests": "requests ok",
    "errors": "errors", "backend_ms": "backend (ms)", "cpu_us": "handler CPU (µs)",
    "body_bytes": "body (bytes)", "client_cpu_s": "client CPU (s)",
    "server_cpu_s": "server CPU (s)", "server_cpu_us_per_req": "server CPU / req (µs)",
    "ctx_per_req": "context switches / req", "rss_kb_per_conn": "RSS / conn (kB)",
    "server_rss_peak_mb": "server RSS peak (MB)", "server_procs_max": "processes (peak)",
    "server_threads_max": "threads (peak)", "server_fds_max": "fds (peak)",
    "limited_by": "limited by",
}


def sig(x, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits with thousands separators and no exponent:
    1656.952133 -> '1,660', 0.0123456 -> '0.0123'; an int, a count, stays exact. Why: a table of raw floats claims a
    precision no run here has, and hides the shape behind the decimals."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
        return "" if x != x else str(x)
    if isinstance(x, int):              # a count is exact
        return f"{x:,}"
    rounded = float(f"{x:.{digits}g}")
    decimals = max(0, digits - 1 - int(f"{rounded:e}".split("e")[1])) if rounded else 0
    return f"{rounded:,.{decimals}f}"


def table(df, columns=None, digits: int = 3, units: Optional[Mapping] = None):
    """A DataFrame for reading, not computing: the chosen ``columns``, headers that name their
    units (``UNITS``, plus ``units`` for a notebook's own columns) and every number at ``digits``
    significant digits. Keep the numeric frame for arithmetic; show this one."""
    names = {**UNITS, **(units or {})}
    shown = df[list(columns)] if columns is not None else df
    out = shown.apply(lambda col: col.map(lambda v: sig(v.item() if hasattr(v, "item") else v,
                                                        digits)))
    return out.rename(columns=lambda c: names.get(c, c))
