"""netlab.progress: a bar in Jupyter, a line per step on a terminal, or your function."""

from __future__ import annotations

import sys
import types

import pytest

from netlab import progress as progress_mod
from netlab.progress import Progress
from netlab.servers import NetlabError


def test_a_function_gets_a_line_per_step():
    seen = []
    with Progress(seen.append, 2, "herd") as bar:
        bar.step("accept")
        bar.step("reuseport")
        bar.note("warning: uneven")
    assert seen == ["[1/2] herd: accept", "[2/2] herd: reuseport", "warning: uneven"]


def test_true_outside_jupyter_prints_lines_and_false_is_quiet(capsys):
    assert not progress_mod.in_notebook()
    with Progress(True, 1, "sweep") as bar:
        bar.step("epoll, 10 clients")
    with Progress(False, 1) as bar:
        bar.step("nothing to see")
    out = capsys.readouterr()
    assert out.err == "[1/1] sweep: epoll, 10 clients\n" and out.out == ""


def test_a_bad_progress_is_one_sentence():
    with pytest.raises(NetlabError, match="progress must be True, False or a function"):
        Progress("yes", 1)


class FakeBar:
    made = []

    def __init__(self, total, desc, leave):
        self.total, self.desc, self.n, self.postfix, self.closed = total, desc, 0, [], False
        self.written = []
        FakeBar.made.append(self)

    def update(self, k):
        self.n += k

    def set_postfix_str(self, text):
        self.postfix.append(text)

    def write(self, text):
        self.written.append(text)

    def close(self):
        self.closed = True


def test_in_jupyter_a_bar_counts_the_steps_done(monkeypatch):
    monkeypatch.setattr(progress_mod, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "tqdm.notebook", types.SimpleNamespace(tqdm=FakeBar))
    with Progress(True, 3, "c10k") as bar:
        bar.step("epoll, K = 0")
        made = FakeBar.made[-1]
        assert (made.total, made.desc, made.n) == (3, "c10k", 0)    # the first is under way
        bar.step("epoll, K = 1,000")
        assert made.n == 1
        bar.note("a line above the bar")
    assert made.n == 2 and made.closed               # both steps started are done
    assert made.postfix == ["epoll, K = 0", "epoll, K = 1,000"]
    assert made.written == ["a line above the bar"]


def test_an_interrupted_step_is_not_counted_done(monkeypatch):
    monkeypatch.setattr(progress_mod, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "tqdm.notebook", types.SimpleNamespace(tqdm=FakeBar))
    with pytest.raises(KeyboardInterrupt):
        with Progress(True, 3, "sweep") as bar:
            bar.step("one")
            bar.step("two")
            raise KeyboardInterrupt
    made = FakeBar.made[-1]
    assert made.n == 1 and made.closed          # "one" is done, "two" was interrupted


def test_an_interruption_before_any_step_counts_nothing(monkeypatch):
    monkeypatch.setattr(progress_mod, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "tqdm.notebook", types.SimpleNamespace(tqdm=FakeBar))
    with pytest.raises(KeyboardInterrupt):
        with Progress(True, 3, "sweep"):
            raise KeyboardInterrupt
    assert FakeBar.made[-1].n == 0 and FakeBar.made[-1].closed
