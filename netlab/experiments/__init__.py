"""The experiments: each measures one claim of the course, live, on this machine.

    fdbench      CPU per readiness wait against the number of watched fds: select, poll, epoll
                 (TLPI table 63-9 repeated here)
    herd         the thundering herd: which pre-forked workers are woken per connection
    acceptlock   the pre-threaded pool: waits on the accept() mutex against pool size
    c10k         10,000 idle connections: memory per connection and the active clients' latency
    syscalls     system calls per request: each model's architecture as the kernel sees it
    completion   io_uring against epoll: system calls and CPU per request, idle connections
    showdown     every model on five workloads: the table, and what limited each number

Import the one you need (``from netlab.experiments import fdbench``); this package imports
none of them, so loading one never pays for the others.
"""

import os
import select
import time

from ..servers import NetlabError


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


class LineReader:
    """Lines from a pipe (a helper's stdout, workers' reports), each read with a deadline: an
    experiment waiting on a helper that hangs or dies must fail in one sentence, not hang."""

    def __init__(self, stream, who: str):
        self.fd = stream if isinstance(stream, int) else stream.fileno()
        self.who, self.buf = who, b""

    def read(self, n: int, deadline: float) -> list:
        """The next ``n`` lines (text); NetlabError when ``deadline`` (monotonic) passes or the
        writer closes the pipe first."""
        while self.buf.count(b"\n") < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise NetlabError(f"{self.who} did not answer in time")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise NetlabError(f"{self.who} exited before answering")
            self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n", n)
        return [line.decode() for line in lines]

    def line(self, deadline: float) -> str:
        return self.read(1, deadline)[0]
