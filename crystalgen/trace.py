"""Reasoning traces: the model's own plan, rendered as numbered steps, and its verdict.

The plan is not a story written after the fact: it is the sequence of discrete tokens the
model predicted before any coordinate (crystal system, space group, Z, oxidation states,
Wyckoff site plan, volume-per-atom bin), and the structure was generated conditioned on
it. The trace shows those decisions, then what the validators found, including whether
the structure agrees with its own plan (space group, composition, density).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from pymatgen.core import Composition, Element, Structure

from crystalgen.consistency import plan_agreement, structure_density
from crystalgen.representation.sequence import Plan, PlanElement

_AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def spacegroup_symbol(number: int) -> str:
    """Short Hermann-Mauguin symbol of an international space-group number (``P2_1/c``)."""
    return _SYMBOLS().get(int(number), f"#{number}")


@lru_cache(maxsize=1)
def _SYMBOLS() -> dict[int, str]:
    """Number -> symbol of the standard setting, from spglib's table of the 530 Hall
    symbols (the first Hall number of each space group is its standard setting).
    Milliseconds, where pymatgen's SpaceGroup takes ~17 ms per group in a fresh process."""
    import spglib

    table: dict[int, str] = {}
    for hall in range(1, 531):
        sg = spglib.get_spacegroup_type(hall)
        table.setdefault(int(sg.number), str(sg.international_short))
    return table


def planned_formula(plan: Plan) -> Composition:
    """Composition of the conventional cell the plan describes."""
    return Composition({e.element: sum(e.multiplicities) for e in plan.elements})


def planned_density(plan: Plan) -> tuple[float, float]:
    """(low, high) density in g/cm^3 implied by the plan's volume-per-atom bin."""
    mass = planned_formula(plan).weight
    n = plan.num_atoms
    lo_v, hi_v = plan.vpa_range
    hi = mass * _AMU_PER_A3_TO_G_PER_CM3 / (lo_v * n) if lo_v > 0 else float("inf")
    lo = mass * _AMU_PER_A3_TO_G_PER_CM3 / (hi_v * n) if hi_v != float("inf") else 0.0
    return float(lo), float(hi)


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (JSON-serialisable); a fresh copy each call."""
    return copy.deepcopy(_plan_parts(_plan_key(plan))[0])


def _plan_key(plan: Plan) -> tuple:
    return (plan.crystal_system, plan.spacegroup, plan.Z, plan.vpa_range,
            tuple((e.element, e.oxidation, tuple(e.letters), tuple(e.multiplicities)) for e in plan.elements))


@lru_cache(maxsize=4096)
def _plan_parts(key: tuple) -> tuple[dict[str, Any], tuple[tuple[str, str], ...], str]:
    """Everything the trace derives from the plan alone: (plan dict, numbered steps,
    reduced formula). Cached: the same plan comes up again and again in a batch, and
    pymatgen's Composition arithmetic costs more than the rest of the trace."""
    system, sg, z, vpa_range, elements = key
    plan = Plan(system, sg, z, [PlanElement(e, q, list(ls), list(ms)) for e, q, ls, ms in elements],
                vpa_range=vpa_range)
    comp = planned_formula(plan)
    lo, hi = planned_density(plan)
    p = {
        "crystal_system": plan.crystal_system,
        "spacegroup": plan.spacegroup,
        "spacegroup_symbol": spacegroup_symbol(plan.spacegroup),
        "Z": plan.Z,
        "formula": comp.formula.replace(" ", ""),
        "reduced_formula": comp.reduced_formula,
        "num_atoms": plan.num_atoms,
        "oxidation_states": {e.element: e.oxidation for e in plan.elements},
        "sites": [
            {"element": e.element, "wyckoff": f"{m}{letter}", "multiplicity": m, "letter": letter}
            for e in plan.elements
            for letter, m in zip(e.letters, e.multiplicities)
        ],
        "volume_per_atom": list(plan.vpa_range),
        "density": [lo, hi],
    }
    charge = sum(p["oxidation_states"][el] * n for el, n in comp.get_el_amt_dict().items())
    p["net_charge"] = float(charge)
    ox = ", ".join(f"{el} {q:+d}" for el, q in p["oxidation_states"].items())
    sites = ", ".join(f"{s['element']} on {s['wyckoff']}" for s in p["sites"])
    steps = (
        ("Composition", f"{comp.reduced_formula}: elements {', '.join(str(e) for e in comp.elements)}; "
                        f"mean electronegativity {_mean_en(comp):.2f}"),
        ("Oxidation states", f"{ox} (net charge per cell {charge:+g}, "
                             f"{'neutral' if charge == 0 else 'not charge-neutral'})"),
        ("Crystal system and space group", f"{p['crystal_system']}, {p['spacegroup_symbol']} (No. {p['spacegroup']})"),
        ("Formula units", f"Z = {p['Z']}: {p['formula']}, {p['num_atoms']} atoms in the conventional cell"),
        ("Wyckoff site plan", sites),
        ("Expected density", f"{p['volume_per_atom'][0]:.1f}-{p['volume_per_atom'][1]:.1f} A^3/atom, "
                             f"i.e. {lo:.2f}-{hi:.2f} g/cm^3"),
    )
    return p, steps, comp.reduced_formula


