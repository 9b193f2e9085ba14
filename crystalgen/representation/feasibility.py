"""Can given atom counts still be placed on a space group's Wyckoff positions?

Exact memoised depth-first search: elements are filled one after another; positions
with a free parameter may be used any number of times, fixed positions (no free
parameter) at most once over the whole crystal; within an element letters are
non-decreasing (the canonical plan order), so a partly written element continues
from its last letter. A cheap necessary test (unbounded coin change on the group's
multiplicities) rejects most impossible requests before any search.
"""
from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np

from crystalgen.representation.tables import SPACE_GROUPS

REACH_LIMIT = 1024  # atoms in the conventional cell covered by the coin-change table

sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))


@lru_cache(maxsize=None)
def group_info(sg: int) -> tuple[tuple[int, ...], tuple[bool, ...], np.ndarray, int]:
    """(multiplicities, fixed flags, reachable[n] ignoring fixed-once, bitmask of all fixed WPs)."""
    t = SPACE_GROUPS[sg]
    mult = tuple(int(m) for m in t.multiplicity)
    fixed = tuple(bool(f) for f in t.fixed)
    reach = np.zeros(REACH_LIMIT + 1, bool)
    reach[0] = True
    for m in sorted(set(mult)):  # closure under adding m: shifts by m, 2m, 4m, ...
        step = m
        while step <= REACH_LIMIT:
            reach[step:] |= reach[:-step].copy()
            step *= 2
    all_fixed = sum(1 << w for w, f in enumerate(fixed) if f)
    return mult, fixed, reach, all_fixed


def feasible(sg: int, remaining: tuple[int, ...], min_wp: int = 0, avail: int | None = None) -> bool:
    """True if each element i can receive exactly remaining[i] more atoms.

    The first element may only use positions with index >= min_wp; `avail` is the bitmask
    of fixed positions still free (default: all).
    """
    _, _, reach, all_fixed = group_info(sg)
    if any(r < 0 or r > REACH_LIMIT or not reach[r] for r in remaining):
        return False
    return _search(sg, tuple(remaining), min_wp, all_fixed if avail is None else avail)


@lru_cache(maxsize=2_000_000)
def _search(sg: int, remaining: tuple[int, ...], min_wp: int, avail: int) -> bool:
    if not remaining:
        return True
    r0 = remaining[0]
    if r0 == 0:
        return _search(sg, remaining[1:], 0, avail)
    mult, fixed, _, _ = group_info(sg)
    rest = remaining[1:]
    for w in range(len(mult) - 1, min_wp - 1, -1):  # large multiplicities first: quick successes
        m = mult[w]
        if m > r0:
            continue
        if fixed[w]:
            if avail >> w & 1 and _search(sg, (r0 - m,) + rest, w + 1, avail & ~(1 << w)):
                return True
        elif _search(sg, (r0 - m,) + rest, w, avail):
            return True
    return False


def next_state(sg: int, w: int, avail: int) -> tuple[int, int]:
    """(min_wp, avail) after placing one orbit on WP w."""
    _, fixed, _, _ = group_info(sg)
    return (w + 1, avail & ~(1 << w)) if fixed[w] else (w, avail)
