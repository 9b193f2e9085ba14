"""Distance guard for sampling: keep each new Wyckoff orbit clear of the atoms already placed.

The lattice is written before the sites, so when the sampler draws the *last* free
coordinate of a site (``Grammar.last_free_coordinate_next``) it knows the whole orbit
that value produces. :class:`Clearance` measures, for candidate values of that
coordinate, the distances from the new orbit to the atoms already placed and within the
orbit itself; the sampler keeps the first candidate that keeps every pair at least its
minimum distance apart (the farthest one when none does). Candidates are independent
draws from the model's own value distribution, so the guard is rejection sampling from
that distribution truncated to the clear region; it never moves an atom the model did
not propose.

Distances come from :func:`~crystalgen.validators.distance.periodic_sq_distances`, the
validators' (crystalgen's one periodic-distance computation), on the lattice as sampled.
The minimum distance is one value in Å for every pair (the validators' threshold by
default, :data:`crystalgen.validators.distance.MIN_DISTANCE_A`), or a matrix indexed by
atomic numbers, for a per-element-pair rule such as a fraction of the covalent radii.

Sites with no free coordinate, and crystals whose lattice is too small for the planned
sites, are left as drawn: the validators still judge every structure.
"""

from __future__ import annotations

import numpy as np

from crystalgen.representation.grammar import PartialCrystal
from crystalgen.representation.sequence import derived_coordinate, length_from_value
from crystalgen.representation.tables import SPACE_GROUPS, lattice_matrix, lattice_params_constrained
from crystalgen.representation.vocab import ELEMENTS
from crystalgen.validators.distance import MIN_DISTANCE_A, image_shifts, periodic_sq_distances

__all__ = ["CANDIDATES", "MIN_DISTANCE_A", "Clearance", "MinDistance"]

#: candidates drawn for a guarded coordinate (with per-sequence streams the first one is
#: exactly the unguarded draw, so the guard changes only the crystals it rescues)
CANDIDATES = 8

#: one distance (Å) for every pair, or a matrix of them indexed by atomic numbers
MinDistance = float | np.ndarray

_Z = {el: z for z, el in enumerate(ELEMENTS, start=1)}


class Clearance:
    """The placed atoms of one sequence (fractional) and the test for a new orbit."""

    __slots__ = ("matrix", "shifts", "frac", "numbers", "_sites")

    def __init__(self) -> None:
        self.matrix: np.ndarray | None = None
        self.shifts: np.ndarray | None = None  # the 27 neighbouring cells' offsets, Å
        self.frac = np.zeros((0, 3))
        self.numbers = np.zeros(0, np.int64)  # atomic numbers of the placed atoms
        self._sites = 0

    def _catch_up(self, crystal: PartialCrystal) -> bool:
        """Bring the lattice and the placed atoms up to date with the crystal; False when
        the lattice is degenerate (no geometry to guard: validation will reject it)."""
        table = SPACE_GROUPS[crystal.spacegroup]
        if self.matrix is None:
            n_atoms = sum(int(table.multiplicity[w]) for _, w in crystal.sites)
            lat = crystal.lattice
            try:
                params = [length_from_value(v, n_atoms) for v in lat[:3]] + [v * 180.0 for v in lat[3:]]
                self.matrix = lattice_matrix(lattice_params_constrained(table.system, params))
            except (OverflowError, ValueError):  # exp overflow, impossible angles
                self.matrix = np.full((3, 3), np.nan)
            volume = abs(np.linalg.det(self.matrix)) if np.isfinite(self.matrix).all() else 0.0
            self.shifts = image_shifts(self.matrix) if volume > 1e-6 else None
        if self.shifts is None:
            return False
        while self._sites < len(crystal.placed):
            el, w = crystal.sites[self._sites]
            orbit = table.orbit(w, table.derive_xyz(w, crystal.placed[self._sites]))
            self.frac = np.concatenate([self.frac, orbit])
            self.numbers = np.concatenate([self.numbers, np.full(len(orbit), _Z[el])])
            self._sites += 1
        return True

    def first_clear(self, crystal: PartialCrystal, candidates, min_distance: MinDistance) -> int:
        """Index of the first candidate value of the next (last free) coordinate whose orbit
        keeps every pair at least ``min_distance`` apart (from the placed atoms and within
        itself); the farthest candidate when none does (the first on a degenerate lattice)."""
        if not self._catch_up(crystal):
            return 0
        per_pair = isinstance(min_distance, np.ndarray)
        best, best_k = -1.0, 0
        for k, v in enumerate(candidates):
            if per_pair:
                d = self.margin(crystal, float(v), min_distance)
                clear = d >= 1.0
            else:
                d = self.nearest(crystal, float(v))
                clear = d >= min_distance
            if clear:
                return k
            if d > best:
                best, best_k = d, k
        return best_k

    def nearest(self, crystal: PartialCrystal, value: float) -> float:
        """Shortest distance (Å) from the orbit that ``value`` as the next (last free)
        coordinate produces to the placed atoms and to the orbit's other points (inf on a
        degenerate lattice)."""
        sq = self._squared(crystal, value)
        return float(np.sqrt(sq.min())) if sq is not None and sq.size else float("inf")

    def margin(self, crystal: PartialCrystal, value: float, min_distance: np.ndarray) -> float:
        """Smallest distance / minimum distance over the new orbit's pairs (>= 1: clear)."""
        sq = self._squared(crystal, value)
        if sq is None or not sq.size:
            return float("inf")
        new_z = _Z[crystal.sites[crystal.site_index][0]]
        others = np.concatenate([self.numbers, np.full(len(sq), new_z)])
        limit = np.asarray(min_distance, np.float64)[new_z, others]  # (n + m,)
        return float((np.sqrt(sq) / limit[None, :]).min())

    def _squared(self, crystal: PartialCrystal, value: float) -> np.ndarray | None:
        """(m, n + m) squared distances from the new orbit's m points to the n placed atoms
        and to the orbit's own points (an atom to itself: inf); None on a degenerate lattice."""
        if not self._catch_up(crystal):
            return None
        table = SPACE_GROUPS[crystal.spacegroup]
        w = crystal.sites[crystal.site_index][1]
        xyz = list(crystal.current) + [value % 1.0]
        for j in range(len(xyz), 3):
            xyz.append(derived_coordinate(crystal.spacegroup, w, j, xyz))
        ops = table.orbit_ops[w]  # (m, 3, 4)
        orbit = np.mod(ops[:, :, :3] @ table.derive_xyz(w, xyz) + ops[:, :, 3], 1.0)
        m = len(orbit)
        sq = periodic_sq_distances(orbit, np.concatenate([self.frac, orbit]), self.matrix, self.shifts)
        sq[:, len(self.frac):][np.diag_indices(m)] = np.inf
        return sq
