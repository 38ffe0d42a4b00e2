"""Progress of a long run, shown where it is watched: a bar in Jupyter, a line per step on a
terminal, or each step's line handed to a function of yours.

    with Progress(progress, total=len(todo), what="accept lock") as bar:
        for pool in todo:
            bar.step(f"pool {pool}")          # starting this step (the previous one is done)
            ...

Why both: a notebook cell that runs a minute with no sign of life looks hung, and a bar is the
sign a student reads at a glance (tqdm's notebook bar); a terminal or a CI log wants lines.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Union

from .servers import NetlabError


def in_notebook() -> bool:
    """Is this a Jupyter kernel (where a widget can be shown)?"""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """``progress``: True (a bar in Jupyter, lines on stderr elsewhere), a function (given each
    step's line), or False (quiet). ``step(text)`` starts a step; ``close()`` ends the last."""

    def __init__(self, progress: Union[bool, Callable[[str], None]], total: int, what: str = ""):
        if not (isinstance(progress, bool) or callable(progress)):
            raise NetlabError(f"progress must be True, False or a function, not {progress!r}")
        self.total, self.what, self.started = total, what, 0
        self._say: Optional[Callable[[str], None]] = progress if callable(progress) else None
        self._lines = progress is True
        self._bar = None
        if progress is True and in_notebook():
            try:
                from tqdm.notebook import tqdm
                self._bar = tqdm(total=total, desc=what, leave=True)
                self._lines = False
            except ImportError:         # no tqdm or no ipywidgets: lines, as on a terminal
                pass

    def step(self, text: str) -> None:
        """Start the next step (``text`` says what it does); the previous one is done."""
        self.started += 1
        if self._bar is not None:
            if self.started > 1:
                self._bar.update(1)
            self._bar.set_postfix_str(text)
            return
        line = f"[{self.started}/{self.total}] {self.what + ': ' if self.what else ''}{text}"
        if self._say is not None:
            self._say(line)
        elif self._lines:
            print(line, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A result worth a line of its own (a warning, a measured point), between steps."""
        if self._bar is not None:
            self._bar.write(text)
        elif self._say is not None:
            self._say(text)
        elif self._lines:
            print(text, file=sys.stderr, flush=True)

    def close(self, finished: bool = True) -> None:
        """End the bar; the step under way counts as done only if ``finished``."""
        if self._bar is not None:
            done = self.started if finished else max(0, self.started - 1)
            self._bar.update(done - self._bar.n)
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(finished=exc_type is None)
