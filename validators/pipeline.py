"""Run every check on one structure (`validate`) or on a batch on all cores (`validate_many`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Structure

from crystalgen.parallel import parallel_map
from crystalgen.validators.charge import check_charge
from crystalgen.validators.composition import check_composition
from crystalgen.validators.cell import Cell, DisorderedError, as_cell
from crystalgen.validators.distance import check_distance
from crystalgen.validators.lattice import MIN_VOLUME_A3, check_lattice
from crystalgen.validators.result import CHECK_NAMES, CheckResult, Intent, ValidationReport
from crystalgen.validators.symmetry import check_symmetry

# Below this many structures a process pool costs more than it saves.
_SERIAL_BELOW = 64


def _unusable(structure: Any, intent: Intent) -> ValidationReport:
    """Every check failed with `reason` (composition stays N/A when no formula was intended)."""
    if not isinstance(structure, Structure):
        reason = f"not a pymatgen Structure: {type(structure).__name__}"
    elif len(structure) == 0:
        reason = "structure has no sites"
    else:
        reason = "disordered structure (partial occupancies) cannot be validated"
    checks = {name: CheckResult(False, None, {"error": reason}) for name in CHECK_NAMES}
    if intent.formula is None:
        checks["composition"] = CheckResult(None, None, {"applicable": False, "error": reason})
    return ValidationReport(checks)


def _cell_or_none(structure: Any) -> Cell | None:
    if isinstance(structure, Cell):
        return structure
    if not isinstance(structure, Structure) or len(structure) == 0:
        return None
    try:
        return as_cell(structure)
    except DisorderedError:
        return None


def validate(structure: Structure | Cell, intent: Intent | None = None) -> ValidationReport:
    """All checks on one structure; never raises on a bad structure (it fails the checks instead)."""
    intent = intent or Intent()
    cell = _cell_or_none(structure)
    if cell is None:
        return _unusable(structure, intent)
    return ValidationReport(
        {
            "distance": check_distance(cell),
            "lattice": check_lattice(cell),
            "charge": check_charge(cell),
            "symmetry": check_symmetry(cell, intent.spacegroup),
            "composition": check_composition(cell, intent.formula, intent.exact),
        }
    )


def _distance_verdicts(dist: CheckResult, lat: CheckResult) -> tuple[bool, bool]:
    """(CDVAE structural validity, physical validity) from a report's distance and lattice checks."""
    volume_ok = lat.value is not None and lat.value > MIN_VOLUME_A3
    return bool(dist.details.get("cdvae_pass") and volume_ok), bool(dist.passed and volume_ok)


def structural_validity(structure: Structure) -> bool:
    """The CDVAE structural-validity rule: all distances > 0.5 Å and volume > 0.1 Å^3 (for literature figures)."""
    cell = _cell_or_none(structure)
    if cell is None:
        return False
    return _distance_verdicts(check_distance(cell), check_lattice(cell))[0]


def physical_validity(structure: Structure) -> bool:
    """The physical rule: no pair closer than ``validators.distance.pair_min_distance`` and volume > 0.1 Å^3."""
    cell = _cell_or_none(structure)
    if cell is None:
        return False
    return _distance_verdicts(check_distance(cell), check_lattice(cell))[1]


@dataclass
class BatchValidation:
    """Reports in input order, and `summary`: per-check pass rate, overall "pass" rate and "n".

    A check's rate is over the structures it applies to (None if it applied to none).
    """

    reports: list[ValidationReport]
    summary: dict[str, Any]


def summarize(reports: Sequence[ValidationReport]) -> dict[str, Any]:
    """Pass rates per check (over applicable structures), overall pass rate, count, and the CDVAE
    ``structural_validity`` and the ``physical_validity`` (the distance verdict in use) rates."""
    summary: dict[str, Any] = {}
    for name in CHECK_NAMES:
        verdicts = [r.checks[name].passed for r in reports if name in r.checks and r.checks[name].applicable]
        summary[name] = float(np.mean(verdicts)) if verdicts else None
    summary["pass"] = float(np.mean([r.passed for r in reports])) if reports else None
    verdicts = [_distance_verdicts(r.checks["distance"], r.checks["lattice"]) for r in reports
                if "distance" in r.checks and "lattice" in r.checks]
    summary["structural_validity"] = float(np.mean([v[0] for v in verdicts])) if verdicts else None
    summary["physical_validity"] = float(np.mean([v[1] for v in verdicts])) if verdicts else None
    summary["n"] = len(reports)
    return summary


def _validate_pair(args: tuple[Structure, Intent | None]) -> ValidationReport:
    return validate(*args)


def validate_many(
    structures: Iterable[Structure],
    intents: Iterable[Intent | None] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> BatchValidation:
    """Validate a batch in parallel (one process per core by default), keeping input order."""
    structures = list(structures)
    intent_list = list(intents) if intents is not None else [None] * len(structures)
    if len(intent_list) != len(structures):
        raise ValueError(f"{len(intent_list)} intents for {len(structures)} structures")
    # Workers get the extracted arrays, not Structures: unpickling a Structure rebuilds every site.
    jobs = [(_cell_or_none(s) or s, intent) for s, intent in zip(structures, intent_list)]
    workers = workers or os.cpu_count() or 1
    reports = parallel_map(_validate_pair, jobs, workers=workers, desc="validating", unit="struct", leave=True,
                           chunksize=max(1, min(64, len(jobs) // (workers * 8))), progress=progress,
                           serial_below=_SERIAL_BELOW)
    return BatchValidation(reports, summarize(reports))
