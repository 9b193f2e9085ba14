"""Equivalent writings of one Wyckoff crystal, the training augmentation. Numpy only.

A crystal has several Wyckoff forms, all legal sequences of the same structure, and a model
that samples may write any of them; training on one arbitrary form per structure teaches the
coordinate head a single target where several are right. Three freedoms combine:

- the Wyckoff setting: a coset representative of the group's Euclidean normaliser that keeps
  the lattice (origin shift, inversion, axis swap; ``wyckoff_sets.npz``) maps the crystal onto
  itself with Wyckoff letters permuted (NaCl: Na on 4a and Cl on 4b, or the reverse);
- the representative point of each orbit: any point of the orbit that has the Wyckoff
  position's representative form (x and -x on (x, 0, 0), ...);
- the order of orbits of one element on one Wyckoff letter, which the grammar leaves free.
"""
from __future__ import annotations

import math

import numpy as np

from crystalgen.representation.build_sets import SETS_PATH
from crystalgen.representation.tables import SPACE_GROUPS, SpaceGroupTable, element_order_key
from crystalgen.representation.wyckoff import WyckoffCrystal, WyckoffSite


def _load_sets() -> dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    data = np.load(SETS_PATH)
    off = data["sg_offset"]
    return {
        sg: [(data["rotation"][i].astype(np.float64), data["translation"][i], data["wp_map"][i])
             for i in range(off[sg], off[sg + 1])]
        for sg in range(1, 231)
    }


#: per space group: (rotation, translation, Wyckoff index map) of each lattice-keeping normaliser coset, identity first
SETTINGS = _load_sets()


def representatives(table: SpaceGroupTable, w: int, pos) -> np.ndarray:
    """Every distinct point (k, 3) of the orbit through ``pos`` that has WP ``w``'s representative form."""
    ops = table.general_ops
    points = np.mod(ops[:, :, :3] @ np.asarray(pos, np.float64) + ops[:, :, 3], 1.0)
    rep = table.orbit_ops[w][0]
    derived = np.mod(points @ rep[:, :3].T + rep[:, 3], 1.0)
    gap = derived - points
    keep = derived[np.abs(gap - np.round(gap)).max(axis=1) < 1e-4]
    _, first = np.unique(np.round(keep, 5) % 1.0, axis=0, return_index=True)
    return keep[np.sort(first)]


def _key(crystal: WyckoffCrystal) -> tuple:
    return tuple((s.element, s.letter, tuple(np.round(np.mod(s.xyz, 1.0), 4) % 1.0)) for s in crystal.sites)


class EquivalentForms:
    """The equivalent Wyckoff forms of one crystal, drawn at random without repeats."""

    def __init__(self, crystal: WyckoffCrystal) -> None:
        self.crystal = crystal.canonical()
        self.table = SPACE_GROUPS[crystal.spacegroup]
        self._options: dict[int, list[tuple[str, np.ndarray]]] = {}

    def options(self, setting: int) -> list[tuple[str, np.ndarray]]:
        """Per site, its letter and candidate representative points under normaliser coset ``setting``."""
        if setting not in self._options:
            rot, shift, wp_map = SETTINGS[self.crystal.spacegroup][setting]
            out = []
            for s in self.crystal.sites:
                w = int(wp_map[self.table.index(s.letter)])
                moved = np.mod(rot @ self.table.derive_xyz(self.table.index(s.letter), s.xyz) + shift, 1.0)
                out.append((self.table.letters[w], representatives(self.table, w, moved)))
            self._options[setting] = out
        return self._options[setting]

    def count_bound(self) -> int:
        """An upper bound on the number of distinct forms (settings x representatives x orders)."""
        total = 0
        for setting in range(len(SETTINGS[self.crystal.spacegroup])):
            n, groups = 1, {}
            for (letter, points), site in zip(self.options(setting), self.crystal.sites):
                n *= int(len(points))
                groups[(site.element, letter)] = groups.get((site.element, letter), 0) + 1
            for k in groups.values():
                n *= math.factorial(k)
            total += n
        return total

    def draw(self, rng: np.random.Generator) -> WyckoffCrystal:
        """One form: a random setting, representative per orbit, and order of tied orbits."""
        setting = int(rng.integers(len(SETTINGS[self.crystal.spacegroup])))
        sites = [
            WyckoffSite(site.element, letter, site.multiplicity, tuple(points[rng.integers(len(points))]))
            for (letter, points), site in zip(self.options(setting), self.crystal.sites)
        ]
        ties = rng.random(len(sites))
        order = sorted(range(len(sites)), key=lambda i: (element_order_key(sites[i].element),
                                                          self.table.index(sites[i].letter), ties[i]))
        return WyckoffCrystal(self.crystal.spacegroup, self.crystal.lattice, [sites[i] for i in order])

    def sample(self, max_forms: int, rng: np.random.Generator, tries_per_form: int = 4) -> list[WyckoffCrystal]:
        """Up to ``max_forms`` distinct forms, the canonical one first (sites in the order to keep)."""
        forms, seen = [self.crystal], {_key(self.crystal)}
        for _ in range(tries_per_form * max_forms):
            if len(forms) >= max_forms:
                break
            form = self.draw(rng)
            key = _key(form)
            if key not in seen:
                seen.add(key)
                forms.append(form)
        return forms
