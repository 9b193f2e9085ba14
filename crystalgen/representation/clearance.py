"""Distance guard for sampling: keep each new Wyckoff orbit clear of the atoms already placed.

Most generated crystals that fail validation fail one check only: two atoms closer than
0.5 Å (the CDVAE structural-validity rule). The lattice is written before the sites, so
when the sampler draws the *last* free coordinate of a site it knows the whole orbit that
value produces. :class:`Clearance` measures, for candidate values of that coordinate, the
shortest distance from the new orbit to the atoms already placed and within the orbit
itself; the sampler keeps the first candidate that stays at least ``min_distance`` away
(the farthest one when none does). Candidates are independent draws from the model's own
value distribution, so the guard is rejection sampling from that distribution truncated
to the clear region; it never moves an atom the model did not propose.

Sites with no free coordinate, and crystals whose lattice is too small for the planned
sites, are left as drawn: the validators still judge every structure.

Numpy only, like the rest of the representation.
"""

from __future__ import annotations

import itertools

import numpy as np

from crystalgen.representation.sequence import derived_coordinate, length_from_value
from crystalgen.representation.tables import SPACE_GROUPS, lattice_matrix, lattice_params_constrained

#: the validators' threshold (validators.distance.MIN_DISTANCE_A, CDVAE's rule), in Å
MIN_DISTANCE_A = 0.5
#: candidates drawn for a guarded coordinate (with per-sequence streams the first one is
#: exactly the unguarded draw, so the guard changes only the crystals it rescues)
CANDIDATES = 8

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.float64)  # (27, 3)


def guarded_coordinate(grammar) -> bool:
    """Is the grammar's next position the last free coordinate of a site?"""
    if grammar.lattice is None or grammar.site >= len(grammar.sites):
        return False
    i = len(grammar.values)
    free = SPACE_GROUPS[grammar.sg].free[grammar.sites[grammar.site][1]]
    return bool(free[i]) and not free[i + 1:].any()


class Clearance:
    """The placed atoms of one sequence (fractional) and the test for a new orbit."""

    __slots__ = ("matrix", "shifts", "frac", "_sites")

    def __init__(self) -> None:
        self.matrix: np.ndarray | None = None
        self.shifts: np.ndarray | None = None  # the 27 neighbouring cells' offsets, Å
        self.frac = np.zeros((0, 3))
        self._sites = 0

    def _catch_up(self, grammar) -> bool:
        """Bring the lattice and the placed atoms up to date with the grammar; False when
        the lattice is degenerate (no geometry to guard: validation will reject it)."""
        table = SPACE_GROUPS[grammar.sg]
        if self.matrix is None:
            n_atoms = sum(int(table.multiplicity[w]) for _, w in grammar.sites)
            lat = grammar.lattice
            try:
                params = [length_from_value(v, n_atoms) for v in lat[:3]] + [v * 180.0 for v in lat[3:]]
                self.matrix = lattice_matrix(lattice_params_constrained(table.system, params))
            except (OverflowError, ValueError):  # exp overflow, impossible angles
                self.matrix = np.full((3, 3), np.nan)
            volume = abs(np.linalg.det(self.matrix)) if np.isfinite(self.matrix).all() else 0.0
            self.shifts = _IMAGES @ self.matrix if volume > 1e-6 else None
        if self.shifts is None:
            return False
        while self._sites < len(grammar.placed):
            w = grammar.sites[self._sites][1]
            orbit = table.orbit(w, table.derive_xyz(w, grammar.placed[self._sites]))
            self.frac = np.concatenate([self.frac, orbit])
            self._sites += 1
        return True

    def first_clear(self, grammar, candidates, min_distance: float) -> int:
        """Index of the first candidate value of the next (last free) coordinate whose orbit
        stays ``min_distance`` (Å) from the placed atoms and from its own other points;
        the farthest candidate when none does (the first on a degenerate lattice)."""
        if not self._catch_up(grammar):
            return 0
        best, best_k = -1.0, 0
        for k, v in enumerate(candidates):
            d = self.nearest(grammar, float(v))
            if d >= min_distance:
                return k
            if d > best:
                best, best_k = d, k
        return best_k

    def nearest(self, grammar, value: float) -> float:
        """Shortest distance (Å) from the orbit that ``value`` as the next (last free)
        coordinate produces to the placed atoms and to the orbit's other points (inf on a
        degenerate lattice)."""
        if not self._catch_up(grammar):
            return float("inf")
        table = SPACE_GROUPS[grammar.sg]
        w = grammar.sites[grammar.site][1]
        xyz = list(grammar.values) + [value % 1.0]
        for j in range(len(xyz), 3):
            xyz.append(derived_coordinate(grammar.sg, w, j, xyz))
        ops = table.orbit_ops[w]  # (m, 3, 4)
        orbit = np.mod(ops[:, :, :3] @ table.derive_xyz(w, xyz) + ops[:, :, 3], 1.0)
        m = len(orbit)
        # differences to the placed atoms and to the orbit's own points (the point itself
        # excluded), each at its fractional minimum image and the 26 cells around it
        diff = orbit[:, None, :] - np.concatenate([self.frac, orbit])[None, :, :]  # (m, n + m, 3)
        diff -= np.round(diff)
        sq = (((diff @ self.matrix)[:, :, None, :] + self.shifts) ** 2).sum(-1).min(-1)  # (m, n + m)
        sq[:, len(self.frac):][np.diag_indices(m)] = np.inf
        return float(np.sqrt(sq.min())) if sq.size else float("inf")
