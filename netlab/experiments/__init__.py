"""The experiments: each measures one claim of the course, live, on this machine.

    fdbench      CPU per readiness wait against the number of watched fds: select, poll, epoll
                 (TLPI table 63-9 repeated here)
    herd         the thundering herd: which pre-forked workers are woken per connection
    acceptlock   the pre-threaded pool: waits on the accept() mutex against pool size
    c10k         10,000 idle connections: memory per connection and the active clients' latency
    syscalls     system calls per request: each model's architecture as the kernel sees it
    showdown     every model on five workloads: the table, and what limited each number

Import the one you need (``from netlab.experiments import fdbench``); this package imports
none of them, so loading one never pays for the others.
"""


def command(subparsers, name: str, help: str, arguments, run) -> None:
    """Add one experiment's subcommand to ``python -m netlab``."""
    p = subparsers.add_parser(name, help=help)
    arguments(p)
    p.set_defaults(func=run)


def standalone(name: str, doc: str, arguments, run, argv=None) -> int:
    """``python -m netlab.experiments.NAME ...``: the same subcommand without the rest of the
    command line; a mistake is one sentence."""
    import argparse
    import sys
    from ..servers import NetlabError
    p = argparse.ArgumentParser(prog=f"python -m netlab {name}", description=doc.split("\n")[0])
    arguments(p)
    try:
        return run(p.parse_args(argv))
    except NetlabError as e:
        print(f"netlab: {e}", file=sys.stderr)
        return 2


def step(progress, text: str) -> None:
    """Report one step of a long run: ``progress`` True prints a line to stderr, a function is
    called with the text, False (the default in code) stays quiet."""
    if progress is True:
        import sys
        print(text, file=sys.stderr, flush=True)
    elif callable(progress):
        progress(text)
