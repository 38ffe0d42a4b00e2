"""The server process: what runs inside the process that ``netlab.serve`` starts.

    python -c "from netlab.server_process import child_main; child_main()"   (spec on stdin)

It reads its spec, binds the listening socket, says "listening on URL" on stdout (the one line
the harness waits for), and runs the model until a stop signal. On the way out it stops
whatever is left of its own process group (``forks.stop_own_group``). The harness's
side (``Server``, ``serve``) is ``netlab.lifecycle``; a harness that dies is noticed by the
supervisor's watchdog, not here.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import pickle
import signal
import sys
from typing import Callable

from . import servers
from .servers import NetlabError, ServerError, forks
from .sockets import open_listener, url_of
from .supervisor import remove
from .workload import App, Workload

_stop_requested = False


def _stop_on_signal(signum, frame):
    """The first stop signal starts an orderly shutdown; repeats (the harness's killpg, the
    supervisor's own SIGTERM, PDEATHSIG) must not interrupt that shutdown halfway."""
    global _stop_requested
    _stop_requested = True
    for sig in forks.STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(0)


def exit_status(e: SystemExit) -> int:
    """0 if we were asked to stop. Otherwise the server ended on its own: a worker died
    (status 1), or a student's server called sys.exit() (reported, status 3 if it said 0)."""
    if _stop_requested:
        return 0
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if code == 0:
        sys.stderr.write("the server called sys.exit() before it was asked to stop: a server "
                         "must keep serving until it is stopped\n")
        return 3
    return code


def check_function(fn, options: dict, workers=None) -> None:
    """A student's server function must take (listen_sock, app) plus any options given."""
    import inspect
    name = getattr(fn, "__name__", repr(fn))
    if workers not in (None, 1):
        raise ServerError(f"workers applies to the built-in models; {name} runs as one "
                          "process (fork or start threads inside it if you want more)")
    try:
        inspect.signature(fn).bind(None, None, **options)
    except TypeError as e:
        extra = "".join(f", {k}" for k in options)
        raise ServerError(f"{name} must accept (listen_sock, app{extra}): {e}") from None
    except ValueError:          # a builtin without a signature: let it run
        pass


def run(spec: dict, announce: Callable[[str], None]) -> None:
    """Run one server described by ``spec`` in this process until SIGTERM/SIGINT."""
    target = spec["target"]
    workload = Workload(**spec.get("workload", {}))
    options = dict(spec.get("options", {}))
    if callable(target):
        model = None
        check_function(target, options, spec.get("workers"))
    else:
        model = servers.get(target)
        model.check(spec.get("workers"), options)
        model.module            # import it now, so the first request does not pay for it
    for sig in forks.STOP_SIGNALS:
        signal.signal(sig, _stop_on_signal)
    if hasattr(signal, "SIGUSR1"):      # `kill -USR1 PID` prints where a stuck server is
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    if spec.get("stats") and hasattr(signal, "SIGUSR2"):
        _answer_usage(spec["stats"])
    listen = open_listener(spec["host"], spec["port"], reuseport=bool(model and model.reuseport))
    try:
        app = App(workload)
        announce(f"listening on {url_of(spec['host'], listen.getsockname()[1])}")
        if model is None:
            target(listen, app, **options)
            raise ServerError(f"the server function {getattr(target, '__name__', target)} "
                              "returned: a server must keep serving until it is stopped")
        else:
            model.run(listen, app, spec.get("workers"), **options)
    finally:
        listen.close()


def _answer_usage(path: str) -> None:
    """`kill -USR2 PID` makes the server write its getrusage() to ``path``: its threads, living
    and ended, and its reaped children. /proc only shows what is alive now, so a monitor asks
    here for the context switches of a thread-per-connection server's finished threads and a
    forking server's finished children."""
    import resource
    me, seq = os.getpid(), [0]

    def answer(signum, frame):
        if os.getpid() != me:           # a forked worker inherited this handler
            return
        seq[0] += 1
        own, kids = resource.getrusage(resource.RUSAGE_SELF), \
            resource.getrusage(resource.RUSAGE_CHILDREN)
        data = {"seq": seq[0], "pid": me}
        for name, r in (("self", own), ("children", kids)):
            data[name] = dict(user=r.ru_utime, sys=r.ru_stime, voluntary=r.ru_nvcsw,
                              involuntary=r.ru_nivcsw)
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(data, f)
            os.replace(path + ".tmp", path)
        except OSError:     # out of fds (EMFILE) or disk: no answer, which the monitor allows;
            pass            # an exception here would kill the server mid-measurement

    signal.signal(signal.SIGUSR2, answer)


def child_main() -> None:
    """Entry point of the server process started by ``Server`` (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s netlab[%(process)d] %(levelname)s %(message)s")
    spec = pickle.loads(sys.stdin.buffer.read())
    if spec.get("die_with_parent"):
        forks.die_with_parent(spec["parent"])

    def announce(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)   # nothing more goes to the harness's pipe
        os.dup2(devnull, 1)
        os.close(devnull)

    me = os.getpid()
    try:
        run(spec, announce)
    except NetlabError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        pass
    except SystemExit as e:
        sys.exit(exit_status(e))
    finally:
        if os.getpid() == me:       # not in a process that a student's server forked
            forks.stop_own_group()
            if hasattr(signal, "SIGUSR2"):  # a late usage question must not write it back
                signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            stats = spec.get("stats")  # a harness that was killed cannot remove it
            remove(stats, stats and stats + ".tmp")
