"""Composition check: does the structure have the intended formula?"""

from __future__ import annotations

from pymatgen.core import Composition, Structure

from crystalgen.validators.cell import Cell, as_cell
from crystalgen.validators.result import CheckResult


def check_composition(structure: Structure | Cell, formula: str | None = None, exact: bool = False) -> CheckResult:
    """Compare with `formula` (reduced formulas, or exact atom counts when `exact`); N/A without a formula."""
    try:
        comp = as_cell(structure).composition
        if formula is None:
            return CheckResult(None, comp.formula.replace(" ", ""), {"applicable": False})
        target = Composition(formula)
        if exact:
            ok = comp.almost_equals(target, rtol=0.0, atol=1e-6)
            value = comp.formula.replace(" ", "")
        else:
            ok = comp.reduced_formula == target.reduced_formula
            value = comp.reduced_formula
    except Exception as exc:
        return CheckResult(False, None, {"error": f"{type(exc).__name__}: {exc}"})
    return CheckResult(bool(ok), value, {"intended": formula, "exact": exact})
