"""The showdown: every model against the same five workloads, at the same concurrencies, a row
per (workload, model, concurrency) saying what limited it. "Which model is best?" has a table
for an answer, not a name: who leads depends on what the clients and the handler do.

Each workload is one ``netlab.sweep`` (a fresh server per model, a short warm-up, then the load,
a new connection per request as in ZeroHTTPd's benchmark); the rows get the workload's name.
The saved class run that notebook 10 shows was made with

    python -m netlab showdown --concurrency 10,100,500 --duration 2 --save 10-showdown-class
"""

import json
import sys

from . import command, standalone
from ..progress import Progress
from ..servers import NetlabError

# name -> (netlab.serve keywords, netlab.load.run keywords)
WORKLOADS = {
    "fast clients":  ({}, {}),
    "slow clients":  ({}, {"slow": 2}),
    "idle clients":  ({}, {"idle": 1000}),
    "backend 10 ms": ({"backend_ms": 10}, {}),
    "CPU 500 µs":    ({"cpu_us": 500}, {}),
}
MARK = {"server-cpu": "S", "client-cpu": "C", "neither": "W"}
TIMEOUT = 3.0       # seconds a client waits for an answer before it counts a timeout


def sizes() -> dict:
    """Class sizes (the saved run's), or small ones in quick mode (NETLAB_QUICK)."""
    from ..env import quick_mode
    if quick_mode():
        return dict(levels=(10, 50), seconds=0.3)
    return dict(levels=(10, 100, 500), seconds=2.0)


def showdown(models=None, levels=None, workloads=None, seconds=None, *, progress=False,
             save_as=None, **options):
    """Every model (names or your own server functions; default: all available here) × every
    workload (names from WORKLOADS; default: all) × every concurrency in ``levels``, for
    ``seconds`` each. ``options`` go to ``netlab.sweep`` (warmup, pin, repeats, keepalive...).
    ``save_as`` writes the table under data/runs/ with the parameters that reproduce it."""
    import pandas as pd
    from .. import servers
    from ..harness import sweep
    from ..results import save
    d = sizes()
    if models is None:
        models = [m.name for m in servers.MODELS if m.available]
    models = [models] if isinstance(models, str) or callable(models) else list(models)
    levels = list(d["levels"] if levels is None else levels)
    seconds = d["seconds"] if seconds is None else seconds
    workloads = list(WORKLOADS) if workloads is None else \
        [workloads] if isinstance(workloads, str) else list(workloads)
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or not workloads:
        what = f"no workload {unknown[0]!r}" if unknown else "no workload given"
        raise NetlabError(f"{what}: the workloads are {', '.join(WORKLOADS)}")
    timeout = options.pop("timeout", TIMEOUT)
    parts = []
    with Progress(progress, len(workloads), "showdown") as bar:
        for name in workloads:
            serve_kw, load_kw = WORKLOADS[name]
            bar.step(name)
            df = sweep(models, levels, duration=seconds, workloads=[serve_kw], timeout=timeout,
                       **load_kw, **options)
            parts.append(df.assign(workload=name))
    df = pd.concat(parts, ignore_index=True)
    if save_as:
        save(df, save_as, models=[m if isinstance(m, str) else getattr(m, "__name__", "custom")
                                  for m in models],
             concurrency=levels, duration=seconds,
             workloads={w: dict(serve=WORKLOADS[w][0], load=WORKLOADS[w][1]) for w in workloads},
             mode="keep-alive" if options.get("keepalive") else "a connection per request",
             timeout=timeout, options=options)
    return df


def marked(df, value="rps", fmt=None, columns=("workload", "concurrency"),
           per_request=False):
    """A model × (workload, concurrency) table of ``value``, each cell followed by what limited
    it: S server CPU, C client CPU, W neither (the run waited), and ! when requests failed.
    Numbers at 3 significant digits (``results.sig``), or ``fmt`` (a format string or a
    function). ``per_request``: a run that answered nothing shows — instead of its value."""
    from ..results import sig
    show = (lambda v: sig(float(v), 3)) if fmt is None else fmt if callable(fmt) else fmt.format
    vals = df[value].where(df["requests"] > 0) if per_request else df[value]
    text = [("—" if v != v else show(v)) + " " + MARK.get(lim, "?") + (" !" if err else "")
            for v, lim, err in zip(vals, df["limited_by"], df["errors"])]
    t = df.assign(cell=text).pivot_table(index="model", columns=list(columns), values="cell",
                                         aggfunc="first", sort=False)
    order = [w for w in WORKLOADS if w in t.columns.get_level_values(0)]
    return t.reindex(columns=order, level=0).reindex(df["model"].unique())


