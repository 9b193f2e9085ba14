"""Volume guard: the cell's volume per atom lands in the bin the plan chose.

The plan states a volume-per-atom bin (``<vpa:b>``, bins about 12% wide in volume), and
the lattice head then draws each free length independently from its own mixture, so
the product a·b·c misses that narrow bin in about 30% of crystals (measured:
docs/evaluation.md, "Density"), mostly on the dense side. When the sampler draws the
*last* free length (``Grammar.last_free_length_next``) the other lengths and the
system's fixed angles are known, so for candidate values of it the volume per atom
follows (free angles, drawn afterwards, taken as 90°); the sampler keeps the first
candidate inside the planned bin, else the one closest to it (in log volume).
Candidates are independent draws from the model's own length distribution, so this is
the model's distribution truncated to its own plan, like the distance guard. With the
distance guard on, a cell must also leave the planned atoms room
(:func:`crystalgen.generation.guard.lattice_room`): candidates that do come first, and
when none does the sampler scans longer values of the length for one (the decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from crystalgen.representation.grammar import Grammar
from crystalgen.representation.sequence import derived_lattice_value, length_from_value
from crystalgen.representation.tables import SPACE_GROUPS
from crystalgen.representation.vocab import vpa_range


def lattice_params(system: str, values: list[float], n_atoms: int) -> tuple[float, ...]:
    """a, b, c (Å) and angles (degrees) of stored lattice values (six, or fewer: later
    derived values follow the crystal system, later free angles are taken as 90°)."""
    vals = list(values)
    for i in range(len(vals), 6):
        d = derived_lattice_value(system, i, vals)
        vals.append(d if d is not None else 0.5)
    return tuple(length_from_value(v, n_atoms) for v in vals[:3]) + tuple(180.0 * v for v in vals[3:])


def volume_per_atom(system: str, values: list[float], n_atoms: int) -> float:
    """Volume per atom (Å^3) of stored lattice values (six, or fewer: later free lengths
    absent, later free angles taken as 90°)."""
    a, b, c, *angles = lattice_params(system, values, n_atoms)
    ca, cb, cg = (math.cos(math.radians(x)) for x in angles)
    root = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    return a * b * c * math.sqrt(max(root, 0.0)) / n_atoms


def bin_gap(grammar: Grammar, value: float) -> float:
    """How far (in log volume) the cell with ``value`` as its last free length lies from
    the plan's volume-per-atom bin (0 inside)."""
    lo, hi = vpa_range(grammar.vpa_bin)
    vpa = volume_per_atom(SPACE_GROUPS[grammar.sg].system, grammar.values + [value], grammar.atoms_done)
    if lo <= vpa < hi:
        return 0.0
    return math.log(lo / vpa) if 0 < vpa < lo else math.log(vpa / hi) if vpa > 0 else math.inf


def pick_in_bin(grammar: Grammar, candidates: np.ndarray, prefer: Callable[[float], bool] | None = None) -> int:
    """Index of the first candidate value of the next (last free) length whose cell volume
    per atom lies in the plan's bin, else the one closest to it (in log volume). Given
    ``prefer`` (a condition the cell must meet, such as room for the planned atoms), the
    candidates that meet it come first, chosen the same way."""
    best, best_key = 0, (True, math.inf)
    for k, value in enumerate(candidates.tolist()):
        gap = bin_gap(grammar, value)
        if gap > best_key[1] and not best_key[0]:
            continue  # cannot beat the best one that meets the condition
        key = (prefer is not None and not prefer(value), gap)
        if key < best_key:
            best, best_key = k, key
            if key == (False, 0.0):
                break
    return best
