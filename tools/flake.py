"""Find the tests that fail only sometimes: run the unit tests N times, half of the runs with a
CPU hog busy on one core (a slower, shared CI runner), then the notebooks once under the hog, and
list every test that failed at least once, in which runs and with which line.

    python tools/flake.py                          # 5 unit runs (2, 4 under the hog) + notebooks
    python tools/flake.py -n 3 --no-notebooks -- tests/test_load.py -k keepalive
    python tools/flake.py -n 1 --hog all --seed 1234 --no-notebooks -- tests/test_x.py::test_y

Everything after `--` goes to pytest as is (default: tests). Each run runs as `make test` runs
it (NETLAB_QUICK=1). Failures are read from pytest's own JUnit XML, one file per run, written to
a temporary directory that is removed at the end. With pytest-randomly installed, every run gets
its own seed (printed, and passed as --randomly-seed so any run can be replayed); without it the
tests run in file order. Exit status 1 when anything failed, 130 when interrupted.

The hog is one child process spinning on one core (pinned where the OS allows). It is stopped
after each run, and cannot outlive this script: it is killed on the way out (Ctrl-C and SIGTERM
included), gets SIGKILL from the kernel if this process dies (Linux), and exits by itself when
its parent changes.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the Makefile passes its own NBVAL; this copy is for running the script by hand
NBVAL = "--nbval-lax --nbval-current-env --nbval-cell-timeout=120"
HOG_MARK = "netlab-flake-hog"     # in the hog's command line, so `pgrep -f` finds it

HOG_CODE = r"""
import os, signal, sys
parent, core = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the parent, which stops us
try:                                  # Linux: the kernel kills us when the parent dies
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
except Exception:
    pass
if core >= 0 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})
n = 0
while os.getppid() == parent:         # anywhere else: stop as soon as we are orphaned
    for _ in range(200000):
        n += 1
"""


# ---------------------------------------------------------------------------------------------
# The hog
# ---------------------------------------------------------------------------------------------

def hog_core(requested: int | None = None) -> int:
    """The core the hog spins on: the one asked for, else the last one this process may use;
    -1 where affinity cannot be set (the hog then runs wherever the scheduler puts it)."""
    if not hasattr(os, "sched_getaffinity"):
        return -1
    cores = sorted(os.sched_getaffinity(0))
    if requested is None:
        return cores[-1]
    if requested not in cores:
        sys.exit(f"--hog-core {requested}: this process may use cores {cores} only")
    return requested


@contextmanager
def hog(core: int):
    """A process spinning on `core` for the duration of the block; gone when the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOG_CODE, str(os.getpid()), str(core),
                             HOG_MARK], stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop(proc, grace=0)


def stop(proc: subprocess.Popen, grace: float, group: bool = False) -> None:
    """SIGINT (if grace > 0) and up to `grace` seconds to finish, then SIGKILL; always reaped.
    `group`: the process leads its own process group (we made it): kill the group."""
    def send(sig):
        try:
            os.killpg(proc.pid, sig) if group and sig == signal.SIGKILL else proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    if proc.poll() is None and grace > 0:
        send(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"\n[flake] pytest (pid {proc.pid}) still running {grace:g} s after SIGINT: "
                  "killing it", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print(f"\n[flake] interrupted again: killing pytest (pid {proc.pid})",
                  file=sys.stderr, flush=True)
    if proc.poll() is None or group:
        send(signal.SIGKILL)
    while True:
        try:
            proc.wait()
            return
        except KeyboardInterrupt:     # a second Ctrl-C must not leave it unreaped
            continue


# ---------------------------------------------------------------------------------------------
# One pytest run and its JUnit report
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    label: str                      # "1", "2", ... or "nb"
    hog: bool
    args: list
    seed: str | None = None
    returncode: int | None = None
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)     # passed/failed/error/skipped -> n
    outcomes: dict = field(default_factory=dict)   # test id -> (passed?, reason)
    note: str = ""

    def summary(self) -> str:
        if self.returncode is None:
            return "interrupted" if self.note else "not run"
        parts = [f"{self.counts[k]} {k}" for k in ("failed", "error", "passed", "skipped", "xfailed")
                 if self.counts.get(k)]
        text = ", ".join(parts) or "no test reported"
        if self.note:
            text += f" ({self.note})"
        return text

    @property
    def failed(self) -> bool:
        return bool(self.returncode) or any(not ok for ok, _ in self.outcomes.values())


