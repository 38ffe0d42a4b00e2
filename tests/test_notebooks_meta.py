"""Committed notebooks: kernel `python3`, no widget state, no paths of the machine that ran them;
students' copies generated from the solution copies and up to date."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]-*.ipynb"))
STUDENTS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(/root/|/home/\w|/Users/\w|/work/|[A-Z]:\\\\Users)")
sys.path.insert(0, str(ROOT / "tools"))
import execute_notebooks  # noqa: E402
import student_copies  # noqa: E402


def test_there_is_a_start_here_notebook():
    assert SOLUTIONS and SOLUTIONS[0].name == "00-start-here.ipynb"
    assert [p.name for p in STUDENTS] == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("path", SOLUTIONS + STUDENTS,
                         ids=[f"solutions/{p.name}" for p in SOLUTIONS] + [p.name for p in STUDENTS])
def test_notebook_is_fit_to_commit(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb["metadata"], "run tools/clean_notebooks.py (make notebooks)"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    if path in SOLUTIONS:       # run top to bottom in one fresh kernel: counts 1, 2, 3, ...
        counts = [c.get("execution_count") for c in code]
        assert code and counts == list(range(1, len(code) + 1)), \
            f"{path.name}: commit outputs from one real run, every cell in order (make notebooks)"
        assert code[0].get("outputs"), f"{path.name}: the setup cell shows no output"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: a cell failed when run"
            text = json.dumps(out)
            assert not ABSOLUTE_PATH.search(text), f"{path.name}: output names a local path"


def test_student_copies_are_generated_from_the_solutions_and_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "student_copies.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("path", STUDENTS, ids=[p.name for p in STUDENTS])
def test_student_copies_hold_no_solution(path):
    text = path.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text


@pytest.mark.parametrize("path", STUDENTS, ids=[p.name for p in STUDENTS])
def test_student_copies_hold_no_outputs(path):
    """The student predicts first: a copy that shows the solution run's numbers spoils that."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
    assert "widgets" not in nb.get("metadata", {})


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_each_notebook_says_its_measured_run_time_at_the_top(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    assert re.search(r"^\*\*Run time:\*\* about \d+ (s|min) in class mode", "".join(first["source"]),
                     re.M), f"{path.name}: run `make notebooks`, which measures and states it"


def test_the_run_time_line_is_replaced_not_repeated(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "Intro."]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    execute_notebooks.stamp_run_time(str(path), 42.0)
    execute_notebooks.stamp_run_time(str(path), 200.0)
    text = "".join(json.loads(path.read_text())["cells"][0]["source"])
    assert text.startswith("# Title\nIntro.\n\n**Run time:** about 3 min in class mode")
    assert text.count("Run time") == 1


def test_the_generator_keeps_the_scaffold_and_removes_the_answer():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": 3, "outputs": [{"x": 1}],
         "source": ["def serve(sock, app):\n", "    \"\"\"Your loop.\"\"\"\n",
                    "    ### BEGIN SOLUTION\n", "    secret()\n", "    ### END SOLUTION\n",
                    "    return 1"]},
        {"cell_type": "code", "metadata": {"tags": ["solution"]}, "execution_count": 4,
         "outputs": [], "source": ["answer = 42"]},
        {"cell_type": "code", "metadata": {"tags": ["check"]}, "execution_count": 5,
         "outputs": [{"text": "correct!"}], "source": ["assert answer == 42"]},
        {"cell_type": "markdown", "metadata": {},
         "source": ["Why?\n", "<!-- BEGIN SOLUTION -->\n", "Because.\n",
                    "<!-- END SOLUTION -->\n", "Next."]},
        {"cell_type": "code", "metadata": {}, "execution_count": 6, "outputs": [{"y": 2}],
         "source": ["print('kept')"]},
    ]}
    out = student_copies.student_copy(nb)
    c0, c1, c2, md, c4 = out["cells"]
    assert "".join(c0["source"]) == ("def serve(sock, app):\n    \"\"\"Your loop.\"\"\"\n    "
                                     + student_copies.TODO + "\n    return 1")
    assert c0["outputs"] == [] and c0["execution_count"] is None
    assert "".join(c1["source"]) == student_copies.TODO
    assert c2["outputs"] == [] and "".join(c2["source"]) == "assert answer == 42"
    assert "".join(md["source"]) == "Why?\nNext."
    assert c4["outputs"] == [] and c4["execution_count"] is None    # no answer before a guess
    with pytest.raises(ValueError):
        student_copies._strip_code(["### BEGIN SOLUTION", "x"])


