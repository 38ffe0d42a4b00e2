"""What one readiness wait costs against the number of watched fds: select, poll, epoll.

The course notes' claim, from TLPI table 63-9: ``select()`` and ``poll()`` cost O(N) per call —
the whole fd list goes into the kernel and is scanned every time — while ``epoll`` costs the same
at 10 fds and at 10,000, because the kernel keeps the interest list between calls. This repeats
Kerrisk's method live: N fds are watched; each operation makes one random fd ready (a write to an
eventfd), waits for it with the mechanism (level-triggered) and consumes it. The CPU time, user
and system apart, is reported per 100,000 operations, next to the book's numbers.

Each point runs in a fresh child process (this file, run alone): the caller's fd table stays
clean, a Jupyter kernel never forks, and the CPU time counted is the loop's only. The child
inherits none of the caller's fds, so the fds it watches are numbered the same whether a test
or a kernel holding hundreds of sockets starts it: the lowest free numbers, from 3 up, and
``select()`` can watch 1,000 of them (its limit, FD_SETSIZE, is on fd *numbers*). Python adds
a few microseconds per operation that C does not, so small N reads higher than the book; the
growth with N is the kernel's, and that is what to compare.

One run's absolute number is noisy on a shared machine: poll at 10,000 fds measured 96-141 CPU s
per 100k waits in seven runs here within half a minute, while the ratio to 15,000 fds, run next
to it each time, stayed near 1.5. ``measure(repeats=k)`` runs each point k times, each in a fresh
worker, and reports the median, the spread and every run's value.
"""

# Only the standard library at the top: the worker child runs this file alone (python -I).
import argparse
import errno
import json
import math
import os
import select
import sys
import time
from itertools import cycle, islice

MECHANISMS = ("select", "poll", "epoll")
CLASS_SIZES, QUICK_SIZES = (10, 100, 1000, 10000), (10, 100, 1000, 2000)
CLASS_BUDGET, QUICK_BUDGET = 1.5, 0.2        # CPU seconds measured per point
FD_SETSIZE = 1024
FD_SETSIZE_REASON = "FD_SETSIZE is 1024: select() cannot watch fd numbers ≥ 1024"
TLPI = "TLPI 63-9 (Linux 2.6.25)"
COLUMNS = ["mechanism", "fds", "ops", "user_s_per_100k", "sys_s_per_100k", "cpu_s_per_100k",
           "us_per_op", "sys_share", "status", "reason", "source", "repeats", "spread",
           "cpu_s_runs"]
COLORS = {"select": "tab:blue", "poll": "tab:orange", "epoll": "tab:green"}
# headers for netlab.results.table(df, columns, units=UNITS): this machine's and the book's apart
UNITS = {"fds": "fds (N)", "ops": "waits per run", "user_s_per_100k": "user (s/100k)",
         "sys_s_per_100k": "sys (s/100k)", "cpu_s_per_100k": "CPU (s/100k waits)",
         "us_per_op": "µs per wait", "sys_share": "kernel share", "repeats": "runs",
         "spread": "spread (max-min)/median", "spread_pct": "spread (%)",
         "reason": "why not measured", "here_s_per_100k": "here (s/100k)",
         "here_us_per_wait": "here (µs per wait)", "here_how": "here: how",
         "here_spread": "here: spread (max-min)/median",
         "tlpi_s_per_100k": "TLPI, the book's (s/100k)", "tlpi_how": "the book's value: how"}
_MARGIN = 16                                 # fds a worker holds besides the N it watches
ONE = (1).to_bytes(8, sys.byteorder)         # an eventfd takes an 8-byte count; a pipe, any bytes


# --- the worker: one point, in its own process ----------------------------------------------

def wait_loop(poller, readers, order, ops, timeout):
    """The measured operation, ``ops`` times: make one fd ready, wait for it, consume it."""
    write, read = os.write, os.read
    if poller is None:                       # select(): the whole fd list goes in on every call
        for w in islice(cycle(order), ops):
            write(w, ONE)
            for r in select.select(readers, [], [], timeout)[0]:
                read(r, 64)
    else:                                    # poll()/epoll(): wait on the registered set
        wait = poller.poll
        for w in islice(cycle(order), ops):
            write(w, ONE)
            for r, _ in wait(timeout):
                read(r, 64)


