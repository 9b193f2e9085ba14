"""Keep the crystals being scored out of the analogue corpus.

An analogue corpus that holds a test crystal answers that query by lookup, so evaluation
removes (1) entries whose id is a test id and (2) entries that StructureMatcher matches to
a test crystal of the same reduced formula (the caller passes the benchmark's matcher
settings). The counts are returned so that the report says how many were removed.

StructureMatcher (primitive_cell=True, no supercells) only matches structures whose
Niggli-reduced primitive cells hold the same number of sites, so where one reduced formula
has many entries (Carbon-24: every entry is carbon) only entries of the test crystal's
primitive size are compared: the same verdicts, far fewer fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from crystalgen.analogues.index import AnalogueIndex, reduced_counts
from crystalgen.parallel import parallel_map


#: formula groups larger than this are narrowed to the test crystal's primitive size first
SIZE_FILTER_ABOVE = 16


@dataclass
class Exclusion:
    """How many corpus entries were removed, by id and by structure match (not counted twice),
    and how many test crystals had a matching corpus entry."""

    n_reference: int
    by_id: int
    by_match: int
    test_matched: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"n_reference": self.n_reference, "excluded_by_id": self.by_id, "excluded_by_match": self.by_match,
                "n_kept": self.n_reference - self.by_id - self.by_match, "test_with_match": self.test_matched}


def _matcher_size(structure: Structure) -> int:
    """Sites in the cell StructureMatcher compares: Niggli-reduced, then primitive."""
    try:
        return len(structure.get_reduced_structure(reduction_algo="niggli").get_primitive_structure())
    except Exception:  # degenerate cell: no size filter for it
        return -1


def _matches(task: tuple[Structure, list[tuple[int, Structure]], dict[str, Any]]) -> list[int]:
    truth, entries, kwargs = task
    matcher = StructureMatcher(**kwargs)
    hits = []
    for i, structure in entries:
        try:
            if matcher.fit(truth, structure):
                hits.append(i)
        except Exception:  # pymatgen occasionally fails on degenerate cells: not a match
            continue
    return hits


def exclude_test_crystals(
    index: AnalogueIndex, test_ids: Sequence[str], test_structures: Sequence[Structure],
    matcher_kwargs: dict[str, Any], workers: int = 1,
) -> tuple[AnalogueIndex, Exclusion]:
    """The index without the test crystals, and how many entries that removed."""
    drop = np.isin(np.array([str(v) for v in index.ids]), np.array([str(v) for v in test_ids]))
    by_id = int(drop.sum())
    by_formula: dict[tuple, list[int]] = {}
    for i in range(len(index)):
        by_formula.setdefault((index.elements[i], index.counts[i]), []).append(i)
    by_size = matcher_kwargs.get("primitive_cell", True) and not matcher_kwargs.get("attempt_supercell", False)
    sizes: dict[int, int] = {}

    def size(i: int) -> int:
        if i not in sizes:
            sizes[i] = _matcher_size(index.structure(i))
        return sizes[i]

    tasks = []
    for truth in test_structures:
        numbers, counts, _ = reduced_counts([site.specie.Z for site in truth])
        entries = [i for i in by_formula.get((numbers, counts), []) if not drop[i]]
        if by_size and len(entries) > SIZE_FILTER_ABOVE:
            n = _matcher_size(truth)
            entries = [i for i in entries if n < 0 or size(i) in (n, -1)]
        if entries:
            tasks.append((truth, [(i, index.structure(i)) for i in entries], dict(matcher_kwargs)))
    test_matched = 0
    for hits in parallel_map(_matches, tasks, workers=workers, desc="exclude test crystals", chunksize=8,
                             progress=False):
        drop[hits] = True
        test_matched += bool(hits)
    by_match = int(drop.sum()) - by_id
    return index.subset(~drop), Exclusion(len(index), by_id, by_match, test_matched)
