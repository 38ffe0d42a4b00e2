"""Figures over sweep tables (``netlab.sweep`` / ``results.frame``): each one titled with the
workload it measured and marked with what limited each point, so no chart claims more than its
run showed. Every function returns the matplotlib Figure and never calls ``plt.show()``.

Markers: ● the server's CPU was the limit, ○ the client's (the number says more about the load
generator than the server), ◆ neither (the run waited: latency, backend, one client at a time).
"""

from __future__ import annotations

from typing import Optional, Sequence

from .results import CLIENT_CPU, NEITHER, SERVER_CPU
from .servers import NetlabError

MARKERS = {SERVER_CPU: dict(marker="o"), CLIENT_CPU: dict(marker="o", markerfacecolor="white"),
           NEITHER: dict(marker="D")}
LEGEND = "● server CPU limited · ○ client CPU limited · ◆ neither (waiting)"


def _plt():
    import matplotlib
    import matplotlib.pyplot as plt
    return matplotlib, plt


def describe_workload(df) -> str:
    """One line: what every run in ``df`` did (the parameters they share)."""
    parts = []
    for col, fmt in (("mode", "{}"), ("backend_ms", "backend {:g} ms"), ("cpu_us", "CPU {:g} µs"),
                     ("body_bytes", "body {:g} B"), ("slow", "{:g} slow clients"),
                     ("idle", "{:g} idle clients"), ("think_ms", "think {:g} ms")):
        if col not in df:
            continue
        vals = df[col].dropna().unique()
        if len(vals) == 1:
            v = vals[0]
            if col == "mode":
                parts.append("keep-alive" if v == "keepalive" else "a connection per request")
            elif v:
                parts.append(fmt.format(v))
        elif len(vals) > 1:
            parts.append(f"{col} varies")
    return ", ".join(parts) or "default workload"


def limits(df) -> str:
    """One line: which limit held for which model, e.g. "epoll: server-cpu; threaded: neither"."""
    if "limited_by" not in df:
        return ""
    out = []
    for model, g in df.groupby("model", sort=False):
        counts = g["limited_by"].value_counts()
        out.append(f"{model}: " + "/".join(counts.index))
    return "limited by — " + "; ".join(out)


def _check(df, needed):
    missing = [c for c in needed if c not in df]
    if missing:
        raise NetlabError(f"this plot needs a sweep table with columns {missing}: make one with "
                          "netlab.sweep(...) or netlab.results.frame(results)")
    if not len(df):
        raise NetlabError("nothing to plot: the table is empty")


def _series(ax, df, y, label_extra=""):
    """Median over repeats per (model, concurrency), with min–max bars and limit markers."""
    for model, g in df.groupby("model", sort=False):
        agg = g.groupby("concurrency").agg(med=(y, "median"), lo=(y, "min"), hi=(y, "max"),
                                           limit=("limited_by", lambda s: s.mode().iloc[0]))
        line, = ax.plot(agg.index, agg["med"], "-", label=f"{model}{label_extra}")
        ax.errorbar(agg.index, agg["med"], yerr=[agg["med"] - agg["lo"], agg["hi"] - agg["med"]],
                    fmt="none", ecolor=line.get_color(), alpha=0.5, capsize=2)
        for lim, pts in agg.groupby("limit"):
            ax.plot(pts.index, pts["med"], linestyle="none", color=line.get_color(),
                    markersize=7, **MARKERS.get(lim, dict(marker="x")))


def _finish(fig, ax, df, title):
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(f"{title}\n{describe_workload(df)}", fontsize="medium")
    ax.set_title(f"{limits(df)}\n{LEGEND}", fontsize="x-small")
    fig.tight_layout()
    return fig


def throughput(df, ax=None, title: str = "Throughput against concurrency"):
    """Requests per second (median of repeats, min–max bars) against concurrent clients."""
    _check(df, ["model", "concurrency", "rps", "limited_by"])
    _, plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8, 4.5))
    _series(ax, df, "rps")
    ax.set_xlabel("concurrent clients (log)")
    ax.set_ylabel("requests / s")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, df, title)


def latency(df, percentiles: Sequence[str] = ("p50_ms", "p99_ms"), ax=None,
            title: str = "Latency against concurrency"):
    """Latency percentiles (ms, log y) against concurrent clients: the tail tells first."""
    _check(df, ["model", "concurrency", "limited_by", *percentiles])
    _, plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8, 4.5))
    for p in percentiles:
        _series(ax, df, p, f" {p[:-3]}")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients (log)")
    ax.set_ylabel("latency (ms, log)")
    return _finish(fig, ax, df, title)


RESOURCES = (("server_cpu_us_per_req", "server CPU per request (µs)"),
             ("ctx_per_req", "context switches per request"),
             ("rss_kb_per_conn", "memory growth per connection (KiB)"),
             ("server_threads_max", "threads (peak)"))