import lesson_form  # noqa: E402


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_each_notebook_has_the_lesson_form(path):
    """A short core path that opens with objectives and closes with the recap, only the model's
    own code listed, and every measurement on it predicted first (tools/lesson_form.py)."""
    import netlab
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = lesson_form.problems(nb, {m.name for m in netlab.models()})
    assert not found, f"{path.name}:\n  " + "\n  ".join(found)


def _cell(kind, text, id=None, tags=()):
    cell = {"cell_type": kind, "metadata": {"tags": list(tags)} if tags else {}, "source": text}
    if id:
        cell["id"] = id
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def _lesson(*middle):
    return {"cells": [_cell("markdown", "# T\n**By the end you can:**\n- a"), *middle,
                      _cell("markdown", "## Recap", "recap-md"), _cell("code", "print(1)", "recap-code"),
                      _cell("markdown", "## Going further\nanything"),
                      _cell("code", "netlab.measure(srv, 1)\nnetlab.source(helper)")]}


PREDICT = "# your guess\n### BEGIN SOLUTION\npredicted_rps = 100\n### END SOLUTION"


def test_the_lesson_form_wants_a_prediction_before_each_measurement():
    ok = _lesson(_cell("code", PREDICT), _cell("code", "r = netlab.measure(srv, 4)\nprint(predicted_rps, r)"))
    assert lesson_form.problems(ok, {"epoll"}) == []
    unpredicted = _lesson(_cell("code", "r = netlab.measure(srv, 4)"))
    assert "measures without a prediction" in lesson_form.problems(unpredicted)[0]
    # one prediction does not cover two measurements
    reused = _lesson(_cell("code", PREDICT), _cell("code", "netlab.measure(s, 1), predicted_rps"),
                     _cell("code", "netlab.sweep(['epoll']), predicted_rps"))
    assert [p[:7] for p in lesson_form.problems(reused)] == ["cell 3 "]
    # a prediction after its measurement, or one whose answer the student's copy would show
    late = _lesson(_cell("code", "netlab.measure(s, 1), predicted_rps"), _cell("code", PREDICT))
    assert lesson_form.problems(late)
    spoiled = _lesson(_cell("code", "predicted_rps = 100"), _cell("code", "netlab.measure(s, 1), predicted_rps"))
    assert any("outside a SOLUTION block" in p for p in lesson_form.problems(spoiled))
    widget = _lesson(_cell("code", "interact(lambda: netlab.measure(s, 1))", tags=["widget"]))
    assert lesson_form.problems(widget) == []


def test_the_lesson_form_bounds_the_core_path_and_its_listings():
    long = _lesson(*[_cell("markdown", "word " * 60) for _ in range(lesson_form.MAX_CELLS)])
    found = lesson_form.problems(long)
    assert any("cells (at most" in p for p in found) and any("words of prose" in p for p in found)
    assert lesson_form.problems(_lesson(_cell("code", 'netlab.source("epoll")')), {"epoll"}) == []
    assert lesson_form.problems(_lesson(_cell("code", 'netlab.source("nope")')), {"epoll"})
    assert lesson_form.problems(_lesson(_cell("code", "netlab.source(forks.fork_child)")))
    no_recap = _lesson()
    no_recap["cells"] = no_recap["cells"][:1] + no_recap["cells"][3:]
    assert any("recap" in p for p in lesson_form.problems(no_recap))