def preexec_child() -> None:
    """In the pytest child: its own process group (so Ctrl-C reaches this script, which passes
    on exactly one SIGINT), and SIGTERM from the kernel should this script die (Linux)."""
    os.setpgrp()
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
    except Exception:
        pass


def run_pytest(python: str, run: Run, junit: Path, env: dict) -> Run:
    cmd = [python, "-m", "pytest", *run.args, f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            preexec_fn=preexec_child if os.name == "posix" else None)
    try:
        run.returncode = proc.wait()
    except BaseException:
        run.note = "interrupted"
        stop(proc, grace=60, group=os.name == "posix")
        run.returncode = proc.returncode
        raise
    finally:
        run.seconds = time.monotonic() - t0
        read_junit(run, junit)
        if run.returncode and run.note != "interrupted" and \
                not any(not ok for ok, _ in run.outcomes.values()):
            # a session-level failure: no test failed, yet pytest did not pass (the session's leak
            # check, an internal error, exit 5 for no tests): report it as the run's own failure
            why = {5: "no tests ran", 2: "interrupted or usage error", 3: "internal error",
                   4: "usage error"}.get(run.returncode, "no test failed in the report; see the output above")
            run.outcomes["(pytest session)"] = (False, f"pytest exited with status {run.returncode}: {why}")
            run.note = "; ".join(filter(None, (run.note, f"exit status {run.returncode}")))
    return run


def test_id(case: ET.Element, dirs: tuple = ()) -> str:
    """The pytest node id of a <testcase> (xunit1 keeps the file), e.g. tests/test_x.py::T::t.
    Its path is relative to pytest's rootdir: where that is not this folder, it is found under
    one of `dirs` (the directories the run was given) and made relative to this folder."""
    name, classname, path = case.get("name", "?"), case.get("classname", ""), case.get("file")
    if path:
        where = path
        if not (ROOT / path).exists():
            for d in dirs:
                for base in (d, *d.parents):
                    if (base / path).exists():
                        found = base / path
                        inside = ROOT in found.parents
                        where = os.path.relpath(found, ROOT) if inside else str(found)
                        break
                else:
                    continue
                break
        module = path[:-3].replace("/", ".").replace(os.sep, ".") if path.endswith(".py") else None
        if module and classname.startswith(module + "."):
            return "::".join([where, *classname[len(module) + 1:].split("."), name])
        if module and classname == module or not module:
            return f"{where}::{name}"
    return f"{classname}::{name}" if classname else name


ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*m")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Interrupt|Exit|Timeout)\b.*")


def reason_of(node: ET.Element) -> str:
    """The line that says why: pytest's first `E   ...` line; for a notebook cell (nbval), the
    exception line that ends its traceback; else the message."""
    text = ANSI.sub("", node.text or "")
    for line in text.splitlines():
        if line.startswith("E   "):
            return line[1:].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if EXCEPTION_LINE.match(line):
            return line
    message = ANSI.sub("", node.get("message") or "").strip()
    return message.splitlines()[0] if message else (lines or ["?"])[-1]


