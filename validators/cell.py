"""The arrays every check reads, extracted once per structure.

Reading `structure.atomic_numbers` or `structure.composition` walks all sites
each time; `validate` runs five checks, so it extracts a `Cell` once and hands
it to each. Every check also accepts a plain pymatgen Structure.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pymatgen.core import Composition, Structure


class DisorderedError(ValueError):
    """The structure has partially occupied sites, which no check can assess."""


class Cell(NamedTuple):
    matrix: np.ndarray  # (3, 3) lattice vectors as rows, Å
    frac: np.ndarray  # (n, 3) fractional coordinates
    numbers: np.ndarray  # (n,) atomic numbers
    composition: Composition


def as_cell(structure: Structure | Cell) -> Cell:
    """A `Cell` view of `structure`; raises DisorderedError for partial occupancies."""
    if isinstance(structure, Cell):
        return structure
    try:
        numbers = np.array([site.specie.Z for site in structure], dtype=int)
    except AttributeError as exc:  # `.specie` is undefined on a partially occupied site
        raise DisorderedError("disordered structure (partial occupancies) cannot be validated") from exc
    return Cell(
        np.asarray(structure.lattice.matrix, dtype=float),
        np.asarray(structure.frac_coords, dtype=float),
        numbers,
        structure.composition,
    )