def resources(df, columns: Optional[Sequence] = None, title: str = "What each model spends"):
    """Small multiples: CPU and context switches per request, memory per connection, threads."""
    cols = [c for c in (columns or [c for c, _ in RESOURCES]) if c in df]
    _check(df, ["model", "concurrency", "limited_by"] + (cols or ["server_cpu_s"]))
    labels = dict(RESOURCES)
    _, plt = _plt()
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.8), squeeze=False)
    for ax, col in zip(axes[0], cols):
        _series(ax, df, col)
        ax.set_xscale("log")
        ax.set_xlabel("concurrent clients (log)")
        ax.set_title(labels.get(col, col), fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{title} — {describe_workload(df)}\n{limits(df)}  ·  {LEGEND}",
                 fontsize="small")
    fig.tight_layout()
    return fig


def bars(df, column: str = "rps", ax=None, title: Optional[str] = None, label: str = None):
    """One bar per model (median of its rows), labelled with what limited it: for comparisons at
    a single workload and concurrency."""
    _check(df, ["model", column, "limited_by"])
    _, plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8, 4))
    g = df.groupby("model", sort=False).agg(v=(column, "median"),
                                            limit=("limited_by", lambda s: s.mode().iloc[0]))
    bars_ = ax.bar(g.index, g["v"], color=["C0" if lm == SERVER_CPU else "C1" if lm == CLIENT_CPU
                                           else "C2" for lm in g["limit"]])
    for b, lm in zip(bars_, g["limit"]):
        ax.annotate(lm, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize="x-small")
    ax.set_ylabel(label or column)
    ax.tick_params(axis="x", rotation=30)
    conc = df["concurrency"].unique() if "concurrency" in df else []
    extra = f", {conc[0]} concurrent clients" if len(conc) == 1 else ""
    fig.suptitle(title or f"{label or column} per model", fontsize="medium")
    ax.set_title(f"{describe_workload(df)}{extra}\nbar colour = limit: blue server CPU, orange "
                 "client CPU, green neither", fontsize="x-small")
    fig.tight_layout()
    return fig


def timeline(df, ax=None, title: Optional[str] = None):
    """Who served which connection, and when (a table from ``netlab.timeline.record``): a lane
    per server thread; per request, a faint bar while it waited (sent by the client, not yet
    taken by the server: in the listen backlog or unread) and a solid one from the moment the
    server had it whole to its answer, coloured and numbered by connection. Requests that
    overlap in time are stacked inside their lane: solid bars side by side in one lane are
    requests one thread held at once, an event loop's."""
    _check(df, ["connection", "lane", "start_ms", "end_ms"])
    _, plt = _plt()
    begin = "sent_ms" if "sent_ms" in df else "start_ms"
    placed, heights = [], {}
    for lane, rows in df.groupby("lane"):
        ends, mine = [], {}          # each slot's last end; each connection's last slot
        for r in rows.sort_values(begin).itertuples():
            free = [i for i, e in enumerate(ends) if e <= getattr(r, begin)]
            slot = mine.get(r.connection) if mine.get(r.connection) in free else \
                (free[0] if free else len(ends))
            mine[r.connection] = slot
            ends[slot:slot + 1] = [r.end_ms]
            placed.append((r, slot))
        heights[lane] = len(ends)
    lanes = int(df["lane"].max())
    fig, ax = (ax.figure, ax) if ax is not None else \
        plt.subplots(figsize=(8, 1.4 + 0.3 * min(sum(heights.values()), 40)))
    colours = plt.get_cmap("tab10")
    for r, slot in placed:
        h = 0.8 / heights[r.lane]
        y, colour = r.lane - 0.4 + slot * h, colours(int(r.connection) % 10)
        waited = getattr(r, begin) < r.start_ms
        if waited:
            ax.broken_barh([(getattr(r, begin), r.start_ms - getattr(r, begin))], (y, h),
                           color=colour, alpha=0.25, hatch="//", linewidth=0)
        ax.broken_barh([(r.start_ms, max(r.end_ms - r.start_ms, 0.01))], (y, h), color=colour,
                       alpha=0.9)
        ax.text(r.start_ms, y + h / 2, f" c{int(r.connection)}", va="center", fontsize="x-small")
    multi = df.attrs.get("processes", df["pid"].nunique()) > 1
    names = {row.lane: (f"pid {row.pid}" if multi else f"thread {row.lane}")
             for row in df.drop_duplicates("lane").itertuples()}
    ax.set_yticks(sorted(names), [names[k] for k in sorted(names)])
    ax.set_ylim(0.4, lanes + 0.6)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the first request was sent (faint: waiting to be taken, solid: "
                  "being served)")
    fig.suptitle(title or "Who served which connection, and when", fontsize="medium")
    ax.set_title(f"{df['connection'].nunique()} connections (c0, c1, ...), "
                 f"{len(df)} requests, {lanes} server thread(s) in "
                 f"{df['pid'].nunique()} process(es)", fontsize="x-small")
    fig.tight_layout()
    return fig
