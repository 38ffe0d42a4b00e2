"""Committed notebooks: kernel `python3`, no widget state, no paths of the machine that ran them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(/root/|/home/\w|/Users/\w|/work/|[A-Z]:\\\\Users)")


def test_there_is_a_start_here_notebook():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00-start-here.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_fit_to_commit(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb["metadata"], "run tools/clean_notebooks.py (make notebooks)"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("outputs") for c in code[:1]), "commit outputs from a real run"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: a cell failed when run"
            text = json.dumps(out)
            assert not ABSOLUTE_PATH.search(text), f"{path.name}: output names a local path"
