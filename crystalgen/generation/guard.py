"""Distance guard for sampling: keep every Wyckoff orbit clear of the other atoms while it is written.

The lattice is written before the sites, so every coordinate a site's orbit depends on
is drawn knowing the cell, the atoms already placed and the orbits on fixed Wyckoff
positions (no free coordinate: where they go is known from the plan and the lattice
alone, before they are written). :class:`Clearance` tests candidate values of a site's
next free coordinate against all of them and the orbit's own other points, with the
validators' physical rule as the minimum distance per pair:

- the *last* free coordinate fixes the orbit, and the value is clear when every pair
  keeps its minimum distance;
- an earlier free coordinate is clear when some completion of the coordinates after it
  (``PROBES`` fixed quasi-random points) is, so the sampler does not write a value that
  leaves the site nowhere to go.

The sampler keeps the first of ``CANDIDATES`` draws from the model's own value
distribution that is clear, else draws from that distribution restricted to the clear
values of a ``GRID``-point scan of the coordinate: rejection sampling from the model's
distribution truncated to the clear region, never an atom the model gives no weight.
A value is preferred (``ROOMY``) when, besides, every free site still to be written keeps
a clear probe position, so one site does not take the room a later one needs.
:func:`lattice_room` is the test of what only the lattice decides (the fixed-position
orbits apart, room for each free site among them), which the sampler applies with the
volume guard to the last free lattice length.

Distances come from :func:`~crystalgen.validators.distance.periodic_sq_distances`, the
validators' (crystalgen's one periodic-distance computation), on the lattice as sampled.
The minimum distance is one value in Å for every pair (the validators' threshold by
default, :data:`crystalgen.validators.distance.MIN_DISTANCE_A`), or a matrix indexed by
atomic numbers, for a per-element-pair rule such as a fraction of the covalent radii.
Crystals whose lattice is degenerate are left as drawn: the validators still judge every structure.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from crystalgen.representation.grammar import PartialCrystal
from crystalgen.representation.sequence import derived_coordinate, length_from_value
from crystalgen.representation.tables import SPACE_GROUPS, lattice_matrix, lattice_params_constrained
from crystalgen.representation.vocab import ELEMENTS
from crystalgen.validators.distance import MIN_DISTANCE_A, image_shifts, periodic_sq_distances

__all__ = ["BLOCKED", "CANDIDATES", "CLEAR", "GRID", "MIN_DISTANCE_A", "PROBES", "ROOMY", "Clearance", "MinDistance",
           "floor_distance", "lattice_room"]

#: candidates drawn for a guarded value (with per-sequence streams the first one is
#: exactly the unguarded draw, so the guard changes only the crystals it rescues)
CANDIDATES = 8
#: values of a coordinate scanned when no candidate is clear
GRID = 64
#: positions tried for the free coordinates still to come (of the site in progress, or of a later site)
PROBES = 16

#: one distance (Å) for every pair, or a matrix of them indexed by atomic numbers
MinDistance = float | np.ndarray

#: how clear a value is: its orbit too close to an atom; clear; clear and every later
#: free site keeps some clear position
BLOCKED, CLEAR, ROOMY = 0, 1, 2

_Z = {el: z for z, el in enumerate(ELEMENTS, start=1)}
#: a 3-d low-discrepancy (R3) sequence: probe values of up to three free coordinates
_PHI3 = 1.2207440846057596
_PROBE_POINTS = np.mod(0.5 + np.outer(np.arange(1, PROBES + 1), [_PHI3 ** -1, _PHI3 ** -2, _PHI3 ** -3]), 1.0)


def floor_distance(min_distance: MinDistance) -> float:
    """The flat part of the guard's rule (Å): the distance itself, or the smallest entry of a
    per-pair matrix (``pair_limits``' floor, where the light pairs such as H-H sit). When no
    value of a coordinate clears the per-pair rule, the sampler still keeps every pair this
    far apart if it can (the CDVAE structural rule at the default 0.5 Å)."""
    return float(np.min(min_distance))


def _limits(min_distance: MinDistance, z: int, others: np.ndarray) -> np.ndarray | float:
    if isinstance(min_distance, np.ndarray):
        return np.asarray(min_distance, np.float64)[z, others]
    return float(min_distance)


def _orbit_margin(orbit: np.ndarray, z: int, frac: np.ndarray, numbers: np.ndarray, matrix: np.ndarray,
                  shifts: np.ndarray, min_distance: MinDistance) -> float:
    """Smallest distance / minimum distance from ``orbit`` (atoms of element ``z``) to the
    atoms ``frac`` and to its own other points (>= 1: clear; inf: nothing to measure)."""
    m = len(orbit)
    sq = periodic_sq_distances(orbit, np.concatenate([frac, orbit]), matrix, shifts)
    sq[:, len(frac):][np.diag_indices(m)] = np.inf
    if not sq.size:
        return float("inf")
    limit = _limits(min_distance, z, np.concatenate([numbers, np.full(m, z)]))
    return float((np.sqrt(sq) / (limit[None, :] if isinstance(limit, np.ndarray) else limit)).min())


def _probe_orbits(spacegroup: int, w: int, head: list[float]) -> list[np.ndarray]:
    """Orbits of WP ``w`` whose representative starts with the coordinates ``head``, one
    per probe of the free coordinates after them (one orbit when none is left)."""
    return list(_site_probes(spacegroup, w)) if not head else _probes(spacegroup, w, head)


@lru_cache(maxsize=4096)
def _site_probes(spacegroup: int, w: int) -> tuple[np.ndarray, ...]:
    """The probe orbits of a whole site (no coordinate written yet)."""
    return tuple(_probes(spacegroup, w, []))


def _probes(spacegroup: int, w: int, head: list[float]) -> list[np.ndarray]:
    table = SPACE_GROUPS[spacegroup]
    free = table.free[w]
    later = [j for j in range(len(head), 3) if free[j]]
    ops = table.orbit_ops[w]
    out = []
    for probe in (_PROBE_POINTS if later else _PROBE_POINTS[:1]):
        xyz = list(head)
        for j in range(len(head), 3):
            xyz.append(float(probe[j]) if free[j] else derived_coordinate(spacegroup, w, j, xyz))
        out.append(np.mod(ops[:, :, :3] @ table.derive_xyz(w, xyz) + ops[:, :, 3], 1.0))
    return out


def _probe_margins(orbits: list[np.ndarray], z: int, frac: np.ndarray, numbers: np.ndarray, matrix: np.ndarray,
                   shifts: np.ndarray, min_distance: MinDistance) -> np.ndarray:
    """Per probe orbit (atoms of element ``z``, all of one multiplicity): its smallest
    distance / minimum distance to the atoms ``frac`` (inf when there are none)."""
    if not len(frac):
        return np.full(len(orbits), np.inf)
    sq = periodic_sq_distances(np.concatenate(orbits), frac, matrix, shifts)
    limit = _limits(min_distance, z, numbers)
    ratio = np.sqrt(sq) / (limit[None, :] if isinstance(limit, np.ndarray) else limit)
    return ratio.reshape(len(orbits), -1).min(axis=1)


def _has_room(spacegroup: int, sites: list[tuple[str, int]], later: list[int], frac: np.ndarray,
              numbers: np.ndarray, matrix: np.ndarray, shifts: np.ndarray, min_distance: MinDistance) -> bool:
    """Does every site of ``later`` (free sites still to be written) have a probe position
    clear of the atoms ``frac`` (each tested alone)?"""
    nothing, no_numbers = np.zeros((0, 3)), np.zeros(0, np.int64)
    for k in later:
        el, w = sites[k]
        probes = _site_probes(spacegroup, w)
        outer = _probe_margins(list(probes), _Z[el], frac, numbers, matrix, shifts, min_distance)
        if not any(d >= 1.0 and _orbit_margin(o, _Z[el], nothing, no_numbers, matrix, shifts, min_distance) >= 1.0
                   for o, d in zip(probes, outer)):
            return False
    return True


def _fixed_orbits(spacegroup: int, sites: list[tuple[str, int]]) -> list[np.ndarray | None]:
    """Per planned site: its orbit if it lies on a fixed Wyckoff position, else None."""
    table = SPACE_GROUPS[spacegroup]
    return [None if table.free[w].any() else table.orbit(w, table.derive_xyz(w, np.zeros(3))) for _, w in sites]


def _atoms(orbits: list[np.ndarray | None], sites: list[tuple[str, int]], skip: int = -1):
    picked = [(o, sites[i][0]) for i, o in enumerate(orbits) if i != skip and o is not None]
    if not picked:
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    return (np.concatenate([o for o, _ in picked]),
            np.concatenate([np.full(len(o), _Z[el]) for o, el in picked]))


def lattice_room(spacegroup: int, sites: list[tuple[str, int]], params, min_distance: MinDistance) -> bool:
    """On a lattice of ``params`` (a, b, c in Å, angles in degrees): are the plan's orbits
    on fixed Wyckoff positions clear of each other, and does every free site have a probe
    position clear of them? (True on a degenerate lattice: nothing to judge.) What only the
    lattice decides, so the sampler tests it on the last free lattice length."""
    try:
        matrix = lattice_matrix(params)
    except (OverflowError, ValueError):
        return True
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) <= 1e-6:
        return True
    shifts = image_shifts(matrix)
    orbits = _fixed_orbits(spacegroup, sites)
    frac, numbers = np.zeros((0, 3)), np.zeros(0, np.int64)
    for i, o in enumerate(orbits):
        if o is None:
            continue
        z = _Z[sites[i][0]]
        if _orbit_margin(o, z, frac, numbers, matrix, shifts, min_distance) < 1.0:
            return False
        frac, numbers = np.concatenate([frac, o]), np.concatenate([numbers, np.full(len(o), z)])
    free = [i for i, o in enumerate(orbits) if o is None]
    return _has_room(spacegroup, sites, free, frac, numbers, matrix, shifts, min_distance)


class Clearance:
    """One sequence's atoms that a new orbit must keep clear of (fractional), and the test."""

    __slots__ = ("matrix", "shifts", "orbits", "_sites", "_others", "_room")

    def __init__(self) -> None:
        self.matrix: np.ndarray | None = None
        self.shifts: np.ndarray | None = None  # the 27 neighbouring cells' offsets, Å
        self.orbits: list[np.ndarray | None] = []  # per planned site: its orbit once known
        self._sites = 0  # placed sites already in ``orbits``
        self._others: tuple[int, np.ndarray, np.ndarray] | None = None  # (site, frac, numbers)
        self._room: tuple[int, dict[int, list[np.ndarray]]] | None = None  # (site, later site -> clear probes)

    def _catch_up(self, crystal: PartialCrystal) -> bool:
        """Bring the lattice, the fixed-position orbits and the placed atoms up to date with
        the crystal; False when the lattice is degenerate (no geometry to guard)."""
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
            self.orbits = _fixed_orbits(crystal.spacegroup, crystal.sites)
        if self.shifts is None:
            return False
        while self._sites < len(crystal.placed):
            w = crystal.sites[self._sites][1]
            self.orbits[self._sites] = table.orbit(w, table.derive_xyz(w, crystal.placed[self._sites]))
            self._sites += 1
        return True

    def others(self, crystal: PartialCrystal) -> tuple[np.ndarray, np.ndarray]:
        """The atoms the site in progress must keep clear of: the placed ones and the
        fixed-position orbits planned after it (fractional positions, atomic numbers)."""
        k = crystal.site_index
        if self._others is None or self._others[0] != k:
            self._others = (k, *_atoms(self.orbits, crystal.sites, skip=k))
        return self._others[1], self._others[2]

    def _best_orbit(self, crystal: PartialCrystal, value: float,
                    min_distance: MinDistance) -> tuple[float, np.ndarray | None]:
        """The margin (smallest distance / minimum distance over the new orbit's pairs) of
        ``value`` as the site's next free coordinate, and the orbit it was measured on (the
        best probe's for an earlier free coordinate); (inf, None) on a degenerate lattice."""
        if not self._catch_up(crystal):
            return float("inf"), None
        el, w = crystal.sites[crystal.site_index]
        frac, numbers = self.others(crystal)
        orbits = list(_probe_orbits(crystal.spacegroup, w, list(crystal.current) + [value % 1.0]))
        outer = _probe_margins(orbits, _Z[el], frac, numbers, self.matrix, self.shifts, min_distance)
        best, orbit = -1.0, None
        for p in np.argsort(-outer, kind="stable"):
            if outer[p] <= best:
                break
            d = min(float(outer[p]), _orbit_margin(orbits[p], _Z[el], np.zeros((0, 3)), np.zeros(0, np.int64),
                                                   self.matrix, self.shifts, min_distance))
            if d > best:
                best, orbit = d, orbits[p]
            if best >= 1.0:
                break
        return best, orbit

    def _room_probes(self, crystal: PartialCrystal, min_distance: MinDistance) -> dict[int, list[np.ndarray]]:
        """Per free site after the one in progress: its probe orbits clear of the other
        atoms (cached while the same site is in progress; each orbit's own spacing is the
        lattice's matter, :func:`lattice_room`)."""
        k = crystal.site_index
        if self._room is None or self._room[0] != k:
            frac, numbers = self.others(crystal)
            room = {}
            for i in range(k + 1, len(crystal.sites)):
                if self.orbits[i] is not None:
                    continue
                el, w = crystal.sites[i]
                probes = list(_probe_orbits(crystal.spacegroup, w, []))
                outer = _probe_margins(probes, _Z[el], frac, numbers, self.matrix, self.shifts, min_distance)
                room[i] = [o for o, d in zip(probes, outer) if d >= 1.0]
            self._room = (k, room)
        return self._room[1]

    def _status(self, crystal: PartialCrystal, value: float, min_distance: MinDistance) -> tuple[int, float]:
        """(BLOCKED / CLEAR / ROOMY, margin) of ``value`` as the site's next free coordinate:
        ROOMY when clear and, for the last free coordinate, every later free site still has
        a probe position clear of the other atoms and of this orbit."""
        best, orbit = self._best_orbit(crystal, value, min_distance)
        if best < 1.0:
            return BLOCKED, best
        el, w = crystal.sites[crystal.site_index]
        if orbit is None or SPACE_GROUPS[crystal.spacegroup].free[w][len(crystal.current) + 1:].any():
            return ROOMY, best
        numbers = np.full(len(orbit), _Z[el])
        for i, probes in self._room_probes(crystal, min_distance).items():
            if not probes or (_probe_margins(probes, _Z[crystal.sites[i][0]], orbit, numbers, self.matrix, self.shifts,
                                             min_distance) < 1.0).all():
                return CLEAR, best
        return ROOMY, best

    def pick(self, crystal: PartialCrystal, values, min_distance: MinDistance) -> tuple[int, int]:
        """(index, status) of the first value of the site's next free coordinate with the
        best status (the search stops at the first ROOMY one); when every value is BLOCKED,
        the one with the largest margin."""
        best_k, best_s, best_m = 0, -1, -np.inf
        for k, v in enumerate(values):
            status, margin = self._status(crystal, float(v), min_distance)
            if status > best_s or (status == best_s == BLOCKED and margin > best_m):
                best_k, best_s, best_m = k, status, margin
            if status == ROOMY:
                break
        return best_k, best_s

    def margin(self, crystal: PartialCrystal, value: float, min_distance: MinDistance) -> float:
        """The margin of ``value`` as the site's next free coordinate (>= 1: clear; the best
        probe's for an earlier free coordinate; inf on a degenerate lattice)."""
        return self._best_orbit(crystal, value, min_distance)[0]

    def nearest(self, crystal: PartialCrystal, value: float) -> float:
        """Shortest distance (Å) from the orbit that ``value`` as the site's last free
        coordinate produces to the other atoms and to the orbit's other points."""
        return self.margin(crystal, value, 1.0)

    def first_clear(self, crystal: PartialCrystal, candidates, min_distance: MinDistance) -> int:
        """Index of the first clear candidate of the site's next free coordinate; the one
        with the largest margin when none is (the first on a degenerate lattice)."""
        best, best_k = -1.0, 0
        for k, v in enumerate(candidates):
            d = self.margin(crystal, float(v), min_distance)
            if d >= 1.0:
                return k
            if d > best:
                best, best_k = d, k
        return best_k
