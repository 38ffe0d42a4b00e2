"""Interactive controls over netlab's figures (ipywidgets).

Every piece is a plain attribute, so a test can drive a widget without a browser; importing this
module needs no frontend. The figures come from the experiment modules, which plot without
widgets too.

    from netlab.experiments import fdbench
    from netlab.widgets import fd_explorer
    fd_explorer(fdbench.measure())       # slide N; "measure at N now" adds a live point
"""

from __future__ import annotations

import math

import ipywidgets as widgets
from IPython.display import clear_output, display

from .experiments import fdbench
from .servers import NetlabError


def _loglog(points, n, extrapolate):
    """(value at n, how) on straight log-log lines through (fds, cpu) points, or (nan, "")."""
    pts = sorted(zip(points["fds"], points["cpu_s_per_100k"]))
    exact = [y for x, y in pts if x == n]
    if exact:
        return exact[0], "exact"
    xs, ys, x = [math.log(x) for x, _ in pts], [math.log(y) for _, y in pts], math.log(n)
    if len(pts) < 2 or (not extrapolate and not xs[0] < x < xs[-1]):
        return float("nan"), ""
    i = max(1, min(len(xs) - 1, sum(v < x for v in xs)))
    y = ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return math.exp(y), "interpolated" if xs[0] < x < xs[-1] else "extrapolated"


BOOK_HOW = {"exact": "the book's row", "interpolated": "interpolated between the book's rows",
            "extrapolated": "extrapolated past the book's rows (it stops at 10,000 fds)"}


def values_at(n, measured=None, reference=None):
    """Each mechanism at ``n`` fds, this machine and the book side by side, never mixed:
    ``here_s_per_100k`` (CPU s per 100k waits measured here at n, or interpolated on a log-log
    line between two points measured here; NaN otherwise, ``here_how`` says why) and
    ``tlpi_s_per_100k`` (TLPI table 63-9's, with ``tlpi_how``: its row, interpolated, or
    extrapolated past its last row). Where n itself was measured, ``here_repeats`` and
    ``here_spread`` say how many runs its median comes from and how far apart they were
    ((max - min) / median; NaN elsewhere): one run's number on a shared machine is noisy."""
    import pandas as pd
    ref = fdbench.reference() if reference is None else reference
    mine_all = pd.DataFrame(columns=fdbench.COLUMNS) if measured is None else measured
    mine_all = mine_all[mine_all["source"] == "measured"]
    rows = []
    for mech in fdbench.MECHANISMS:
        book, book_how = _loglog(ref[(ref["mechanism"] == mech) & (ref["status"] == "measured")],
                                 n, extrapolate=True)
        mine = mine_all[mine_all["mechanism"] == mech]
        value, how = _loglog(mine[mine["status"] == "measured"], n, extrapolate=False)
        walls = mine[(mine["status"] != "measured") & (mine["fds"] <= n)]
        wall = walls["reason"].iloc[0] if len(walls) else (
            fdbench.FD_SETSIZE_REASON if mech == "select" and n >= fdbench.FD_SETSIZE else "")
        repeats = spread = float("nan")
        if how == "exact":
            how = "measured"
            at = mine[(mine["status"] == "measured") & (mine["fds"] == n)].iloc[0]
            repeats, spread = at.get("repeats", float("nan")), at.get("spread", float("nan"))
        elif not how or wall:
            value, how = float("nan"), f"not possible here: {wall}" if wall else \
                "not measured near this N (use the button)"
        rows.append(dict(mechanism=mech, fds=n, here_s_per_100k=value,
                         here_us_per_wait=value * 10, here_how=how, tlpi_s_per_100k=book,
                         tlpi_how=BOOK_HOW.get(book_how, ""), here_repeats=repeats,
                         here_spread=spread))
    return pd.DataFrame(rows)


