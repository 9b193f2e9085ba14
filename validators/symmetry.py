"""Symmetry check: which space group does spglib find, and is it the intended one?"""

from __future__ import annotations

import warnings

import spglib
from pymatgen.core import Structure

from crystalgen.validators.cell import Cell, as_cell
from crystalgen.validators.result import CheckResult

SYMPRECS: tuple[float, float] = (0.1, 0.01)


def spacegroup_number(structure: Structure | Cell, symprec: float) -> int | None:
    """spglib's international space-group number, or None when spglib cannot analyse the cell."""
    try:
        cell = as_cell(structure)
        with warnings.catch_warnings():  # spglib warns about its old error handling when it finds nothing
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = spglib.get_symmetry_dataset((cell.matrix, cell.frac, cell.numbers), symprec=symprec)
    except Exception:
        return None
    return None if dataset is None else int(dataset.number)


def check_symmetry(structure: Structure | Cell, intended: int | None = None) -> CheckResult:
    """Pass if spglib can assign a space group and, when one is intended, it matches at either tolerance.

    The reported space group is the one at symprec 0.1 (the loose tolerance that
    generative-model papers use); `is_p1` flags structures with no symmetry at 0.1.
    """
    try:
        cell = as_cell(structure)
        loose, tight = (spacegroup_number(cell, p) for p in SYMPRECS)
    except Exception as exc:
        return CheckResult(False, None, {"error": f"{type(exc).__name__}: {exc}"})
    details = {"spacegroup_symprec_0.1": loose, "spacegroup_symprec_0.01": tight, "is_p1": loose == 1}
    if loose is None:
        return CheckResult(False, None, {**details, "error": "spglib found no space group"})
    if intended is not None:
        matches = intended in (loose, tight)
        details.update({"intended": intended, "matches_intended": matches})
        return CheckResult(matches, loose, details)
    return CheckResult(True, loose, details)
