"""`crystalgen evaluate dng`: de novo generation metrics.

Validity (CDVAE's structural and compositional rules, and the full validators' pass
rate), fraction P1, uniqueness and novelty (StructureMatcher, against the training
corpus indexed by reduced formula: a crystal is compared only with known crystals of its
formula, as in CDVAE / DiffCSP),
COV-R / COV-P (CDVAE fingerprints and cutoffs, against a test set), Wasserstein
distances of density and number of elements (valid crystals against the test set), and
plan-vs-result consistency for generators that write traces.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure

from crystalgen.data.reference_index import ReferenceIndex
from crystalgen.evaluation.consistency import consistency_rates
from crystalgen.evaluation.fingerprints import fingerprint_unavailable_reason
from crystalgen.evaluation.generation import generate_dng
from crystalgen.evaluation.metrics import (
    COV_CUTOFFS,
    coverage,
    novel_mask,
    unique_mask,
    wasserstein,
)
from crystalgen.parallel import parallel_map
from crystalgen.evaluation.protocol import Generator, generator_name
from crystalgen.evaluation.scoring import CrystalScore, score_crystal_task, summarise_scores


@dataclass
class DNGConfig:
    """n: crystals to generate; coverage: compute COV-R/P (needs matminer and a test set)."""

    n: int = 1000
    seed: int = 0
    workers: int = 2
    coverage: bool = True


@dataclass
class Reference:
    """Scored reference crystals: the test set (distributions, coverage) or training set."""

    structures: list[Structure]
    scores: list[CrystalScore] = field(default_factory=list)


def score_reference(structures: Sequence[Structure], with_fingerprints: bool, workers: int) -> Reference:
    """Density, element counts and (optionally) fingerprints of the test crystals."""
    tasks = [(s, False, with_fingerprints, None) for s in structures]
    scores = parallel_map(score_crystal_task, tasks, workers=workers, desc="score (test set)", chunksize=8)
    return Reference(list(structures), scores)


@dataclass
class DNGRun:
    generator: str
    summary: dict[str, Any]
    structures: list[Structure | None] = field(repr=False)
    scores: list[CrystalScore | None] = field(repr=False)


def evaluate_dng(
    generator: Generator,
    config: DNGConfig,
    test: Reference | None = None,
    train: ReferenceIndex | None = None,
) -> DNGRun:
    """Generate `config.n` crystals and compute every de novo metric the inputs allow;
    a metric that cannot be computed is None with its reason under `unavailable`.

    ``novelty`` is the share of valid (CDVAE) unique crystals that match no training
    crystal; ``unique_and_novel`` the share of all crystals that are both unique and novel.
    """
    t0 = time.perf_counter()
    results = generate_dng(generator, config.n, config.seed, config.workers)
    t_generate = time.perf_counter() - t0

    unavailable: dict[str, str] = {}
    cov_reason = _coverage_unavailable(config, test)
    with_fp = cov_reason is None
    t0 = time.perf_counter()
    tasks = [(r.structure, True, with_fp, r.trace) for r in results if r is not None]
    scored = iter(parallel_map(score_crystal_task, tasks, workers=config.workers, desc="score (dng)", chunksize=4))
    scores: list[CrystalScore | None] = [None if r is None else next(scored) for r in results]
    structures = [None if r is None else r.structure for r in results]
    generated = [s for s in structures if s is not None]

    summary: dict[str, Any] = {"generator": generator_name(generator)}
    summary.update(summarise_scores(scores))

    unique = unique_mask(generated)
    summary["uniqueness"] = sum(unique) / len(structures) if structures else None
    if train is not None:
        is_novel = _over_all(novel_mask(generated, train, workers=config.workers), structures)
        is_unique = _over_all(unique, structures)
        valid_unique = [u and c is not None and c.valid for u, c in zip(is_unique, scores)]
        summary["n_valid_unique"] = sum(valid_unique)
        summary["novelty"] = (sum(n and vu for n, vu in zip(is_novel, valid_unique)) / sum(valid_unique)
                              if any(valid_unique) else None)
        summary["unique_and_novel"] = (sum(u and n for u, n in zip(is_unique, is_novel)) / len(structures)
                                       if structures else None)
    else:
        summary["novelty"] = summary["unique_and_novel"] = None
        unavailable["novelty"] = "no training corpus given"

    valid = [s for s in scores if s is not None and s.valid]
    if test is not None:
        summary["wdist_density"] = wasserstein([s.density for s in valid], [s.density for s in test.scores])
        summary["wdist_num_elems"] = wasserstein([s.n_elements for s in valid], [s.n_elements for s in test.scores])
    else:
        summary["wdist_density"] = summary["wdist_num_elems"] = None
        unavailable["wasserstein"] = "no test set given (--test)"

    if cov_reason is None:
        ok = [s for s in scores if s is not None]
        gen_s = [s.struct_fp for s in ok] + [None] * (len(scores) - len(ok))
        gen_c = [s.comp_fp for s in ok] + [None] * (len(scores) - len(ok))
        ref = [s for s in test.scores if s.struct_fp is not None]
        summary.update(coverage(gen_s, gen_c, [s.struct_fp for s in ref], [s.comp_fp for s in ref]))
    else:
        summary["cov_recall"] = summary["cov_precision"] = None
        unavailable["coverage"] = cov_reason

    summary["consistency"] = consistency_rates([s.consistency for s in scores if s is not None])
    if summary["consistency"] is None:
        unavailable["consistency"] = "the generator's results carry no plan in their traces"
    summary["unavailable"] = unavailable
    summary["seconds_generate"] = round(t_generate, 2)
    summary["seconds_score"] = round(time.perf_counter() - t0, 2)
    return DNGRun(summary["generator"], summary, structures, scores)


def _over_all(mask: list[bool], structures: list[Structure | None]) -> list[bool]:
    """A mask over the generated crystals spread over every slot (False where generation failed)."""
    values = iter(mask)
    return [False if s is None else next(values) for s in structures]


def _coverage_unavailable(config: DNGConfig, test: Reference | None) -> str | None:
    if not config.coverage:
        return "coverage switched off"
    if test is None:
        return "no test set given (--test)"
    reason = fingerprint_unavailable_reason()
    if reason:
        return reason
    if all(s.struct_fp is None for s in test.scores):
        return "no test crystal has a fingerprint (scored without them, or CrystalNN failed)"
    return None


def dng_settings(config: DNGConfig, test_path: str | None, train_path: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "task": "dng",
        "n": config.n,
        "seed": config.seed,
        "workers": config.workers,
        "test": test_path,
        "train": train_path,
        "cov_cutoffs": COV_CUTOFFS,
        "uniqueness": "StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3) within reduced formula, over all generated",
        "novelty": "fraction of valid unique generated crystals matching no training crystal of the same reduced "
                   "formula (same matcher); unique_and_novel: fraction of all generated crystals, unique and novel",
        "wasserstein": "valid generated crystals against the test set (CDVAE)",
        **extra,
    }
