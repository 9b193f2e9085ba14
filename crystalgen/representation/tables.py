"""Numpy view of the shipped Wyckoff table (no pyxtal/pymatgen at run time).

`SPACE_GROUPS[sg]` gives, for an international number 1..230, the crystal system,
the centring multiplier (conventional / primitive cell), and per Wyckoff position
(letters ascending, general position last) its multiplicity, which of x, y, z are
free, its representative operation and all operations of its orbit. Conventions are
pyxtal's: conventional standard cell, hexagonal axes for trigonal groups, b-unique
monoclinic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from crystalgen.representation.build_tables import LETTERS, SYSTEMS, TABLE_PATH

#: Lattice rule per crystal system and parameter (a, b, c, alpha, beta, gamma):
#: None = free, ("copy", k) = equal to parameter k, ("deg", v) = fixed angle in degrees.
_A90, _A120 = ("deg", 90.0), ("deg", 120.0)
LATTICE_RULES: dict[str, tuple] = {
    "triclinic": (None, None, None, None, None, None),
    "monoclinic": (None, None, None, _A90, None, _A90),
    "orthorhombic": (None, None, None, _A90, _A90, _A90),
    "tetragonal": (None, ("copy", 0), None, _A90, _A90, _A90),
    "trigonal": (None, ("copy", 0), None, _A90, _A90, _A120),
    "hexagonal": (None, ("copy", 0), None, _A90, _A90, _A120),
    "cubic": (None, ("copy", 0), ("copy", 0), _A90, _A90, _A90),
}


@dataclass(frozen=True)
class SpaceGroupTable:
    """Everything the representation needs to know about one space group."""

    number: int
    symbol: str
    system: str
    centring: int  # atoms in conventional cell / atoms in primitive cell
    letters: tuple[str, ...]  # ascending; general position last
    multiplicity: np.ndarray  # int[n_wp]
    free: np.ndarray  # bool[n_wp, 3]
    orbit_ops: tuple[np.ndarray, ...]  # per WP float[mult, 3, 4]; orbit_ops[w][0] is representative

    @property
    def fixed(self) -> np.ndarray:
        """True for positions with no free parameter (occupied at most once)."""
        return ~self.free.any(axis=1)

    @property
    def general_ops(self) -> np.ndarray:
        return self.orbit_ops[-1]

    def index(self, letter: str) -> int:
        """Index of a Wyckoff letter in this group (raises KeyError if absent)."""
        try:
            return self.letters.index(letter)
        except ValueError:
            raise KeyError(f"space group {self.number} has no Wyckoff position {letter!r}") from None

    def derive_xyz(self, w: int, xyz) -> np.ndarray:
        """Representative position of WP `w` from its free coordinates (others ignored)."""
        p = np.asarray(xyz, np.float64)
        op = self.orbit_ops[w][0]
        return np.mod(op[:, :3] @ p + op[:, 3], 1.0)

    def orbit(self, w: int, xyz) -> np.ndarray:
        """All `multiplicity[w]` fractional positions of the orbit through `xyz`."""
        ops = self.orbit_ops[w]
        return np.mod(ops[:, :, :3] @ np.asarray(xyz, np.float64) + ops[:, :, 3], 1.0)


def _load() -> tuple[dict[int, SpaceGroupTable], np.ndarray]:
    data = np.load(TABLE_PATH)
    groups = {}
    off, op_off, ops = data["sg_wp_offset"], data["wp_op_offset"], data["ops"]
    for sg in range(1, 231):
        ws = range(off[sg], off[sg + 1])
        groups[sg] = SpaceGroupTable(
            number=sg,
            symbol=str(data["sg_symbol"][sg]),
            system=SYSTEMS[int(data["sg_system"][sg])],
            centring=int(data["sg_centring"][sg]),
            letters=tuple(LETTERS[data["wp_letter"][w]] for w in ws),
            multiplicity=data["wp_mult"][off[sg]: off[sg + 1]].astype(np.int64),
            free=data["wp_free"][off[sg]: off[sg + 1]],
            orbit_ops=tuple(ops[op_off[w]: op_off[w + 1]] for w in ws),
        )
    return groups, data["electronegativity"]


SPACE_GROUPS, ELECTRONEGATIVITY = _load()


def lattice_params_constrained(system: str, params) -> tuple[float, ...]:
    """Apply the crystal-system rules (b = a, fixed angles, ...) to six parameters."""
    out = [float(v) for v in params]
    for i, rule in enumerate(LATTICE_RULES[system]):
        if rule is not None:
            out[i] = out[rule[1]] if rule[0] == "copy" else rule[1]
    return tuple(out)


def lattice_matrix(params) -> np.ndarray:
    """Row-vector lattice matrix from a, b, c (Å), alpha, beta, gamma (deg), pymatgen's convention."""
    a, b, c, alpha, beta, gamma = params
    al, be, ga = (math.radians(x) for x in (alpha, beta, gamma))
    val = (math.cos(al) * math.cos(be) - math.cos(ga)) / (math.sin(al) * math.sin(be))
    gamma_star = math.acos(max(-1.0, min(1.0, val)))
    return np.array(
        [
            [a * math.sin(be), 0.0, a * math.cos(be)],
            [-b * math.sin(al) * math.cos(gamma_star), b * math.sin(al) * math.sin(gamma_star), b * math.cos(al)],
            [0.0, 0.0, c],
        ]
    )


@lru_cache(maxsize=None)
def element_order_key(symbol: str) -> tuple[float, int]:
    """Canonical element order: Pauling electronegativity, then atomic number (pymatgen's formula order)."""
    from crystalgen.representation.vocab import ELEMENTS

    z = ELEMENTS.index(symbol) + 1
    return (float(ELECTRONEGATIVITY[z]), z)