def _open_watched(writer, fds, pipes):
    """Fill ``writer`` with ``fds`` watched fds, each mapped to the fd a write to makes it ready.

    The watched fds take the lowest free numbers. An eventfd is its own write end. A pipe's
    write end is moved up to ``fds + _MARGIN`` or above, out of the watched fds' way: left where
    os.pipe() puts it, read and write ends alternate and the 1,000th read end is near fd 2,000,
    past what select() accepts. (``writer`` is the caller's, so it can close what was opened.)
    """
    import fcntl
    floor = fds + _MARGIN                    # above every number a watched fd takes in a worker
    for _ in range(fds):
        if not pipes:
            r = os.eventfd(0, os.EFD_NONBLOCK)
            writer[r] = r
            continue
        r, w = os.pipe()
        writer[r] = w                        # recorded first: closed by the caller on an error
        writer[r] = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, floor)
        os.close(w)                          # its number is the next read end's
        os.set_blocking(r, False)


def _worker(mechanism, fds, budget):
    """Measure one point here; a dict of the outcome (a refusal is an outcome, not an error)."""
    import gc
    import random
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:            # a laptop's soft 1,024 may be raised to the hard limit, unprivileged
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    per = 1 if hasattr(os, "eventfd") else 2           # a pipe costs two fds
    need = fds * per + _MARGIN
    refused = dict(status="refused", reason=f"needs {need:,} fds, the limit is {soft:,} (ulimit -n)")
    if soft != resource.RLIM_INFINITY and need > soft:
        return refused
    writer, poller, timeout = {}, None, 1.0            # read end -> write end (an eventfd: itself)
    try:
        _open_watched(writer, fds, pipes=per == 2)
        readers = list(writer)
        if mechanism == "select":
            select.select(readers, [], [], 0)          # ValueError at fd ≥ FD_SETSIZE
        else:
            poller = select.epoll() if mechanism == "epoll" else select.poll()
            for fd in readers:
                poller.register(fd, select.POLLIN)     # EPOLLIN has the same value
            timeout = 1.0 if mechanism == "epoll" else 1000       # seconds vs milliseconds
        rng = random.Random(fds)
        order = [writer[rng.choice(readers)] for _ in range(4096)]
        ops, spent = 1, 0.0                            # calibrate: double until ~budget/10
        while spent < max(budget / 10, 0.01):
            ops *= 2
            t = time.process_time()
            wait_loop(poller, readers, order, ops, timeout)
            spent = time.process_time() - t
        ops = max(20, int(budget / (spent / ops)))
        gc.disable()
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        wait_loop(poller, readers, order, ops, timeout)
        r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        return dict(status="measured", ops=ops, user_s=r1.ru_utime - r0.ru_utime,
                    sys_s=r1.ru_stime - r0.ru_stime, wall_s=w1 - w0,
                    ready_by="eventfd" if per == 1 else "pipe")
    except ValueError as e:
        if mechanism == "select" and "out of range" in str(e):
            return dict(status="refused", reason=FD_SETSIZE_REASON)
        raise
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):
            return refused
        raise
    finally:
        if mechanism == "epoll" and poller is not None:
            poller.close()                             # an epoll instance is an fd too
        for r, w in writer.items():
            os.close(r)
            if w != r:
                os.close(w)


# --- the caller: points → a DataFrame ----------------------------------------------------------

def _unavailable(mechanism):
    if os.name != "posix":
        return "needs a POSIX system (on Windows, use WSL)"
    if not hasattr(select, mechanism):
        from ..servers import FEATURES
        return FEATURES[mechanism][1]
    return ""


def _spawn(mechanism, fds, budget):
    """Run one point in a fresh child; its outcome as a dict."""
    from ..supervisor import Helper
    job = json.dumps(dict(mechanism=mechanism, fds=fds, budget=budget))
    limit = 10 * budget + 60
    worker = Helper(f"fdbench {mechanism}", "-I", os.path.abspath(__file__), "--worker", job,
                    text=True)            # -I: it holds fds 0, 1, 2 only, and imports no netlab
    try:
        with worker.start():
            out = worker.output(limit)
    except TimeoutError:
        return dict(status="error", reason=f"the worker took more than {limit:.0f} s")
    if worker.proc.returncode != 0:
        last = (worker.log().strip().splitlines() or ["no message"])[-1]
        return dict(status="error", reason=f"the worker failed: {last}")
    return json.loads(out)


