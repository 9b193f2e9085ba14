"""Loading test and training crystals for the harness (via `crystalgen.data.readers`).

Entries are listed unparsed first, so `--limit` parses only the chosen subset; the
subset is a seeded random sample (benchmark files such as MPTS-52 are time-ordered,
so "the first M" would be a biased slice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from crystalgen.parallel import parallel_map


@dataclass
class LoadedSet:
    """Parsed crystals of one file; `n_unparsable` entries were skipped."""

    path: str
    ids: list[str]
    structures: list[Structure]
    n_entries: int
    n_unparsable: int


def load_structures(path: str, limit: int | None = None, seed: int = 0, workers: int = 1) -> LoadedSet:
    """Crystals of `path` (all, or a seeded random `limit` of them, in file order)."""
    from crystalgen.data.readers import iter_raw, parse_entry

    entries = list(iter_raw(path))
    n_entries = len(entries)
    if limit is not None and limit < n_entries:
        chosen = np.sort(np.random.default_rng(seed).choice(n_entries, size=limit, replace=False))
        entries = [entries[int(i)] for i in chosen]
    records = parallel_map(parse_entry, entries, workers=workers, desc=f"read {path}", chunksize=32)
    good = [r for r in records if r.structure is not None]
    return LoadedSet(
        path=str(path),
        ids=[r.id for r in good],
        structures=[r.structure for r in good],
        n_entries=n_entries,
        n_unparsable=len(records) - len(good),
    )
