"""The per-candidate stages of the funnel: validate, filter, deduplicate, check novelty.

Each stage is a plain function so that the pipeline can run it inside a shard worker and
tests can call it alone. Sampling lives in ``generators``, scoring in ``ranking``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalgen.results import GenerationResult
from crystalgen.screening.config import FilterConfig, NoveltyConfig, Target

# Funnel stages in order; each candidate records the last one it reached.
STAGES: tuple[str, ...] = ("sampled", "valid", "filtered", "unique", "novel", "ranked")


def validate_results(results: Sequence[GenerationResult], target: Target) -> None:
    """Attach a validator report to every result (in place) against the target's intent."""
    from crystalgen.validators import Intent, validate

    intent = Intent(spacegroup=target.spacegroup, formula=target.formula)
    for r in results:
        r.report = validate(r.structure, intent).as_dict()


def space_group_number(structure: Structure, symprec: float = 0.1) -> int:
    """The space group at ``symprec``; 0 when spglib cannot find one (broken cell)."""
    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:  # spglib raises several types on degenerate cells
        return 0


def required_checks_pass(report: dict | None, checks: Sequence[str]) -> bool:
    """Whether every required check passed; a non-applicable check (pass None) does not fail.

    ``"all"`` stands for the report's overall verdict; a required check missing from the
    report fails, so a misspelt check name cannot let everything through.
    """
    if report is None:
        return False
    for name in checks:
        if name == "all":
            if not report.get("pass"):
                return False
            continue
        check = report.get("checks", {}).get(name)
        if check is None or check.get("pass") is False:
            return False
    return True


def filter_reason(result: GenerationResult, spacegroup: int, filters: FilterConfig) -> str | None:
    """Why a validated candidate is dropped by the filters (None: it stays)."""
    if filters.max_atoms is not None and len(result.structure) > filters.max_atoms:
        return f"{len(result.structure)} atoms > max_atoms {filters.max_atoms}"
    if filters.spacegroups and spacegroup not in filters.spacegroups:
        return f"space group {spacegroup} not allowed"
    if spacegroup < filters.min_spacegroup:
        return f"space group {spacegroup} < min_spacegroup {filters.min_spacegroup}"
    return None


def make_matcher(novelty: NoveltyConfig) -> StructureMatcher:
    """One matcher for both deduplication and novelty, so both use the same tolerances."""
    return StructureMatcher(ltol=novelty.ltol, stol=novelty.stol, angle_tol=novelty.angle_tol)


@dataclass
class DedupEntry:
    """A candidate as deduplication sees it: a label, its formula and its structure."""

    key: str
    formula: str
    structure: Structure


def deduplicate(entries: Sequence[DedupEntry], matcher: StructureMatcher) -> dict[str, str | None]:
    """For each entry, the key of the earlier entry it duplicates (None if it is the first).

    Order decides which copy survives, so a fixed input order gives fixed results.
    """
    kept: dict[str, list[DedupEntry]] = {}
    duplicate_of: dict[str, str | None] = {}
    for e in entries:
        same_formula = kept.setdefault(e.formula, [])
        match = next((k.key for k in same_formula if matcher.fit(k.structure, e.structure)), None)
        duplicate_of[e.key] = match
        if match is None:
            same_formula.append(e)
    return duplicate_of