def verdict(df, clients=None, tie=0.9):
    """Who led each workload at ``clients`` (default: the most), and whether the run can carry
    a ranking: a row per workload.

    A ranking needs a leader limited by its own CPU (``server-cpu``). A leader limited by the
    client's CPU hit the load generator's ceiling, so the models ``tied`` with it (within
    ``tie`` of its rate) may be as fast or faster: no ranking. A leader that waited (neither)
    was held by the workload (a backend, slow clients), not by its speed: no speed ranking.
    A run in which requests failed is not ranked: answering fast by refusing clients is no lead.
    The last model is named with what limited it; ``says`` puts the row in one sentence."""
    import pandas as pd
    from ..results import sig
    c = df["concurrency"].max() if clients is None else clients
    rows = []
    present = list(df["workload"].unique())
    for wl in [w for w in WORKLOADS if w in present] + [w for w in present if w not in WORKLOADS]:
        g = df[(df["workload"] == wl) & (df["concurrency"] == c)].sort_values("rps",
                                                                              ascending=False)
        if g.empty:
            continue
        clean = g[g["errors"] == 0] if (g["errors"] == 0).any() else g
        lead, last = clean.iloc[0], g.iloc[-1]
        tied = [m for m, r in zip(clean["model"][1:], clean["rps"][1:]) if r >= tie * lead["rps"]]
        failed = [m for m in g["model"][g["errors"] > 0] if m not in [lead["model"], *tied]]
        ranked = lead["limited_by"] == "server-cpu"
        rate = sig(float(lead["rps"]))
        near = f" ({', '.join(tied)} within {1 - tie:.0%})" if tied else ""
        if ranked:
            head = (f"led by {lead['model']} ({rate} req/s, server-cpu: its own speed)"
                    + (f", tied with {', '.join(tied)}" if tied else ""))
        elif lead["limited_by"] == "client-cpu":
            head = (f"no ranking: {lead['model']}{near} reached {rate} req/s, the load "
                    "generator's ceiling (client-cpu), not the server's")
        else:
            head = (f"no speed ranking: {lead['model']}{near} reached {rate} req/s while it "
                    f"waited ({lead['limited_by']}): the workload held it, not its speed")
        says = (f"{head}; last: {last['model']} ({sig(float(last['rps']))} req/s, "
                f"{last['limited_by']})"
                + (f"; not ranked, some requests failed: {', '.join(failed)}" if failed else ""))
        rows.append(dict(workload=wl, clients=int(c), leader=lead["model"],
                         leader_rps=float(lead["rps"]), leader_limited_by=lead["limited_by"],
                         ranked=bool(ranked), tied=", ".join(tied), last=last["model"],
                         last_rps=float(last["rps"]), last_limited_by=last["limited_by"],
                         failed=", ".join(failed), says=says))
    return pd.DataFrame(rows)


# -- command line: python -m netlab showdown ... ----------------------------------------------

def _names(text):
    return [s.strip() for s in text.split(",") if s.strip()]


def _arguments(p):
    d = sizes()
    p.add_argument("--models", type=_names, help="comma-separated (default: every model "
                   "available here)")
    p.add_argument("--workloads", type=_names, help=f"comma-separated, of: {', '.join(WORKLOADS)}"
                   " (default: all)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in _names(s)],
                   default=list(d["levels"]), help="clients, comma-separated (default "
                   f"{','.join(map(str, d['levels']))})")
    p.add_argument("--duration", type=float, default=d["seconds"], help="seconds per run")
    p.add_argument("--save", metavar="NAME", help="also write data/runs/NAME.csv and .json")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd(args) -> int:
    from .. import servers
    for name in args.models or ():
        servers.get(name)                 # an unknown model is one sentence, before any run
    df = showdown(args.models, args.concurrency, args.workloads, args.duration,
                  progress=not args.json and sys.stderr.isatty(), save_as=args.save)
    if args.json:
        print(json.dumps(df.to_dict("records"), indent=2, default=str))
        return 0
    import pandas as pd
    print("requests per second (S server CPU · C client CPU · W waited · ! errors)")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(marked(df, "rps").to_string())
    print(f"\nat {df['concurrency'].max()} clients:")
    for wl, says in zip(*verdict(df)[["workload", "says"]].values.T):
        print(f"  {wl:<14} {says}")
    busy = df["others_cores"].median()
    if busy >= 0.25:
        print(f"other processes kept {busy:.1f} cores busy during a typical run: rerun on a "
              "quieter machine before trusting rankings within a factor of ~2")
    return 0


def add_cli(subparsers) -> None:
    """Add ``showdown`` to netlab's command line."""
    command(subparsers, "showdown", "every model on five workloads: the table and what limited "
            "each number", _arguments, _cmd)


def main(argv=None) -> int:
    return standalone("showdown", __doc__, _arguments, _cmd, argv)


if __name__ == "__main__":
    sys.exit(main())
