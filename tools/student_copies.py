"""Make the students' notebooks from the solution copies, so the two never drift.

Authors write every notebook once, in notebooks/solutions/, with its answers in place; CI runs
those. This script writes notebooks/NN-*.ipynb for students:

- in a code cell, the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` become
  ``raise NotImplementedError(...)`` at the same indentation (the rest of the cell — the
  function's signature, the docstring, the hints — stays);
- a code cell tagged ``solution`` becomes just that line;
- in a markdown cell, text between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``
  is dropped (a written answer);
- every output is cleared, and every execution count: a student predicts before each
  measurement, and a copy that shipped the solution run's numbers (or a check's "correct!")
  would answer the question before it is asked. The widgets' saved state goes too.

    python tools/student_copies.py            # write the student copies
    python tools/student_copies.py notebooks/solutions/03-*.ipynb    # only these
    python tools/student_copies.py --check    # exit 1 if any is out of date (the tests do this)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "notebooks" / "solutions"
STUDENTS = ROOT / "notebooks"
TODO = 'raise NotImplementedError("your turn: replace this line with your code")'
MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->\n?", re.S)


def _lines(source) -> list:
    text = source if isinstance(source, str) else "".join(source)
    return text.splitlines()


def _strip_code(lines: list):
    out, inside, changed = [], False, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("### BEGIN SOLUTION"):
            if inside:
                raise ValueError("BEGIN SOLUTION inside a solution")
            inside, changed = True, True
            out.append(line[:len(line) - len(line.lstrip())] + TODO)
        elif stripped.startswith("### END SOLUTION"):
            if not inside:
                raise ValueError("END SOLUTION without BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("BEGIN SOLUTION without END")
    return out, changed


def _source(lines: list):
    """nbformat's on-disk form: a list of lines, each but the last ending in a newline."""
    return [ln + "\n" for ln in lines[:-1]] + lines[-1:]


def student_copy(nb: dict) -> dict:
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            new = MD_SOLUTION.sub("", text)
            if new != text:
                cell["source"] = _source(new.splitlines())
            continue
        if cell["cell_type"] != "code":
            continue
        if "solution" in tags:
            lines, changed = [TODO], True
        else:
            lines, changed = _strip_code(_lines(cell["source"]))
        if changed:
            cell["source"] = _source(lines)
        cell["outputs"] = []
        cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def render(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return json.dumps(student_copy(nb), indent=1, ensure_ascii=False) + "\n"


def main(argv) -> int:
    check = "--check" in argv
    only = [Path(a).resolve() for a in argv if not a.startswith("--")]
    stale = []
    for src in sorted(SOLUTIONS.glob("[0-9][0-9]-*.ipynb")):
        if only and src.resolve() not in only:
            continue
        dst = STUDENTS / src.name
        text = render(src)
        if dst.exists() and dst.read_text(encoding="utf-8") == text:
            continue
        stale.append(dst.name)
        if not check:
            dst.write_text(text, encoding="utf-8")
    orphans = [] if only else sorted(p.name for p in STUDENTS.glob("[0-9][0-9]-*.ipynb")
                                     if not (SOLUTIONS / p.name).exists())
    if check and (stale or orphans):
        print(f"out of date: {', '.join(stale + orphans)}: run `python tools/student_copies.py` "
              "(make notebooks does)", file=sys.stderr)
        return 1
    if not check and stale:
        print(f"wrote {len(stale)} student cop{'y' if len(stale) == 1 else 'ies'}: "
              f"{', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
