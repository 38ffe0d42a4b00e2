"""Checking what we were asked for: a wrong value is one sentence that names it, not a traceback.

A bool is refused where a number is wanted (``True`` is an int in Python, and ``workers=True``
is a mistake, not one worker).
"""

from __future__ import annotations

import argparse

from .servers import NetlabError


def whole(name: str, value, lo: int, hi: int, error=NetlabError) -> int:
    """``value`` if it is a whole number from ``lo`` to ``hi``, else ``error`` saying so."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise error(f"{name} must be a whole number from {lo:,} to {hi:,}, not {value!r}")
    return value


def number(name: str, value, lo: float, hi: float, integer: bool = False):
    """``value`` if it is a number (a whole one if ``integer``) from ``lo`` to ``hi``."""
    if integer:
        return whole(name, value, lo, hi)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise NetlabError(f"{name} must be a number from {lo:g} to {hi:g}, not {value!r}")
    return value


def comma_ints(text: str, least: int = 0) -> list:
    """An argparse type: "1,10,100" -> [1, 10, 100], each at least ``least``."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < least for v in vals):
        raise argparse.ArgumentTypeError(f"expected whole numbers of at least {least} separated "
                                         f"by commas, not {text!r}")
    return vals


def comma_counts(text: str) -> list:
    """An argparse type: "1,10,100" -> [1, 10, 100], each at least 1."""
    return comma_ints(text, 1)