def _row(mechanism, fds, res):
    ops, nan = res.get("ops", 0), float("nan")
    per100k = (lambda s: s / ops * 1e5) if ops else (lambda s: nan)
    user, sys_ = per100k(res.get("user_s", nan)), per100k(res.get("sys_s", nan))
    cpu = user + sys_
    measured = res["status"] == "measured"
    return dict(mechanism=mechanism, fds=fds, ops=ops, user_s_per_100k=user,
                sys_s_per_100k=sys_, cpu_s_per_100k=cpu, us_per_op=cpu * 10,
                sys_share=sys_ / cpu if cpu > 0 else nan, status=res["status"],
                reason=res.get("reason", ""), source="measured", repeats=int(measured),
                spread=0.0 if measured else nan, cpu_s_runs=(cpu,) if measured else ())


def _median(values):
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def _combine(rows):
    """One row from a point's repeats: each number the median of the measured repeats; ``spread``
    is (max - min) / median of their CPU per 100k waits; ``cpu_s_runs`` every repeat's, in the
    order they ran. A point none of whose repeats was measured keeps the first one's status."""
    ok = [r for r in rows if r["status"] == "measured"]
    if not ok:
        return rows[0]
    runs = tuple(r["cpu_s_per_100k"] for r in ok)
    out = dict(ok[0])
    for col in ("user_s_per_100k", "sys_s_per_100k", "cpu_s_per_100k"):
        out[col] = _median([r[col] for r in ok])
    cpu, nan = out["cpu_s_per_100k"], float("nan")
    out.update(ops=int(_median([r["ops"] for r in ok])), us_per_op=cpu * 10,
               sys_share=out["sys_s_per_100k"] / cpu if cpu > 0 else nan, repeats=len(ok),
               spread=(max(runs) - min(runs)) / cpu if cpu > 0 else nan, cpu_s_runs=runs)
    return out


