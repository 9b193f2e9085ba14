"""Plan agreement: did a crystal come out as its reasoning plan said? The one definition,
used by the trace and by evaluation."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pymatgen.core import Composition, Element, Structure

_AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


@lru_cache(maxsize=None)
def _atomic_mass(symbol: str) -> float:
    return float(Element(symbol).atomic_mass)


@lru_cache(maxsize=65536)
def _reduced_formula(formula: str) -> str:
    return Composition(formula).reduced_formula


def structure_density(structure: Structure) -> float | None:
    """Density in g/cm^3 (the same number as ``structure.density``, without pymatgen's unit
    objects); None for a degenerate cell (zero volume), which the lattice check fails."""
    volume = structure.volume
    if not volume > 1e-6:
        return None
    mass = sum(_atomic_mass(site.specie.symbol) for site in structure)
    return mass * _AMU_PER_A3_TO_G_PER_CM3 / volume


def plan_agreement(plan: dict[str, Any], structure: Structure, found_spacegroup: int | None) -> dict[str, bool]:
    """Does the structure agree with its plan? ``plan``: a trace's plan (its
    ``spacegroup``, ``formula`` and ``density`` range in g/cm^3); ``found_spacegroup``:
    the space group the validators found. One verdict per aspect: ``spacegroup``,
    ``composition`` (same reduced formula), ``density`` (inside the planned range)."""
    density = structure_density(structure)
    lo, hi = plan["density"]
    return {
        "spacegroup": found_spacegroup == plan["spacegroup"],
        "composition": _reduced_formula(structure.formula) == _reduced_formula(plan["formula"]),
        "density": density is not None and lo <= density <= hi,
    }
