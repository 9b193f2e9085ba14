"""Per-crystal scoring: the validators' verdicts plus what the plots and metrics need.

One module-level function per task (`score_crystal`, `score_csp_item`) so the harness
can fan them out over processes with `parallel_map`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Structure

from crystalgen.evaluation.metrics import best_of_k, make_matcher, rms_dist
from crystalgen.validators.symmetry import spacegroup_number

SPACEGROUP_SYMPREC = 0.1  # the symmetry validator's reported (loose) tolerance


@dataclass
class CrystalScore:
    """What the harness records about one crystal (generated or reference).

    comp_valid / struct_valid: the CDVAE rules (`crystalgen.validators`).
    phys_valid: the physical distance rule the validators' pass verdict uses (None if not scored).
    report: the full validators' report (`ValidationReport.as_dict()`), when asked for.
    spacegroup: the symmetry check's space group (None if unknown).
    struct_fp / comp_fp: CDVAE fingerprints, when asked for (None if CrystalNN failed).
    """

    comp_valid: bool
    struct_valid: bool
    density: float
    n_elements: int
    spacegroup: int | None = None
    report: dict[str, Any] | None = None
    struct_fp: np.ndarray | None = None
    comp_fp: np.ndarray | None = None
    consistency: dict[str, bool] | None = None
    phys_valid: bool | None = None

    @property
    def valid(self) -> bool:
        """CDVAE's "valid": compositionally and structurally valid."""
        return self.comp_valid and self.struct_valid

    @property
    def passed(self) -> bool | None:
        return None if self.report is None else bool(self.report.get("pass"))


def score_crystal(
    structure: Structure,
    with_report: bool = True,
    with_fingerprints: bool = False,
    trace: dict[str, Any] | None = None,
) -> CrystalScore:
    """Validity, validators' report, space group, density, and optionally fingerprints."""
    from crystalgen.validators import physical_validity, smact_validity, structural_validity, validate

    report = validate(structure).as_dict() if with_report else None
    score = CrystalScore(
        comp_valid=bool(smact_validity(structure.composition)),
        struct_valid=bool(structural_validity(structure)),
        density=float(structure.density) if structure.volume > 0 else float("nan"),  # a flat cell has none
        n_elements=len(structure.composition.elements),
        spacegroup=_spacegroup(report),
        report=report,
        phys_valid=bool(physical_validity(structure)),
    )
    if with_fingerprints:
        from crystalgen.evaluation.fingerprints import fingerprints

        score.struct_fp, score.comp_fp = fingerprints(structure)
    if trace is not None:
        from crystalgen.evaluation.consistency import plan_consistency

        score.consistency = plan_consistency(trace, structure, score.spacegroup)
    return score


def _spacegroup(report: dict[str, Any] | None) -> int | None:
    """The space group the symmetry validator found, if it ran."""
    if report is None:
        return None
    value = report.get("checks", {}).get("symmetry", {}).get("spacegroup")
    return int(value) if value is not None else None


@dataclass
class CSPItemScore:
    """One test structure's CSP outcome: its own validity, its candidates', and the
    best-of-K RMS (None = no valid candidate matched)."""

    truth: CrystalScore
    candidates: list[CrystalScore | None]  # None: the generator failed for that sample
    rms: list[float | None]
    best_rms: float | None


def score_csp_item(task: tuple[Structure, list[Structure | None], bool]) -> CSPItemScore:
    """Score K candidates against one ground truth, with DiffCSP's validity rule:
    a candidate only counts if it is valid, and with K = 1 the ground truth must be too."""
    truth, candidates, with_report = task
    matcher = make_matcher()
    truth_score = score_crystal(truth, with_report=False)
    truth_score.spacegroup = spacegroup_number(truth, SPACEGROUP_SYMPREC)
    scores: list[CrystalScore | None] = []
    rms: list[float | None] = []
    for cand in candidates:
        if cand is None:
            scores.append(None)
            rms.append(None)
            continue
        s = score_crystal(cand, with_report=with_report)
        scores.append(s)
        eligible = s.valid and (truth_score.valid or len(candidates) > 1)
        rms.append(rms_dist(cand, truth, matcher) if eligible else None)
    return CSPItemScore(truth_score, scores, rms, best_of_k(rms))


def spacegroup_agreement(items: list[CSPItemScore]) -> float | None:
    """Fraction of test crystals whose first candidate has the ground truth's space group
    (both at symprec 0.1); a failed or unclassified candidate counts as a miss. None when
    candidates carry no space group (scored without the validators' report)."""
    if not items or not any(c is not None and c.spacegroup is not None for i in items for c in i.candidates):
        return None
    hits = sum(1 for i in items if i.candidates and i.candidates[0] is not None
               and i.candidates[0].spacegroup is not None and i.candidates[0].spacegroup == i.truth.spacegroup)
    return hits / len(items)


def score_crystal_task(task: tuple[Structure, bool, bool, dict[str, Any] | None]) -> CrystalScore:
    """`score_crystal` with its arguments packed, for `parallel_map`."""
    structure, with_report, with_fingerprints, trace = task
    return score_crystal(structure, with_report, with_fingerprints, trace)


def summarise_scores(scores: list[CrystalScore | None]) -> dict[str, Any]:
    """Validity, pass rates per check, P1 fraction and space-group counts over a set of
    generated crystals; a failed generation (None) counts as invalid and failing."""
    n = len(scores)
    ok = [s for s in scores if s is not None]
    frac = (lambda k: k / n) if n else (lambda k: 0.0)
    checks: dict[str, list[bool]] = {}
    for s in ok:
        for name, check in (s.report or {}).get("checks", {}).items():
            if check.get("pass") is not None:
                checks.setdefault(name, []).append(bool(check["pass"]))
    sgs = [s.spacegroup for s in ok if s.spacegroup is not None]
    counts: dict[int, int] = {}
    for sg in sgs:
        counts[sg] = counts.get(sg, 0) + 1
    with_report = any(s.report is not None for s in ok)
    return {
        "n_generated": n,
        "generation_failures": n - len(ok),
        "structural_validity": frac(sum(s.struct_valid for s in ok)),
        "compositional_validity": frac(sum(s.comp_valid for s in ok)),
        "physical_validity": frac(sum(bool(s.phys_valid) for s in ok)),
        "validity": frac(sum(s.valid for s in ok)),
        "pass_rate": frac(sum(bool(s.passed) for s in ok)) if with_report else None,
        "check_pass_rates": {name: sum(v) / len(v) for name, v in checks.items()},
        "fraction_p1": counts.get(1, 0) / len(sgs) if sgs else None,
        "spacegroup_counts": {str(k): counts[k] for k in sorted(counts)},
    }
