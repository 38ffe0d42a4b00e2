"""Run notebooks in place (class mode) so their committed outputs come from a real run.

Why not plain `jupyter nbconvert --execute`: nbclient sometimes never sees the reply to a cell
that created ipywidgets (nbclient issue #312) and waits until its timeout. Each notebook runs
here in a child process with a wall-clock limit, and a hung run is retried, so `make notebooks`
finishes. (nbclient keeps widget state while it runs — an ipywidgets Output needs it — and
tools/clean_notebooks.py drops it afterwards.)

    python tools/execute_notebooks.py notebooks/solutions/03-*.ipynb
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

LIMIT_S = 420          # class mode promises ≤ 3 min a notebook; more than twice that is a hang
TRIES = 3

RUN_ONE = """
import sys, nbformat
from pathlib import Path
from nbclient import NotebookClient
path = Path(sys.argv[1])
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3",
               resources={"metadata": {"path": str(path.parent)}}).execute()
nbformat.write(nb, path)
"""


def run(path: str) -> bool:
    for attempt in range(1, TRIES + 1):
        t0 = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-c", RUN_ONE, path], timeout=LIMIT_S,
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            print(f"{path}: no progress after {LIMIT_S} s (the widget hang?); "
                  f"try {attempt + 1} of {TRIES}", file=sys.stderr)
            continue
        if done.returncode == 0:
            seconds = time.monotonic() - t0
            print(f"{path}: ran in {seconds:.0f} s")
            stamp_run_time(path, seconds)
            return True
        print(f"{path}: a cell failed (see above)", file=sys.stderr)
        return False
    return False


RUN_TIME = re.compile(r"^\*\*Run time:\*\*.*$", re.M)


def stamp_run_time(path: str, seconds: float) -> None:
    """Say at the top of the notebook how long this class-mode run took, measured here: a
    student plans a sitting by it. The line is replaced at each run, never typed by hand."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if first is None:
        return
    took = f"{round(seconds, -1):.0f} s" if seconds < 90 else f"{round(seconds / 60)} min"
    line = (f"**Run time:** about {took} in class mode on {os.cpu_count()} cores "
            "(measured by `make notebooks`).")
    text = "".join(first["source"])
    text = RUN_TIME.sub(line, text) if RUN_TIME.search(text) else text.rstrip("\n") + "\n\n" + line
    lines = text.split("\n")
    first["source"] = [ln + "\n" for ln in lines[:-1]] + lines[-1:]
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    failed = [p for p in sys.argv[1:] if not run(p)]
    sys.exit(1 if failed else 0)
