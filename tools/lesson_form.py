"""Check that a notebook has the lesson form: predict -> run -> see -> explain, on a short core path.

The rules (the test suite runs them on every solution notebook):

- The **core path** is every cell before the markdown cell that opens ``## Going further``
  (the whole notebook when there is none). It holds at most ``MAX_CELLS`` cells and about
  1,200 words of prose (``MAX_WORDS``), opens with the objectives (``**By the end you can:**``)
  and ends with the recap (the cells with ids ``recap-md`` and ``recap-code``).
- The only listings on the core path are models' own code: ``netlab.source("<model>")``, or a
  part of the loop or reactor a model is made of (``EventLoop.run``, ``Reactor``...), the blocking
  models' shared ``netlab.handle_connection``, the guestbook's code in its three styles
  (``guestbook.*``, ``LoopBackend``, ``asyncio_loop._guestbook``), or the
  operation a notebook without a model measures (``fdbench.wait_loop``). Plumbing (``netlab.source(some_function)``, helpers, signal masks) goes under "Going further".
- **Every measurement on the core path is predicted first.** A code cell that measures (calls
  ``measure``, ``sweep``, ``timeline.run``, an experiment's ``run``...) uses a ``predicted_*``
  variable, and that variable is set in a *prediction cell* that comes after the previous
  measurement: a code cell whose ``### BEGIN SOLUTION`` block assigns it, so the students' copy
  asks for the value instead of giving it. Cells tagged ``widget`` (the student picks the
  setting and predicts aloud) and ``check`` (an exercise's grader) are not counted.

    python tools/lesson_form.py                      # every solution notebook
    python tools/lesson_form.py notebooks/solutions/03-*.ipynb
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "notebooks" / "solutions"
MAX_CELLS = 25
MAX_WORDS = 1300          # "about 1,200"
GOING_FURTHER = re.compile(r"^## Going further", re.M)
MEASURES = re.compile(
    r"(?<![\w.])(?:netlab\.)?(?:measure|sweep|timeline\.run|load\.run|herd\.run(?:_all)?|"
    r"acceptlock\.run|c10k\.run|c10k\.Holders|fdbench\.measure|syscalls\.(?:profile|compare)|"
    r"showdown|harness\.peers|completion\.(?:syscalls|cpu|idle|batching))\(")
PREDICTED = re.compile(r"\bpredicted_\w+\b")
SOLUTION_BLOCK = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
LISTING = re.compile(r"netlab\.source\(\s*([^)]*)\)")
MODEL_CODE = re.compile(r"""(['"])[\w-]+\1|(EventLoop|Reactor|Acceptor|HttpHandler)(\.\w+)?|netlab\.handle_connection|LoopBackend(\.\w+)?|guestbook\.\w+(\.\w+)?|asyncio_loop\._guestbook|fdbench\.wait_loop""")
EXEMPT_TAGS = {"widget", "check"}


def _text(cell) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _code_only(text: str) -> str:
    """The cell without comments and strings' prose, roughly: enough to find calls."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def core_path(nb: dict) -> list:
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and GOING_FURTHER.search(_text(cell)):
            return cells[:i]
    return cells


def words(cells) -> int:
    return sum(len(_text(c).split()) for c in cells if c["cell_type"] == "markdown")


def problems(nb: dict, models=None) -> list:
    """What keeps ``nb`` from the lesson form, one sentence each (empty: it has it)."""
    out = []
    core = core_path(nb)
    if len(core) > MAX_CELLS:
        out.append(f"the core path has {len(core)} cells (at most {MAX_CELLS}): move plumbing, "
                   "exercises and explorations under '## Going further'")
    if words(core) > MAX_WORDS:
        out.append(f"the core path has {words(core):,} words of prose (about 1,200 at most)")
    if not core or "**By the end you can:**" not in _text(core[0]):
        out.append("the first cell does not open with '**By the end you can:**' and the objectives")
    ids = [c.get("id") for c in core]
    if ids[-2:] != ["recap-md", "recap-code"]:
        out.append("the core path does not end with the recap (cells recap-md, recap-code)")
    assigned_at = {}                  # predicted_* -> index of the prediction cell that sets it
    last_measure = -1
    for i, cell in enumerate(core):
        if cell["cell_type"] != "code":
            continue
        text = _text(cell)
        code = _code_only(text)
        for block in SOLUTION_BLOCK.findall(text):
            for name in re.findall(r"^\s*(predicted_\w+)\s*=", block, re.M):
                assigned_at[name] = i
        for outside in re.findall(r"^\s*(predicted_\w+)\s*=", SOLUTION_BLOCK.sub("", text), re.M):
            out.append(f"cell {i} sets {outside} outside a SOLUTION block: the students' copy "
                       "would hold the answer")
        for arg in LISTING.findall(code):
            arg, name = arg.strip(), arg.strip().strip("'\"")
            quoted = arg[:1] in "'\""
            if not MODEL_CODE.fullmatch(arg) or (quoted and models and name not in models):
                out.append(f"cell {i} lists {arg} on the core path: only a model's own "
                           "module is listed there; move it under '## Going further'")
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & EXEMPT_TAGS or not MEASURES.search(code):
            continue
        used = set(PREDICTED.findall(code))
        fresh = [n for n in used if last_measure < assigned_at.get(n, -1) < i]
        if not fresh:
            out.append(f"cell {i} measures without a prediction made after the previous "
                       "measurement: add a prediction cell (a predicted_* variable set in a "
                       "SOLUTION block) before it, and show it next to the measured value")
        last_measure = i
    return out


def main(argv) -> int:
    paths = [Path(a) for a in argv] or sorted(SOLUTIONS.glob("[0-9][0-9]-*.ipynb"))
    try:
        sys.path.insert(0, str(ROOT))
        import netlab
        models = {m.name for m in netlab.models()}
    except ImportError:
        models = None
    bad = 0
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        found = problems(nb, models)
        core = core_path(nb)
        print(f"{path.name}: core path {len(core)} cells, {words(core):,} words"
              + ("" if found else " ✓"))
        for p in found:
            print(f"  - {p}")
        bad += bool(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