def read_junit(run: Run, junit: Path) -> None:
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as e:
        if run.returncode is not None and not run.note:
            run.note = f"no JUnit report ({e.__class__.__name__})"
        return
    dirs = tuple(p if p.is_dir() else p.parent for p in
                 ((ROOT / a.split("::")[0]).resolve() for a in run.args if not a.startswith("-"))
                 if p.exists())
    for case in root.iter("testcase"):
        tid = test_id(case, dirs)
        bad = [n for n in case if n.tag in ("failure", "error")]
        if bad:
            reason = "; ".join(("error in setup/teardown: " if n.tag == "error" else "")
                               + reason_of(n) for n in bad)
            kind = "failed" if any(n.tag == "failure" for n in bad) else "error"
            run.counts[kind] = run.counts.get(kind, 0) + 1
            run.outcomes[tid] = (False, reason)
        elif case.find("skipped") is not None:
            kind = "xfailed" if case.find("skipped").get("type") == "pytest.xfail" else "skipped"
            run.counts[kind] = run.counts.get(kind, 0) + 1
        else:
            run.counts["passed"] = run.counts.get("passed", 0) + 1
            run.outcomes[tid] = (True, "")


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def report(runs: list, hog_at: int, randomly: bool, python: str, nbval: str) -> int:
    """Print the runs and every test that failed at least once; the number of such tests."""
    done = [r for r in runs if r.returncode is not None]
    print("\n" + "=" * 30 + " flake report " + "=" * 30)
    print(f"{'run':>4}  {'hog':<7} {'seed':<11} {'time':>8}  result")
    for r in runs:
        seed = r.seed if r.seed is not None else "-"
        hogs = f"core {hog_at}" if r.hog and hog_at >= 0 else ("yes" if r.hog else "-")
        print(f"{r.label:>4}  {hogs:<7} {seed:<11} {fmt_seconds(r.seconds):>8}  {r.summary()}")
    if not randomly:
        print("(pytest-randomly is not installed: every run took the tests in file order)")
    for r in done:
        if r.failed and r.seed is not None:
            again = shlex.join([python, "-m", "pytest", *r.args])
            if r.hog:
                print(f"run {r.label} again, same order, under the hog: {shlex.join([python, 'tools/flake.py'])}"
                      f" -n 1 --hog all --seed {r.seed} --no-notebooks -- "
                      f"{shlex.join(a for a in r.args if not a.startswith('--randomly-seed'))}")
            else:
                print(f"run {r.label} again, same order: NETLAB_QUICK=1 {again}")

    tests: dict = {}
    for r in done:
        for tid, (ok, reason) in r.outcomes.items():
            tests.setdefault(tid, []).append((r, ok, reason))
    flaky = {tid: seen for tid, seen in tests.items() if any(not ok for _, ok, _ in seen)}
    if not flaky:
        print(f"\nno test failed in {len(done)} run(s).")
        return 0

    print(f"\nfailed at least once: {len(flaky)} test(s)")
    for tid, seen in sorted(flaky.items(), key=lambda kv: -sum(not ok for _, ok, _ in kv[1])):
        bad = [(r, reason) for r, ok, reason in seen if not ok]
        with_hog = [r for r, _, _ in seen if r.hog]
        bad_hog = [r for r, _ in bad if r.hog]
        split = ", ".join(f"{label} {n} of {of}" for label, n, of in (
            ("under the hog", len(bad_hog), len(with_hog)),
            ("without", len(bad) - len(bad_hog), len(seen) - len(with_hog))) if of)
        print(f"\n  {tid}")
        print(f"    failed in {len(bad)} of {len(seen)} run(s) ({split}): "
              f"run {', '.join(r.label + (' (hog)' if r.hog else '') for r, _ in bad)}")
        reasons = []
        for _, reason in bad:
            if reason not in reasons:
                reasons.append(reason)
        for reason in reasons[:3]:
            print(f"    {reason[:300]}")
        first = bad[0][0]
        flake = shlex.join([python, "tools/flake.py"])
        if tid == "(pytest session)":
            continue
        if ".ipynb::" in tid:       # a cell needs the cells before it: the whole notebook
            notebook = tid.split("::")[0]
            print(f"    again:  NETLAB_QUICK=1 {shlex.join([python, '-m', 'pytest', notebook])} "
                  f"{nbval}")
            print(f"    under the hog: {flake} -n 0 --notebooks {shlex.quote(notebook)}")
        else:
            print(f"    alone:  NETLAB_QUICK=1 {shlex.join([python, '-m', 'pytest', tid, '-rs'])}")
            print(f"    under the hog: {flake} -n 3 --hog all --no-notebooks -- {shlex.quote(tid)}")
    return len(flaky)


# ---------------------------------------------------------------------------------------------

