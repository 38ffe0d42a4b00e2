"""tools/assert_margins.py: asserts keep their meaning once instrumented, and their slack is logged."""

import json
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tools"))
import assert_margins  # noqa: E402


def run_cell(source, tmp_path):
    """Instrument one cell as the tool does, run it, return the logged comparisons."""
    log = tmp_path / "log.jsonl"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    assert_margins.instrument(nb, "t", str(log))
    ns = {}
    for cell in nb.cells:
        exec(compile(cell.source, "<cell>", "exec"), ns)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_slack_is_the_relative_room_to_the_threshold(tmp_path):
    got = run_cell("x = 8\nassert x <= 10\nassert 2 * x >= 12, 'msg'\n", tmp_path)
    assert [(r["a"], r["op"], r["b"]) for r in got] == [(8, "<=", 10), (16, ">=", 12)]
    assert got[0]["slack"] == pytest.approx(0.2) and got[1]["slack"] == pytest.approx(0.25)


def test_a_failing_assert_still_fails_with_its_message(tmp_path):
    with pytest.raises(AssertionError, match="too big"):
        run_cell("assert 11 <= 10, 'too big'\n", tmp_path)


def test_chains_short_circuit_and_series_report_their_worst_element(tmp_path):
    src = ("import pandas as pd\n"
           "s = pd.Series([1.0, 9.0])\n"
           "assert (s <= 10).all()\n"
           "assert 0 < 5 < 4 or True\n"           # 5 < 4 fails: the chain stops there
           "assert 1 > 2 < (1 / 0) or True\n")    # 1 > 2 fails: 1/0 is never evaluated
    got = run_cell(src, tmp_path)
    assert got[0]["a"] == 9.0 and got[0]["slack"] == pytest.approx(0.1)
    assert [r["text"] for r in got[1:]] == ["0 < 5 < 4", "0 < 5 < 4", "1 > 2 < 1 / 0"]


def test_cells_with_magics_run_as_written(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%time x = 1\nassert x < 2")])
    assert_margins.instrument(nb, "t", str(tmp_path / "log"))
    assert nb.cells[1].source == "%time x = 1\nassert x < 2"


def test_pytest_files_are_probed_too(tmp_path):
    import subprocess
    test = tmp_path / "test_tiny.py"
    test.write_text("def test_it():\n    x = 3\n    assert x < 4\n")
    out = subprocess.run([sys.executable, str(Path(assert_margins.__file__)), str(test)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 passed" in out.stdout
    assert "+25.0%  test_tiny:3" in out.stdout and "x < 4" in out.stdout
