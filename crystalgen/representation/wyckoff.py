"""Wyckoff form of a crystal: space group, conventional lattice, symmetry-distinct sites.

`WyckoffCrystal.from_structure` uses pyxtal's `from_seed` (spglib symmetry search plus
pyxtal's Wyckoff tables, which give the conventional standard setting and a Wyckoff
letter per orbit directly; ~25 ms/structure). Everything else here (`to_arrays`,
`to_structure`'s geometry) uses only the shipped numpy table, so decoding generated
crystals never imports pyxtal.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from math import gcd

import numpy as np

from crystalgen.representation.tables import (
    SPACE_GROUPS,
    element_order_key,
    lattice_matrix,
    lattice_params_constrained,
)

#: Tolerances tried in turn by `from_structure` after the caller's own.
RETRY_TOLERANCES = (0.05, 0.1)


class WyckoffError(ValueError):
    """A structure could not be written in Wyckoff form."""


@dataclass
class WyckoffSite:
    element: str
    letter: str
    multiplicity: int
    xyz: tuple[float, float, float]  # representative position; fixed coordinates derived


@dataclass
class WyckoffCrystal:
    spacegroup: int
    lattice: tuple[float, ...]  # a, b, c Å, alpha, beta, gamma degrees; conventional standard cell
    sites: list[WyckoffSite] = field(default_factory=list)

    @property
    def num_atoms(self) -> int:
        """Atoms in the conventional cell."""
        return sum(s.multiplicity for s in self.sites)

    def counts(self) -> dict[str, int]:
        """Atoms per element in the conventional cell, in site order."""
        out: Counter[str] = Counter()
        for s in self.sites:
            out[s.element] += s.multiplicity
        return dict(out)

    def formula_units(self) -> int:
        """Z: formula units (of the reduced formula) in the conventional cell."""
        g = 0
        for n in self.counts().values():
            g = gcd(g, n)
        return g

    def canonical(self) -> "WyckoffCrystal":
        """Same crystal with sites in plan order: element order, then letter, then position."""
        table = SPACE_GROUPS[self.spacegroup]
        sites = sorted(
            self.sites,
            key=lambda s: (element_order_key(s.element), table.index(s.letter), tuple(round(v, 6) for v in s.xyz)),
        )
        return WyckoffCrystal(self.spacegroup, tuple(self.lattice), sites)

    def plan_ordered(self) -> "WyckoffCrystal":
        """Same crystal with sites in the order the grammar imposes (element, then letter);
        orbits of one element on one letter keep their given order, which the grammar leaves free."""
        table = SPACE_GROUPS[self.spacegroup]
        sites = sorted(self.sites, key=lambda s: (element_order_key(s.element), table.index(s.letter)))
        return WyckoffCrystal(self.spacegroup, tuple(self.lattice), sites)

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(lattice matrix [3,3] rows, fractional coords [n,3], species) of the conventional cell."""
        table = SPACE_GROUPS[self.spacegroup]
        coords, species = [], []
        for s in self.sites:
            w = table.index(s.letter)
            coords.append(table.orbit(w, table.derive_xyz(w, s.xyz)))
            species += [s.element] * len(coords[-1])
        frac = np.concatenate(coords) if coords else np.zeros((0, 3))
        return lattice_matrix(lattice_params_constrained(table.system, self.lattice)), frac, species

    def to_structure(self):
        """pymatgen Structure of the conventional cell with full orbits."""
        from pymatgen.core import Lattice, Structure

        matrix, frac, species = self.to_arrays()
        return Structure(Lattice(matrix), species, frac)

    @classmethod
    def from_structure(cls, structure, symprec: float = 0.01) -> "WyckoffCrystal":
        """Wyckoff form of a pymatgen Structure; retries looser tolerances, raises WyckoffError."""
        errors = []
        for tol in (symprec, *[t for t in RETRY_TOLERANCES if t > symprec]):
            try:
                return _from_structure(structure, tol)
            except Exception as exc:  # pyxtal raises many kinds of errors
                errors.append(f"tol={tol}: {type(exc).__name__}: {exc}")
        raise WyckoffError("; ".join(errors))


def representative(table, w: int, pos: np.ndarray) -> np.ndarray:
    """Move `pos` (a point of orbit w) to the representative form of WP w."""
    for op in table.general_ops:
        q = np.mod(op[:, :3] @ pos + op[:, 3], 1.0)
        d = table.derive_xyz(w, q) - q
        if np.abs(d - np.round(d)).max() < 1e-3:
            return table.derive_xyz(w, q)
    raise WyckoffError(f"position {pos} is not on Wyckoff position {table.letters[w]} of group {table.number}")


def _from_structure(structure, tol: float) -> WyckoffCrystal:
    from pyxtal import pyxtal

    xtal = pyxtal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xtal.from_seed(structure, tol=tol)
    sg = int(xtal.group.number)
    if xtal.group.hall_number != _standard_hall(sg):
        raise WyckoffError(f"non-standard setting (hall {xtal.group.hall_number}) for group {sg}")
    table = SPACE_GROUPS[sg]
    sites = []
    for site in xtal.atom_sites:
        w = table.index(site.wp.letter)
        xyz = representative(table, w, np.asarray(site.position, np.float64))
        sites.append(WyckoffSite(str(site.specie), table.letters[w], int(table.multiplicity[w]), tuple(map(float, xyz))))
    crystal = WyckoffCrystal(sg, tuple(float(v) for v in xtal.lattice.get_para(degree=True)), sites).canonical()
    # The conventional cell must hold a whole number of the structure's formula.
    want = structure.composition.reduced_composition
    got = crystal.counts()
    z = crystal.formula_units()
    if {el: n // z for el, n in got.items()} != {str(el): int(n) for el, n in want.items()}:
        raise WyckoffError(f"composition changed: {got} vs {want.formula}")
    return crystal


_HALL: dict[int, int] = {}


def _standard_hall(sg: int) -> int:
    if sg not in _HALL:
        from pyxtal.symmetry import Group

        _HALL[sg] = Group(sg).hall_number
    return _HALL[sg]
