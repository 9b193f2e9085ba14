"""The field's metrics, written once and shared by `csp` and `dng`.

Conventions follow CDVAE (Xie et al. 2022) and DiffCSP (Jiao et al. 2023) so figures
compare with their tables: StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3), RMSE as
`get_rms_dist` returns it (normalised by (V/N)^(1/3)) averaged over matches, COV with
CDVAE's cutoffs, Wasserstein distances of density and number of elements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

from crystalgen.data.reference_index import ReferenceIndex, known_match

# CDVAE / DiffCSP matching tolerances (CSP match rate, and here also uniqueness/novelty)
MATCHER_KWARGS = {"stol": 0.5, "angle_tol": 10, "ltol": 0.3}
# CDVAE's COV cutoffs for MP-20-like data (MP-20, MPTS-52): structure 0.4, composition 10
COV_CUTOFFS = {"struc": 0.4, "comp": 10.0}


def make_matcher() -> StructureMatcher:
    return StructureMatcher(**MATCHER_KWARGS)


def rms_dist(pred: Structure, truth: Structure, matcher: StructureMatcher | None = None) -> float | None:
    """Normalised RMS displacement when the two match, else None (errors count as no match)."""
    matcher = matcher or make_matcher()
    try:
        result = matcher.get_rms_dist(pred, truth)
    except Exception:
        return None
    return None if result is None else float(result[0])


@dataclass
class MatchSummary:
    """match_rate: matched / all test structures; rmse: mean best RMS over matched ones."""

    match_rate: float
    rmse: float | None
    n_matched: int
    n_test: int


def summarise_matches(best_rms: Sequence[float | None]) -> MatchSummary:
    """Match rate and RMSE from one best-of-K RMS (or None) per test structure."""
    matched = [r for r in best_rms if r is not None]
    n = len(best_rms)
    return MatchSummary(
        match_rate=len(matched) / n if n else 0.0,
        rmse=float(np.mean(matched)) if matched else None,
        n_matched=len(matched),
        n_test=n,
    )


def best_of_k(rms_per_candidate: Sequence[float | None]) -> float | None:
    """The smallest RMS among the candidates that matched (DiffCSP's k-sample rule)."""
    matched = [r for r in rms_per_candidate if r is not None]
    return min(matched) if matched else None


def _groups_by_formula(structures: Sequence[Structure]) -> dict[str, list[int]]:
    """Indices grouped by reduced formula: only same-formula crystals can match."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(structures):
        groups[s.composition.reduced_formula].append(i)
    return groups


def unique_mask(structures: Sequence[Structure], matcher: StructureMatcher | None = None) -> list[bool]:
    """True for the first crystal of each StructureMatcher class, False for later duplicates."""
    matcher = matcher or make_matcher()
    keep = [False] * len(structures)
    for indices in _groups_by_formula(structures).values():
        representatives: list[Structure] = []
        for i in indices:
            if not any(_fits(matcher, structures[i], r) for r in representatives):
                representatives.append(structures[i])
                keep[i] = True
    return keep


def novel_mask(
    structures: Sequence[Structure],
    reference: ReferenceIndex,
    workers: int = 1,
) -> list[bool]:
    """True for crystals that match no reference crystal of the same reduced formula
    (only those are compared, and only their CIFs are parsed)."""
    from crystalgen.parallel import parallel_map

    tasks = [(s, reference.get(s.composition.reduced_formula, [])) for s in structures]
    return parallel_map(_is_novel, tasks, workers=workers, desc="novelty", chunksize=8)


def _is_novel(task: tuple[Structure, list[tuple[str, str]]]) -> bool:
    structure, same_formula = task
    if not same_formula:
        return True
    index = {structure.composition.reduced_formula: same_formula}
    try:
        return known_match(structure, index, make_matcher()) is None
    except Exception:  # a structure the matcher cannot handle matches nothing, as in `_fits`
        return True


def _fits(matcher: StructureMatcher, a: Structure, b: Structure) -> bool:
    try:
        return bool(matcher.fit(a, b))
    except Exception:
        return False


def coverage(
    gen_struc: Sequence[np.ndarray | None],
    gen_comp: Sequence[np.ndarray | None],
    ref_struc: Sequence[np.ndarray],
    ref_comp: Sequence[np.ndarray],
    struc_cutoff: float = COV_CUTOFFS["struc"],
    comp_cutoff: float = COV_CUTOFFS["comp"],
) -> dict[str, float]:
    """CDVAE's COV-R / COV-P and mean minimum distances (AMSD / AMCD).

    COV-R: fraction of reference crystals with a generated crystal within both cutoffs;
    COV-P: fraction of generated crystals within both cutoffs of some reference crystal,
    over all generated crystals (those whose fingerprint failed count as misses).
    """
    n_generated = len(gen_struc)
    kept = [(s, c) for s, c in zip(gen_struc, gen_comp) if s is not None and c is not None]
    if not kept or not len(ref_struc):
        return {"cov_recall": 0.0, "cov_precision": 0.0}
    g_s = np.array([s for s, _ in kept])
    g_c = np.array([c for _, c in kept])
    struc_d = cdist(g_s, np.asarray(ref_struc))
    comp_d = cdist(g_c, np.asarray(ref_comp))
    recall_ok = (struc_d.min(axis=0) <= struc_cutoff) & (comp_d.min(axis=0) <= comp_cutoff)
    precision_ok = (struc_d.min(axis=1) <= struc_cutoff) & (comp_d.min(axis=1) <= comp_cutoff)
    return {
        "cov_recall": float(recall_ok.mean()),
        "cov_precision": float(precision_ok.sum() / n_generated),
        "amsd_recall": float(struc_d.min(axis=0).mean()),
        "amsd_precision": float(struc_d.min(axis=1).mean()),
        "amcd_recall": float(comp_d.min(axis=0).mean()),
        "amcd_precision": float(comp_d.min(axis=1).mean()),
    }


def wasserstein(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """1-D earth mover's distance; None when either side is empty."""
    if not len(values) or not len(reference):
        return None
    return float(wasserstein_distance(values, reference))


def n_elements(structure: Structure) -> int:
    return len(structure.composition.elements)
