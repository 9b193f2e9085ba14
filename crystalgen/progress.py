"""Progress bars that show only on a terminal.

A tqdm bar redraws itself with ``\\r``; written into a redirected log it leaves thousands
of partial lines. Every bar in crystalgen comes from :func:`progress_bar`, which draws
only when the caller asks for one *and* stderr (where tqdm writes) is a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

__all__ = ["interactive", "progress_bar"]


def interactive() -> bool:
    """Is stderr a terminal (where a redrawing bar is readable)?"""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar (same arguments as ``tqdm``), disabled unless ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)
