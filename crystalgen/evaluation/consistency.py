"""Plan-vs-result consistency: did the crystal come out as its reasoning trace planned?

A model that plans (space group, formula, density) before writing coordinates should
produce crystals that agree with the plan; the fraction that do is a check on the
trace's honesty. Generators without traces (PyXtal) are simply not scored.
"""

from __future__ import annotations

from typing import Any

from pymatgen.core import Composition, Structure

# A planned density is a coarse target (the plan stores a volume-per-atom bin), so a
# crystal within 15% of it is counted as consistent.
DENSITY_RTOL = 0.15


def plan_consistency(
    trace: dict[str, Any] | None, structure: Structure, spacegroup: int | None
) -> dict[str, bool] | None:
    """{aspect: agrees} for each planned aspect; None when the trace has no plan.

    A trace may carry its own precomputed `consistency` dict, which is used as is.
    """
    if not trace:
        return None
    if isinstance(trace.get("consistency"), dict):
        return {str(k): bool(v) for k, v in trace["consistency"].items() if v is not None}
    plan = trace.get("plan")
    if not isinstance(plan, dict):
        return None
    out: dict[str, bool] = {}
    if plan.get("spacegroup") is not None and spacegroup is not None:
        out["spacegroup"] = int(plan["spacegroup"]) == int(spacegroup)
    if plan.get("formula"):
        try:
            planned = Composition(plan["formula"]).reduced_formula
            out["formula"] = planned == structure.composition.reduced_formula
        except Exception:
            out["formula"] = False
    if plan.get("density"):
        planned_density = float(plan["density"])
        out["density"] = structure.volume > 0 and (
            abs(structure.density - planned_density) <= DENSITY_RTOL * planned_density)
    return out or None


def consistency_rates(per_crystal: list[dict[str, bool] | None]) -> dict[str, float] | None:
    """Fraction consistent per aspect, over the crystals whose trace planned it."""
    totals: dict[str, list[bool]] = {}
    for entry in per_crystal:
        for aspect, ok in (entry or {}).items():
            totals.setdefault(aspect, []).append(ok)
    if not totals:
        return None
    rates = {aspect: sum(v) / len(v) for aspect, v in totals.items()}
    rates["all"] = sum(all(e.values()) for e in per_crystal if e) / sum(1 for e in per_crystal if e)
    return rates