def _found_spacegroup(structure: Structure, report: dict[str, Any] | None) -> int | None:
    if report is not None:
        sym = report.get("checks", {}).get("symmetry") or {}
        if sym.get("spacegroup") is not None:
            return int(sym["spacegroup"])
    # the verdict's space group is the validators' loose-tolerance one; the tight
    # tolerance only matters to the symmetry check itself
    from crystalgen.validators.symmetry import SYMPRECS, spacegroup_number

    return spacegroup_number(structure, SYMPRECS[0])


def build_trace(plan: Plan, structure: Structure, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """The structured trace of one generated crystal (JSON-serialisable)."""
    p, steps, _ = _plan_parts(_plan_key(plan))
    p = copy.deepcopy(p)
    found = _found_spacegroup(structure, report)
    cons = plan_agreement(p, structure, found)
    verdict = {
        "found_spacegroup": found,
        "density": structure_density(structure),
        "formula": structure.formula.replace(" ", ""),
        "valid": None if report is None else bool(report.get("pass")),
        "failed_checks": []
        if report is None
        else [name for name, c in report.get("checks", {}).items() if c.get("pass") is False],
    }
    trace = {
        "plan": p,
        "steps": [{"step": i + 1, "title": t, "text": s} for i, (t, s) in enumerate(steps)],
        "verdict": verdict,
        "consistency": cons,
    }
    trace["text"] = render_trace(trace)
    return trace


def _mean_en(comp: Composition) -> float:
    total = sum(comp.values())
    return sum(Element(el).X * n for el, n in comp.get_el_amt_dict().items()) / total


def _net_charge(plan: dict[str, Any]) -> float:
    if "net_charge" in plan:
        return plan["net_charge"]
    amounts = Composition(plan["formula"]).get_el_amt_dict()
    return float(sum(q * amounts.get(el, 0) for el, q in plan["oxidation_states"].items()))


def _plan_verdict(trace: dict[str, Any]) -> str:
    """Whether the result follows its plan, said next to the validators' verdict so a
    'valid' crystal that left its plan (or a plan that is not charge-neutral) is never
    reported as if all were fine."""
    v, c, p = trace["verdict"], trace["consistency"], trace["plan"]
    issues = []
    charge = _net_charge(p)
    if charge != 0:
        issues.append(f"oxidation states not charge-neutral (net {charge:+g} per cell)")
    if not c["spacegroup"]:
        found = v["found_spacegroup"]
        issues.append(f"space group differs (planned {spacegroup_symbol(p['spacegroup'])}, "
                      f"got {spacegroup_symbol(found) if found else 'unknown'})")
    if not c["composition"]:
        issues.append(f"composition differs (planned {p['formula']}, got {v['formula']})")
    if not c["density"]:
        issues.append(f"density outside the planned {p['density'][0]:.2f}-{p['density'][1]:.2f} g/cm^3")
    return "plan: " + (", ".join(issues) if issues else "followed")


def render_trace(trace: dict[str, Any]) -> str:
    """The trace as numbered, human-readable lines."""
    lines = [f"{s['step']}. {s['title']}: {s['text']}" for s in trace["steps"]]
    v, c, p = trace["verdict"], trace["consistency"], trace["plan"]
    n = len(lines) + 1
    found = v["found_spacegroup"]
    found_txt = f"{spacegroup_symbol(found)} (No. {found})" if found else "unknown"
    if v["valid"] is not None:
        status = "valid" if v["valid"] else f"INVALID ({', '.join(v['failed_checks'])} failed)"
        lines.append(f"{n}. Validators: {status}; {_plan_verdict(trace)}")
        n += 1
    lines.append(
        f"{n}. Plan vs result: space group {found_txt} "
        f"{'matches' if c['spacegroup'] else 'differs from'} the plan; composition {v['formula']} "
        f"{'matches' if c['composition'] else 'differs'}; density "
        f"{'undefined (zero volume)' if v['density'] is None else format(v['density'], '.2f') + ' g/cm^3'} "
        f"{'inside' if c['density'] else 'outside'} the planned {p['density'][0]:.2f}-{p['density'][1]:.2f}"
    )
    return "\n".join(lines)
