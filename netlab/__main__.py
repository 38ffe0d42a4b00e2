"""netlab's command line: the same models and experiments without Jupyter.

    python -m netlab models [--json]
    python -m netlab serve MODEL [--host H] [--port P] [--workers N] [--backend-ms D] [--cpu-us U]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import lifecycle, servers
from .servers import NetlabError
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
    spec = dict(target=model.name, host=args.host, port=args.port, workers=args.workers,
                workload=dict(backend_ms=args.backend_ms, cpu_us=args.cpu_us,
                              body_bytes=args.body_bytes),
                options=options)
    try:
        Workload(**spec["workload"])
    except ValueError as e:         # a workload knob out of range
        raise NetlabError(str(e)) from None
    try:
        lifecycle.run(spec, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass
    except SystemExit as e:
        return lifecycle.exit_status(e)    # non-zero if it ended on its own (a worker died)
    return 0


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
    s.add_argument("--edge", action="store_true", help="epoll/reuseport: edge-triggered")
    s.add_argument("--exclusive", action="store_true", help="epoll with workers: EPOLLEXCLUSIVE")
    s.add_argument("--no-lock", action="store_true", help="prethreaded: no mutex around accept()")
    s.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="any other model option")
    s.set_defaults(func=cmd_serve)
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
