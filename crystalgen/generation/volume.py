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
the model's distribution truncated to its own plan, like the distance guard.
"""

from __future__ import annotations

import math

import numpy as np

from crystalgen.representation.grammar import Grammar
from crystalgen.representation.sequence import derived_lattice_value, length_from_value
from crystalgen.representation.tables import SPACE_GROUPS
from crystalgen.representation.vocab import vpa_range


def volume_per_atom(system: str, values: list[float], n_atoms: int) -> float:
    """Volume per atom (Å^3) of stored lattice values (six, or fewer: later free lengths
    absent, later free angles taken as 90°)."""
    vals = list(values)
    for i in range(len(vals), 6):
        d = derived_lattice_value(system, i, vals)
        vals.append(d if d is not None else 0.5)
    a, b, c = (length_from_value(v, n_atoms) for v in vals[:3])
    ca, cb, cg = (math.cos(math.pi * v) for v in vals[3:])
    root = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    return a * b * c * math.sqrt(max(root, 0.0)) / n_atoms


def pick_in_bin(grammar: Grammar, candidates: np.ndarray) -> int:
    """Index of the first candidate value of the next (last free) length whose cell volume
    per atom lies in the plan's bin; the closest one when none does."""
    lo, hi = vpa_range(grammar.vpa_bin)
    n_atoms = grammar.atoms_done
    system = SPACE_GROUPS[grammar.sg].system
    best, best_gap = 0, math.inf
    for k, value in enumerate(candidates.tolist()):
        vpa = volume_per_atom(system, grammar.values + [value], n_atoms)
        if lo <= vpa < hi:
            return k
        gap = math.log(lo / vpa) if vpa < lo else math.log(vpa / hi) if vpa > 0 else math.inf
        if gap < best_gap:
            best, best_gap = k, gap
    return best