class FdExplorer(widgets.VBox):
    """A log slider over N, the select/poll/epoll figure marked at N, the values at N, and a
    button that measures at N now (``repeats`` runs per point, their median and spread shown).
    Pieces: ``.slider``, ``.button``, ``.output``, ``.status``; what is shown: ``.figure``,
    ``.values``, ``.measured``."""

    def __init__(self, measured=None, reference=None, repeats=1):
        from .env import fd_limit
        self.repeats = repeats
        self.measured = fdbench.measure(progress=True, repeats=repeats) if measured is None \
            else measured
        self.measured = self.measured[self.measured["source"] == "measured"]
        self.reference = fdbench.reference() if reference is None else reference
        limit = (fd_limit() or (0, 0))[0]
        top = max(10_000, min(100_000, limit - 64 if limit > 0 else 100_000))
        self.slider = widgets.FloatLogSlider(
            value=100, base=10, min=1, max=math.log10(top), step=0.01, description="fds (N)",
            continuous_update=False, readout_format=",.0f",
            layout=widgets.Layout(width="420px"))
        self.button = widgets.Button(description="measure at N now", icon="play",
                                     tooltip="run select, poll and epoll at N fds on this machine")
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.figure = self.values = None
        self.slider.observe(lambda change: self.refresh(), names="value")
        self.button.on_click(lambda _: self.measure_now())
        super().__init__([widgets.HBox([self.slider, self.button]), self.status, self.output])
        self.refresh()

    def __repr__(self) -> str:
        # what a static copy of the notebook (GitHub, nbval) shows instead of the live widget
        return (f"fd explorer at N = {self.n:,} fds (a live slider and a 'measure at N now' "
                "button when this notebook runs in JupyterLab)")

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))

    @property
    def n(self) -> int:
        """The number of fds the slider points at."""
        return int(round(self.slider.value))

    def refresh(self):
        """Re-plot with the mark at N and show the values at N (closing the figure replaced)."""
        import matplotlib.pyplot as plt
        n = self.n
        self.values = values_at(n, self.measured, self.reference)
        df = self.measured.copy()
        if len(df):
            import pandas as pd
            df = pd.concat([df, self.reference], ignore_index=True)
            df.attrs = dict(self.measured.attrs)
        else:
            df = self.reference
        old, self.figure = self.figure, fdbench.plot(df, mark=n)
        if old is not None:
            plt.close(old)
        with self.output:                       # one capture: replace what it showed
            clear_output(wait=True)
            display(self.figure)
            display(self.values)
        plt.close(self.figure)      # shown already; closing keeps pyplot from showing it again

    def measure_now(self):
        """Measure every mechanism at N now and add the points to the figure."""
        import pandas as pd
        n = self.n
        self.button.disabled = True
        self.status.value = f"measuring select, poll and epoll at {n:,} fds…"
        try:
            new = fdbench.measure(sizes=[n], repeats=self.repeats)
        except NetlabError as e:
            self.status.value = f"could not measure: {e}"
            return
        finally:
            self.button.disabled = False
        keep = self.measured[self.measured["fds"] != n]
        attrs = dict(self.measured.attrs) or dict(new.attrs)
        self.measured = pd.concat([keep, new], ignore_index=True).sort_values(
            ["fds"], kind="stable", ignore_index=True)
        self.measured.attrs = attrs
        done = new[new["status"] == "measured"]
        runs = f" (median of {self.repeats} runs, spread " if self.repeats > 1 else ""
        self.status.value = f"measured at {n:,} fds: " + ", ".join(
            f"{r.mechanism} {r.cpu_s_per_100k:.3g} s"
            + (f"{runs}{r.spread:.0%})" if runs else "") for r in done.itertuples()) + (
            " per 100k waits" if len(done) else "nothing (see the values table for why)")
        self.refresh()


def fd_explorer(measured=None, reference=None, repeats=1) -> FdExplorer:
    """The fd-scaling explorer (TLPI 63-9, live): ``measured`` from ``fdbench.measure()``
    (measured now if not given), ``reference`` from ``fdbench.reference()``; the button
    measures each point ``repeats`` times."""
    return FdExplorer(measured, reference, repeats)