def measure(sizes=None, mechanisms=MECHANISMS, budget=None, progress=False, repeats=1):
    """Measure each mechanism at each number of fds; a DataFrame, a row per point.

    ``budget`` is the CPU seconds measured per point and repeat (quick mode: 0.2, class: 1.5).
    ``repeats``: each point is measured that many times, each time in a fresh worker, and the
    repeats go round the points in turn (all points once, then all again...), so a burst of load
    from a neighbour lands on one repeat of several points rather than on every repeat of one.
    The numbers are then the medians of the repeats; ``repeats`` says how many were measured,
    ``spread`` is (max - min) / median of their CPU per 100k waits (0 for a single run) and
    ``cpu_s_runs`` holds each repeat's value. A refused point is tried once.
    ``progress``: True shows a bar in Jupyter and a line per point elsewhere; a function gets
    each line instead.
    """
    import pandas as pd
    from ..env import machine, quick_mode
    from ..servers import NetlabError
    quick = quick_mode()
    sizes = list(QUICK_SIZES if quick else CLASS_SIZES) if sizes is None else list(sizes)
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                            for n in sizes):
        raise NetlabError(f"sizes are whole numbers of fds, 1 or more, not {sizes!r}")
    mechanisms = [mechanisms] if isinstance(mechanisms, str) else list(mechanisms)
    for m in mechanisms:
        if m not in MECHANISMS:
            raise NetlabError(f"unknown mechanism {m!r}: choose from {', '.join(MECHANISMS)}")
    budget = (QUICK_BUDGET if quick else CLASS_BUDGET) if budget is None else budget
    if not isinstance(budget, (int, float)) or not 0 < budget <= 600:
        raise NetlabError(f"budget is CPU seconds per point, more than 0 and at most 600, "
                          f"not {budget!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 50:
        raise NetlabError(f"repeats is how many times each point is measured, a whole number "
                          f"from 1 to 50, not {repeats!r}")
    from ..progress import Progress
    ready_by, sizes = "", sorted(set(sizes))
    points = [(mech, n) for mech in mechanisms for n in sizes]
    runs = {p: [] for p in points}
    why = {mech: _unavailable(mech) for mech in mechanisms}
    with Progress(progress, len(points) * repeats, "fdbench") as bar:
        for r in range(repeats):
            for mech, n in points:
                done = runs[mech, n]
                again = f" (repeat {r + 1} of {repeats})" if repeats > 1 else ""
                bar.step(f"{mech}, {n:,} fds{again}")
                if done and done[0]["status"] in ("refused", "unavailable"):
                    continue                   # it would be again
                res = dict(status="unavailable", reason=why[mech]) if why[mech] \
                    else _spawn(mech, n, budget)
                ready_by = res.get("ready_by", ready_by)
                done.append(_row(mech, n, res))
    df = pd.DataFrame([_combine(runs[p]) for p in points], columns=COLUMNS)
    m = machine()
    df.attrs.update(machine=f"{m['system']} {m['kernel']}, Python {m['python']}, "
                            f"{m['cpus']} cores", budget_s=budget, ready_by=ready_by,
                    repeats=repeats)
    return df


def reference():
    """TLPI table 63-9 (data/tlpi-table-63-9.csv) in the same columns as ``measure()``."""
    import pandas as pd
    from ..results import DATA_DIR
    book = pd.read_csv(DATA_DIR / "tlpi-table-63-9.csv", comment="#")
    rows = [dict(mechanism=m, fds=int(n), ops=100_000, cpu_s_per_100k=float(s),
                 us_per_op=float(s) * 10, status="measured", source=TLPI,
                 reason="FD_SETSIZE raised to 16,384 in glibc" if m == "select"
                 and n >= FD_SETSIZE else "", repeats=float("nan"),
                 spread=float("nan"), cpu_s_runs=())
            for m in MECHANISMS for n, s in zip(book["fds"], book[f"{m}_s"])]
    return pd.DataFrame(rows, columns=COLUMNS)


def table(measured=None, wide=False):
    """Measured rows (run now if not given) and TLPI's in one DataFrame; ``wide=True`` reads
    like the book: a row per N, a column per mechanism and source (CPU s per 100k; blank =
    refused or not measured)."""
    import pandas as pd
    measured = measure() if measured is None else measured
    df = pd.concat([measured, reference()], ignore_index=True)
    df.attrs = dict(measured.attrs)
    if not wide:
        return df
    ok = df[df["status"] == "measured"].assign(
        source=df["source"].where(df["source"] != "measured", "here"))
    out = ok.pivot_table(index="fds", columns=["mechanism", "source"], values="cpu_s_per_100k")
    cols = [(m, s) for m in MECHANISMS for s in ("here", TLPI) if (m, s) in out.columns]
    return out.reindex(columns=pd.MultiIndex.from_tuples(cols))


def plot(df, ax=None, mark=None, tlpi=True):
    """Log-log CPU s per 100k waits against N: measured solid (a bar from the lowest to the
    highest repeat where there were several), TLPI dashed (added if ``df`` has none and
    ``tlpi``), refused points as ×, a vertical line at ``mark``. Returns the Figure."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.8))
    here, ref = df[df["source"] == "measured"], df[df["source"] != "measured"]
    if tlpi and ref.empty:
        ref = reference()
    fd_wall = False
    for mech in MECHANISMS:
        c = COLORS[mech]
        m = here[(here["mechanism"] == mech) & (here["status"] == "measured")].sort_values("fds")
        if len(m):
            ax.plot(m["fds"], m["cpu_s_per_100k"], "-o", color=c, label=f"{mech} (this machine)")
            runs = [(n, min(r), max(r)) for n, r in zip(m["fds"], m.get("cpu_s_runs", []))
                    if isinstance(r, (tuple, list)) and len(r) > 1]
            if runs:                         # each point's repeats, lowest to highest
                ax.vlines(*zip(*runs), color=c, lw=3, alpha=0.35, gid="spread")
        r = ref[(ref["mechanism"] == mech) & (ref["status"] == "measured")].sort_values("fds")
        if len(r):
            ax.plot(r["fds"], r["cpu_s_per_100k"], "--", marker=".", color=c, alpha=0.55,
                    label=f"{mech} ({TLPI})")
        no = here[(here["mechanism"] == mech) & (here["status"] == "refused")]
        if len(no):                          # × where the line would go on, or at the bottom
            (x0, y0), (x1, y1) = [(math.log(x), math.log(y)) for x, y in zip(
                m["fds"].iloc[-2:], m["cpu_s_per_100k"].iloc[-2:])] if len(m) > 1 else [(0, 0)] * 2
            on = dict(transform=ax.get_xaxis_transform()) if x0 == x1 else {}
            ys = [0.06 if on else math.exp(y1 + (y1 - y0) * (math.log(n) - x1) / (x1 - x0))
                  for n in no["fds"]]
            ax.plot(no["fds"], ys, "x", color=c, ms=10, mew=2, gid="refused",
                    label=f"{mech}: refused here", **on)
            fd_wall |= bool((no["reason"] == FD_SETSIZE_REASON).any())
    if fd_wall:
        ax.axvline(FD_SETSIZE, color=COLORS["select"], ls=":", lw=1)
        ax.text(FD_SETSIZE, 0.97, "FD_SETSIZE = 1024 ", color=COLORS["select"], fontsize=7,
                rotation=90, ha="right", va="top", transform=ax.get_xaxis_transform())
    if mark is not None:
        ax.axvline(mark, color="black", lw=1, gid="mark", label=f"N = {mark:,.0f}")
    ax.set(xscale="log", yscale="log", xlabel="watched fds (N)",
           ylabel="CPU seconds per 100,000 waits")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")
    where = df.attrs.get("machine", "this machine") if len(here) else "the book only"
    big = here[here["mechanism"].isin(["select", "poll"]) & (here["status"] == "measured")]
    big = big[big["fds"] == big["fds"].max()] if len(big) else big
    kernel = len(big) and bool((big["sys_s_per_100k"] >= 3 * big["user_s_per_100k"]).all())
    ax.set_title("One random fd ready per wait, level-triggered (TLPI 63-9 method)\n" + where
                 + ("; sys ≫ user: the O(N) part is kernel time" if kernel else ""), fontsize=9)
    return ax.figure


# --- the command line: python -m netlab fdbench ----------------------------------------------

def _list(kind, what, example):
    """argparse type: comma-separated values of ``kind``."""
    def parse(text):
        try:
            got = [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            got = []
        if not got:
            raise argparse.ArgumentTypeError(f"takes {what} separated by commas, like "
                                             f"{example}, not {text!r}")
        return got
    return parse


def _cmd(args):
    df = measure(args.sizes, args.mechanisms, args.budget,
                 progress=lambda line: print(line, file=sys.stderr, flush=True),
                 repeats=args.repeats)
    if args.json:
        print(df.to_json(orient="records", indent=2, force_ascii=False))
        return 0
    ref = reference().set_index(["mechanism", "fds"])["cpu_s_per_100k"]
    again = f", median of {args.repeats} repeats" if args.repeats > 1 else ""
    print(f"CPU seconds per 100,000 waits, one random fd ready ({df.attrs['machine']}; "
          f"{df.attrs['budget_s']:g} CPU s measured per point{again})")
    print(f"{'mechanism':<10}{'fds':>7}{'ops':>9}{'user s':>9}{'sys s':>9}{'cpu s':>9}"
          f"{'µs/op':>9}{'TLPI s':>9}" + (f"{'spread':>9}" if args.repeats > 1 else ""))
    for r in df.itertuples():
        head = f"{r.mechanism:<10}{r.fds:>7,}"
        if r.status != "measured":
            print(f"{head}  {r.status}: {r.reason}")
            continue
        book = ref.get((r.mechanism, r.fds))
        print(head + f"{r.ops:>9,}" + "".join(f"{v:>9.3g}" for v in (
            r.user_s_per_100k, r.sys_s_per_100k, r.cpu_s_per_100k, r.us_per_op))
            + (f"{book:>9g}" if book is not None else f"{'':>9}")
            + (f"{r.spread:>9.0%}" if args.repeats > 1 else ""))
    return 0


def add_cli(subparsers):
    """Add ``fdbench`` to the ``python -m netlab`` subcommands."""
    p = subparsers.add_parser("fdbench", help="CPU per wait against watched fds: select, poll, "
                              "epoll (TLPI table 63-9, live)")
    p.add_argument("--sizes", type=_list(int, "whole numbers of fds", "10,100,1000"),
                   help="numbers of fds, comma-separated (default 10,100,1000,10000)")
    p.add_argument("--mechanisms", type=_list(str, "mechanism names", "select,poll"),
                   default=MECHANISMS, help="comma-separated, from select,poll,epoll (default all)")
    p.add_argument("--budget", type=float, help="CPU seconds measured per point "
                   f"(default {CLASS_BUDGET:g}; {QUICK_BUDGET:g} with NETLAB_QUICK=1)")
    p.add_argument("--repeats", type=int, default=1, help="measure each point this many times, "
                   "each in a fresh worker, and report the median and the spread (default 1)")
    p.add_argument("--json", action="store_true", help="JSON records instead of a table")
    p.set_defaults(func=_cmd)
    return p


if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 3:
        sys.exit("this is fdbench's worker; run `python -m netlab fdbench` instead")
    job = json.loads(sys.argv[2])
    print(json.dumps(_worker(job["mechanism"], job["fds"], job["budget"])))