def has_randomly(python: str, args: list) -> bool:
    if any("no:randomly" in a for a in args):
        return False
    return subprocess.run([python, "-c", "import pytest_randomly"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def given_seed(args: list) -> str | None:
    for i, a in enumerate(args):
        if a.startswith("--randomly-seed="):
            return a.split("=", 1)[1]
        if a == "--randomly-seed" and i + 1 < len(args):
            return args[i + 1]
    return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    else:
        pytest_args = []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="pytest arguments go after `--` (default: tests).")
    ap.add_argument("-n", "--runs", type=int, default=5, help="unit-test runs (default 5)")
    ap.add_argument("--hog", choices=("half", "all", "none"), default="half",
                    help="which unit runs get the CPU hog: every second one (default), all, none")
    ap.add_argument("--hog-core", type=int, default=None,
                    help="the core the hog spins on (default: the last one this process may use)")
    ap.add_argument("--seed", default=None,
                    help="pytest-randomly seed for every run (default: a new one per run)")
    ap.add_argument("--no-notebooks", action="store_true", help="skip the notebook run")
    ap.add_argument("--notebooks", nargs="+", default=["notebooks/solutions"], metavar="PATH",
                    help="what the notebook run runs (default: notebooks/solutions)")
    ap.add_argument("--nbval", default=NBVAL, help=f"nbval's options (default: {NBVAL})")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter whose pytest runs the tests (default: this one)")
    opts = ap.parse_args(argv)
    if opts.runs < 0:
        ap.error("-n must be 0 or more")
    pytest_args = pytest_args or ["tests"]

    python = opts.python
    randomly = has_randomly(python, pytest_args)
    fixed_seed = opts.seed or given_seed(pytest_args)
    core = hog_core(opts.hog_core)
    if opts.seed and not randomly:
        print("[flake] --seed is ignored: pytest-randomly is not installed (or -p no:randomly)")
    env = dict(os.environ, NETLAB_QUICK="1")

    runs = []
    for i in range(1, opts.runs + 1):
        with_hog = opts.hog == "all" or (opts.hog == "half" and i % 2 == 0)
        args = list(pytest_args)
        seed = None
        if randomly:
            seed = fixed_seed or str(random.getrandbits(32))
            if given_seed(args) is None:
                args.append(f"--randomly-seed={seed}")
        runs.append(Run(str(i), with_hog, args, seed))
    if not opts.no_notebooks:
        nbval = shlex.split(opts.nbval)
        if "no:randomly" not in nbval:      # cells run in order, always
            nbval += ["-p", "no:randomly"]
        runs.append(Run("nb", True, [*opts.notebooks, *nbval]))

    where = f"on core {core}" if core >= 0 else "(unpinned: no CPU affinity on this OS)"
    print(f"[flake] {opts.runs} unit run(s) of `pytest {shlex.join(pytest_args)}`"
          f"{', notebooks once' if not opts.no_notebooks else ''}; CPU hog {where} for runs "
          f"{', '.join(r.label for r in runs if r.hog) or 'none'}; "
          f"{'pytest-randomly: a seed per run' if randomly else 'file order (no pytest-randomly)'}",
          flush=True)

    # SIGTERM and SIGHUP unwind like Ctrl-C, so the hog is stopped and the report printed; SIGINT
    # too when it came in ignored (a shell starts background jobs that way)
    def as_interrupt(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, as_interrupt)

    interrupted = False
    with tempfile.TemporaryDirectory(prefix="netlab-flake-") as tmp:
        try:
            for r in runs:
                what = "notebooks" if r.label == "nb" else f"unit run {r.label}/{opts.runs}"
                print(f"\n[flake] === {what}{', CPU hog on' if r.hog else ''}"
                      f"{f', seed {r.seed}' if r.seed else ''}: pytest {shlex.join(r.args)}",
                      flush=True)
                junit = Path(tmp) / f"run-{r.label}.xml"
                if r.hog:
                    with hog(core):
                        run_pytest(python, r, junit, env)
                else:
                    run_pytest(python, r, junit, env)
                print(f"[flake] === {what}: {r.summary()} in {fmt_seconds(r.seconds)}", flush=True)
        except KeyboardInterrupt:
            interrupted = True
            print("\n[flake] interrupted (pytest and the hog are stopped); the runs so far:", flush=True)
        shown = os.path.relpath(python, ROOT) if python.startswith(str(ROOT)) else python
        bad = report(runs, core, randomly, shown, opts.nbval)
    if interrupted:
        return 130
    return 1 if bad or any(r.failed for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
