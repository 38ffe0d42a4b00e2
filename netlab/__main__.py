"""netlab's command line: the same models and experiments without Jupyter.

    python -m netlab models [--json]
    python -m netlab serve MODEL [--host H] [--port P] [--workers N] [--backend-ms D] [--cpu-us U]
                                 [--trace] [--redis [HOST:PORT]]
    python -m netlab load URL -c C (-n N | -d SECONDS) [--keepalive] [--slow K] [--idle K] [--json]
    python -m netlab sweep MODEL... --concurrency 1,10,100 [--backend-ms D] [--json]
    python -m netlab peers [-c C] [-d SECONDS] [--json]
    python -m netlab check MODEL | FILE.py:FUNCTION       (your server against netlab's promises)
    python -m netlab fdbench | herd | acceptlock | c10k | syscalls ...   (the phenomena)
    python -m netlab showdown [--models M,...] [--workloads W,...] [--save NAME]   (the table)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys

from . import server_process, servers
from .arguments import comma_counts
from .servers import NetlabError

PRIVATE = "private"          # --redis without an address: start one for this server
from .workload import Workload


def _value(text: str):
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cmd_models(args) -> int:
    rows = [dict(name=m.name, available=m.available, reason=m.reason, summary=m.summary,
                 workers=m.workers or None, default_workers=m.default_workers if m.workers else None,
                 options=m.options)
            for m in servers.MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "yes" if r["available"] else "NO "
        print(f"{r['name']:<12} {mark}  {r['summary']}")
        extras = []
        if r["workers"]:
            extras.append(f"--workers N ({r['workers']}, default {r['default_workers']})")
        extras += [f"-o {k}={v}" for k, v in r["options"].items()]
        if extras:
            print(f"{'':<17}{'; '.join(extras)}")
        if r["reason"]:
            print(f"{'':<17}unavailable: {r['reason']}")
    return 0


def cmd_serve(args) -> int:
    options = {}
    for item in args.option or []:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise NetlabError(f"--option takes KEY=VALUE, not {item!r}")
        options[key.replace("-", "_")] = _value(val)
    if args.edge:
        options["edge"] = True
    if args.exclusive:
        options["exclusive"] = True
    if args.no_lock:
        options["lock"] = False
    model = servers.get(args.model)
    model.check(args.workers, options)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s netlab[%(process)d] %(levelname)s %(message)s")
    private = args.redis == PRIVATE
    spec = dict(target=model.name, host=args.host, port=args.port, workers=args.workers,
                workload=dict(backend_ms=args.backend_ms, cpu_us=args.cpu_us,
                              body_bytes=args.body_bytes, trace=args.trace,
                              redis=None if private else args.redis),
                options=options)
    try:
        Workload(**spec["workload"])
    except ValueError as e:         # a workload knob out of range
        raise NetlabError(str(e)) from None
    try:
        with contextlib.ExitStack() as stack:
            if private:             # a Redis of its own, stopped with the server
                from .peers import redis_server
                rds = stack.enter_context(redis_server())
                spec["workload"]["redis"] = rds.address
                print(f"redis-server (pid {rds.pid}) on {rds.address} for /guestbook", flush=True)
            server_process.run(spec, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass
    except SystemExit as e:
        return server_process.exit_status(e)    # non-zero if it ended on its own (a worker died)
    return 0



def _progress_wanted(args) -> bool:
    return not args.json and sys.stderr.isatty()


def _load_summary(r, usage=None) -> str:
    errs = ", ".join(f"{k} {v}" for k, v in r.errors.items() if v) or "none"
    lines = [f"{r.requests:,} requests ok in {r.duration_s:.2f} s: {r.rps:,.0f} req/s "
             f"({r.concurrency} clients, {'keep-alive' if r.mode == 'keepalive' else 'a connection per request'}"
             f"{f', {r.slow} slow' if r.slow else ''}{f', {r.idle} idle' if r.idle else ''})",
             f"errors: {errs}",
             f"latency ms: p50 {r.p50_ms:.2f}  p90 {r.p90_ms:.2f}  p99 {r.p99_ms:.2f}  "
             f"p99.9 {r.p999_ms:.2f}  max {r.max_ms:.2f}",
             f"client CPU: {r.client_cpu_s:.2f} s over {r.client_procs} process(es) = "
             f"{r.client_cpu_s / max(r.duration_s, 1e-9) / r.client_cores:.0%} of "
             f"{r.client_cores:g} core(s)"]
    return "\n".join(lines)


def cmd_load(args) -> int:
    from . import load
    if args.requests is None and args.duration is None:
        raise NetlabError("say how long to run: -n REQUESTS or -d SECONDS")
    r = load.run(args.url, args.concurrency, args.requests, args.duration,
                 keepalive=args.keepalive, slow=args.slow, idle=args.idle, think_ms=args.think_ms,
                 processes=args.processes, timeout=args.timeout, allow_remote=args.allow_remote,
                 progress=_progress_wanted(args))
    if args.json:
        print(json.dumps(dict(r.row(), errors_by_kind=dict(r.errors), timeline=list(r.timeline)),
                         indent=2, default=str))
    else:
        print(_load_summary(r))
        busy = r.client_cpu_s / max(r.duration_s, 1e-9) / r.client_cores
        if busy >= 0.85:
            print("limited by: the client's CPU (the load generator was saturated: the server "
                  "may be faster than this number)")
        else:
            print("limited by: not the client (the server was not monitored: use "
                  "`python -m netlab sweep MODEL` to measure both sides)")
    return 0


def cmd_sweep(args) -> int:
    from .harness import sweep
    workload = {k: v for k, v in (("backend_ms", args.backend_ms), ("cpu_us", args.cpu_us),
                                  ("body_bytes", args.body_bytes)) if v is not None}
    for name in args.models:
        servers.get(name)              # an unknown model is one sentence, before any run
    df = sweep(args.models, args.concurrency, duration=args.duration, requests=args.requests,
               repeats=args.repeats, workloads=[workload], keepalive=args.keepalive, pin=args.pin,
               progress=_progress_wanted(args), save_as=args.save)
    cols = ["model", "concurrency", "repeat", "rps", "p50_ms", "p99_ms", "errors",
            "server_cpu_us_per_req", "ctx_per_req", "limited_by"]
    if args.json:
        print(df.to_json(orient="records", indent=2))
        return 0
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].round(2).to_string(index=False))
    for w in df.attrs.get("warnings", []):
        print(f"warning: {w}")
    return 0


def cmd_peers(args) -> int:
    from .harness import peers
    df = peers(concurrency=args.concurrency, duration=args.duration, pin=not args.no_pin,
               modes=("keepalive",) if args.keepalive_only else ("close", "keepalive"),
               progress=_progress_wanted(args))
    if args.json:
        print(df.to_json(orient="records", indent=2))
        return 0
    ran = df[df["available"]]
    if len(ran):
        table = ran.pivot_table(index="server", columns="mode", values="rps", sort=False)
        p99 = ran.pivot_table(index="server", columns="mode", values="p99_ms", sort=False)
        lim = ran.pivot_table(index="server", columns="mode", values="limited_by",
                              aggfunc="first", sort=False)
        out = table.round(0).astype(int).add_suffix(" req/s").join(
            p99.round(1).add_suffix(" p99 ms")).join(lim.add_suffix(" limited by"))
        print(f"{args.concurrency} clients, {ran['duration_s'].iloc[0]:.1f} s per run, "
              f"netlab's generator{', server pinned to core 0' if not args.no_pin else ''}")
        print(out.to_string())
    for _, r in df[~df["available"]].iterrows():
        print(f"{r['server']}: not run, {r['reason']}")
    return 0


def _server_function(target: str):
    """FILE.py:FUNCTION → the function, loaded from the student's file."""
    import importlib.util
    from pathlib import Path
    path, _, name = target.rpartition(":")
    p = Path(path)
    if not p.is_file():
        raise NetlabError(f"no file {path!r}: give FILE.py:FUNCTION, e.g. my_server.py:serve")
    spec = importlib.util.spec_from_file_location(f"student_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise NetlabError(f"{p.name} does not import: {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise NetlabError(f"{p.name} has no function {name!r}")
    return fn


def cmd_check(args) -> int:
    from .check import check
    target = _server_function(args.server) if ":" in args.server else servers.get(args.server).name
    options = {}
    if args.workers:
        options["workers"] = args.workers
    report = check(target, concurrency=args.concurrency, **options)
    if args.json:
        out = dict(server=report.server, passed=report.passed, promises=report.rows,
                   throughput=None if report.throughput is None
                   else json.loads(report.throughput.to_json(orient="records")))
        print(json.dumps(out, indent=2, default=str))
    else:
        print(report)
    return 0 if report.passed else 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one sentence (and where to look), not a usage dump."""

    def error(self, message):
        self.exit(2, f"netlab: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m netlab",
                description="Classic network server models and their measurement.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    m = sub.add_parser("models", help="list the server models and whether they run here")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_models)

    s = sub.add_parser("serve", help="run one server model in the foreground (Ctrl-C stops it)")
    s.add_argument("model", help="a model name (see `python -m netlab models`)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    s.add_argument("--workers", type=int, help="processes or threads, for models that have them")
    s.add_argument("--backend-ms", type=float, default=0.0, help="simulated backend wait per request")
    s.add_argument("--cpu-us", type=float, default=0.0, help="CPU work per request (microseconds)")
    s.add_argument("--body-bytes", type=int, help="size of the body of GET /")
    s.add_argument("--redis", nargs="?", const=PRIVATE, metavar="HOST:PORT",
                   help="give /guestbook a Redis: a private one started for this server, or the "
                        "one at HOST:PORT")
    s.add_argument("--trace", action="store_true",
                   help="stamp each answer with the pid and thread that produced it, and when "
                        "(header X-Netlab-Trace; see netlab.timeline)")
    s.add_argument("--edge", action="store_true", help="epoll/reuseport: edge-triggered")
    s.add_argument("--exclusive", action="store_true", help="epoll with workers: EPOLLEXCLUSIVE")
    s.add_argument("--no-lock", action="store_true", help="prethreaded: no mutex around accept()")
    s.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="any other model option")
    s.set_defaults(func=cmd_serve)

    ld = sub.add_parser("load", help="load a server at URL with netlab's generator")
    ld.add_argument("url", help="e.g. http://127.0.0.1:8080/ (loopback unless --allow-remote)")
    ld.add_argument("-c", "--concurrency", type=int, default=10, help="active clients")
    how = ld.add_mutually_exclusive_group()
    how.add_argument("-n", "--requests", type=int, help="stop after this many requests")
    how.add_argument("-d", "--duration", type=float, help="stop after this many seconds")
    ld.add_argument("--keepalive", action="store_true", help="reuse connections")
    ld.add_argument("--slow", type=int, default=0, help="clients that send requests in pieces")
    ld.add_argument("--idle", type=int, default=0, help="extra connections held without requests")
    ld.add_argument("--think-ms", type=float, default=0.0, help="pause between requests")
    ld.add_argument("--processes", type=int, help="generator processes (default: cores - 1)")
    ld.add_argument("--timeout", type=float, default=5.0, help="seconds before a request times out")
    ld.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    ld.add_argument("--json", action="store_true", help="machine-readable output")
    ld.set_defaults(func=cmd_load)

    sw = sub.add_parser("sweep", help="measure models across concurrencies (both sides watched)")
    sw.add_argument("models", nargs="+", metavar="MODEL", help="model names")
    sw.add_argument("--concurrency", type=comma_counts, default=[1, 10, 100],
                    help="comma-separated, e.g. 1,10,100,1000")
    sw.add_argument("-d", "--duration", type=float, help="seconds per run (default 2; 0.5 quick)")
    sw.add_argument("-n", "--requests", type=int, help="requests per run instead of a duration")
    sw.add_argument("--repeats", type=int, default=1, help="runs per point (warns on spread)")
    sw.add_argument("--backend-ms", type=float, help="simulated backend wait per request")
    sw.add_argument("--cpu-us", type=float, help="CPU work per request (microseconds)")
    sw.add_argument("--body-bytes", type=int, help="size of the body of GET /")
    sw.add_argument("--keepalive", action="store_true", help="reuse connections")
    sw.add_argument("--pin", action="store_true", help="server on core 0, load on the others")
    sw.add_argument("--save", metavar="NAME", help="save under data/runs/NAME.csv + .json")
    sw.add_argument("--json", action="store_true", help="machine-readable output")
    sw.set_defaults(func=cmd_sweep)

    pe = sub.add_parser("peers", help="netlab's event loops next to nginx, Node.js, Java, "
                        "http.server (when installed)")
    pe.add_argument("-c", "--concurrency", type=int, default=50, help="active clients")
    pe.add_argument("-d", "--duration", type=float, help="seconds per run (default 2)")
    pe.add_argument("--keepalive-only", action="store_true", help="skip connection-per-request")
    pe.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    pe.add_argument("--json", action="store_true", help="machine-readable output")
    pe.set_defaults(func=cmd_peers)

    ck = sub.add_parser("check", help="check a model or your own server against netlab's promises")
    ck.add_argument("server", help="a model name, or FILE.py:FUNCTION for your own server")
    ck.add_argument("--workers", type=int, help="processes or threads, for models that have them")
    ck.add_argument("--concurrency", type=comma_counts, default=[1, 10, 100],
                    help="throughput measured at these concurrencies (default 1,10,100)")
    ck.add_argument("--json", action="store_true", help="machine-readable output")
    ck.set_defaults(func=cmd_check)

    # the phenomena instruments bring their own subcommands
    from .experiments import acceptlock, c10k, fdbench, herd, showdown, syscalls
    for experiment in (fdbench, herd, acceptlock, c10k, syscalls, showdown):
        experiment.add_cli(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except NetlabError as e:
        print(f"netlab: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:           # `python -m netlab models | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
