"""The unit tests once on every supported Python this machine has: a table of what passed.

    python3 tools/versions.py                              # 3.10, 3.11, 3.12 and 3.13
    python3 tools/versions.py --only 3.10 3.13 -- tests/test_http.py

Each interpreter is looked for on PATH (python3.X) and under pyenv (`pyenv root`/versions/3.X.*,
the newest first); the first one that runs and has venv is used. Each gets its own virtualenv,
.venvs/py3.X, with requirements.txt installed (kept, and reinstalled only when requirements.txt,
pyproject.toml or the interpreter change), and runs `pytest tests` once as `make test` runs it
(NETLAB_QUICK=1). Everything after `--` goes to pytest instead of `tests`. Exit status 1 when a
version that was found failed (its install or its tests); a version not found is only reported.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flake import ROOT, Run, fmt_seconds, run_pytest  # noqa: E402

SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
VENVS = ROOT / ".venvs"
PROBE = "import sys, venv, ensurepip; print('%d.%d %s' % (*sys.version_info[:2], sys.version.split()[0]))"


def pyenv_root() -> Path | None:
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    return Path(root) if os.path.isdir(root) else None


def patch_key(path: str) -> tuple:
    m = re.search(r"/versions/\d+\.\d+\.(\d+)", path)
    return (int(m.group(1)) if m else -1,)


def candidates(version: str) -> list:
    """Interpreters that may be Python `version`: PATH first, then pyenv's, newest patch first.
    (A pyenv shim on PATH fails unless that version is selected; it is skipped on probing.)"""
    found = []
    exe = shutil.which(f"python{version}")
    if exe:
        found.append(exe)
    root = pyenv_root()
    if root:
        found += sorted(glob.glob(str(root / "versions" / f"{version}.*" / "bin" / f"python{version}")),
                        key=patch_key, reverse=True)
    return found


def find(version: str) -> tuple:
    """(interpreter, full version) of the first candidate that runs as `version` with venv and
    ensurepip, or (None, why not)."""
    why = "not found"
    for exe in candidates(version):
        try:
            out = subprocess.run([exe, "-c", PROBE], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"{exe} does not run ({e.__class__.__name__})"
            continue
        words = out.stdout.split()
        if out.returncode == 0 and words and words[0] == version:
            return exe, words[1]
        if out.returncode != 0 and ("venv" in out.stderr + out.stdout
                                    or "ensurepip" in out.stderr + out.stdout):
            why = f"{exe} has no venv/ensurepip (on Debian/Ubuntu: apt-get install python{version}-venv)"
    return None, why


def fingerprint(exe: str, full: str) -> str:
    h = hashlib.sha256(f"{os.path.realpath(exe)} {full}\n".encode())
    for name in ("requirements.txt", "pyproject.toml"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def prepare(version: str, exe: str, full: str) -> tuple:
    """.venvs/py3.X with requirements.txt installed: (its python, None) or (None, what failed)."""
    venv = VENVS / f"py{version}"
    py = venv / "bin" / "python"
    stamp = venv / ".netlab-installed"
    want = fingerprint(exe, full)
    if stamp.exists() and stamp.read_text().strip() == want and \
            subprocess.run([str(py), "-c", "import netlab, pytest"], capture_output=True).returncode == 0:
        print(f"[versions] {version}: reusing {venv.relative_to(ROOT)}", flush=True)
        return str(py), None
    stale = not py.exists() or subprocess.run(
        [str(py), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True, text=True).stdout.strip() != full
    steps = []
    if stale:
        steps.append([exe, "-m", "venv", "--clear", str(venv)])
    steps += [[str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
              [str(py), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"]]
    print(f"[versions] {version}: installing requirements.txt into {venv.relative_to(ROOT)} "
          f"with {exe} ({full}); minutes the first time", flush=True)
    stamp.unlink(missing_ok=True)
    for cmd in steps:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            tail = (out.stderr or out.stdout).strip().splitlines()[-15:]
            print(f"[versions] {version}: `{' '.join(cmd[1:4])} ...` failed:\n    "
                  + "\n    ".join(tail), flush=True)
            last = next((line for line in reversed(tail) if line.strip()), "?")
            return None, f"install failed: {last.strip()[:160]}"
    stamp.write_text(want + "\n")
    return str(py), None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="pytest arguments go after `--` (default: tests).")
    ap.add_argument("--only", nargs="+", metavar="3.X", default=list(SUPPORTED),
                    help=f"the versions to try (default: {' '.join(SUPPORTED)})")
    opts = ap.parse_args(argv)
    pytest_args = pytest_args or ["tests"]
    for v in opts.only:
        if v not in SUPPORTED:
            print(f"[versions] note: {v} is not among the supported {', '.join(SUPPORTED)}")

    rows = []          # (version, interpreter or "", status, detail, run or None)
    with tempfile.TemporaryDirectory(prefix="netlab-versions-") as tmp:
        try:
            for v in opts.only:
                exe, full = find(v)
                if exe is None:
                    why = "" if full == "not found" else f"{full}; "
                    rows.append((v, "", "not found",
                                 f"{why}install it with `pyenv install {v}` (or your system's "
                                 f"python{v} and python{v}-venv packages)", None))
                    continue
                py, failed = prepare(v, exe, full)
                if py is None:
                    rows.append((v, f"{exe} ({full})", "FAILED", failed, None))
                    continue
                venv_bin = str(Path(py).parent)
                env = dict(os.environ, NETLAB_QUICK="1", VIRTUAL_ENV=str(Path(venv_bin).parent),
                           PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))
                env.pop("PYTHONHOME", None)
                run = Run(v, False, list(pytest_args))
                print(f"\n[versions] === Python {full}: pytest {' '.join(pytest_args)}", flush=True)
                run_pytest(py, run, Path(tmp) / f"py{v}.xml", env)
                status = "FAILED" if run.failed else "passed"
                rows.append((v, f"{exe} ({full})", status,
                             f"{run.summary()} in {fmt_seconds(run.seconds)}", run))
        except KeyboardInterrupt:
            print("\n[versions] interrupted", flush=True)
            rows.append(("-", "", "interrupted", "the versions after this one were not tried", None))

    print("\n" + "=" * 30 + " versions " + "=" * 30)
    width = max([len(r[1]) for r in rows] + [11])
    print(f"{'python':<7} {'interpreter':<{width}}  {'result':<9}  detail")
    for v, exe, status, detail, _ in rows:
        print(f"{v:<7} {exe or '-':<{width}}  {status:<9}  {detail}")
    for v, _, _, _, run in rows:
        if run is not None and run.failed:
            print(f"\nfailed on {v}:")
            for tid, (ok, reason) in run.outcomes.items():
                if not ok:
                    print(f"  {tid}\n    {reason[:300]}")
    tested = [r for r in rows if r[2] in ("passed", "FAILED")]
    if any(r[2] in ("FAILED", "interrupted") for r in rows):
        return 130 if rows[-1][2] == "interrupted" else 1
    if not tested:
        print("\nno supported Python found: nothing was tested")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
