"""`crystalgen evaluate csp`: crystal structure prediction, scored as CDVAE / DiffCSP do.

For each test crystal the generator gets its exact cell composition and returns K
candidates. Match rate = test crystals with a valid candidate that StructureMatcher
matches (K = 1: the ground truth must be valid too), over all test crystals; RMSE =
mean of the best matching candidate's normalised RMS, over matched crystals.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure

from crystalgen.evaluation.generation import generate_csp
from crystalgen.evaluation.metrics import MATCHER_KWARGS, summarise_matches
from crystalgen.parallel import parallel_map
from crystalgen.evaluation.protocol import Generator, generator_name
from crystalgen.evaluation.scoring import CSPItemScore, score_csp_item, spacegroup_agreement, summarise_scores


@dataclass
class CSPConfig:
    """n_samples: K candidates per test crystal; workers: scoring (and baseline) processes;
    with_report: also run the full validators on every candidate (pass rate per check)."""

    n_samples: int = 1
    seed: int = 0
    workers: int = 2
    with_report: bool = True


@dataclass
class CSPRun:
    """One generator's CSP outcome: the summary figures and the per-test-crystal scores."""

    generator: str
    summary: dict[str, Any]
    items: list[CSPItemScore] = field(repr=False)


def evaluate_csp(generator: Generator, truths: Sequence[Structure], config: CSPConfig) -> CSPRun:
    """Generate K candidates per test crystal with `generator` and score them."""
    t0 = time.perf_counter()
    results = generate_csp(
        generator, [t.composition for t in truths], config.n_samples, config.seed, config.workers
    )
    t_generate = time.perf_counter() - t0
    tasks = [
        (truth, [None if r is None else r.structure for r in cands], config.with_report)
        for truth, cands in zip(truths, results)
    ]
    t0 = time.perf_counter()
    items = parallel_map(score_csp_item, tasks, workers=config.workers, desc="score (csp)", chunksize=4)
    t_score = time.perf_counter() - t0

    matches = summarise_matches([item.best_rms for item in items])
    summary: dict[str, Any] = {
        "generator": generator_name(generator),
        "match_rate": matches.match_rate,
        "rmse": matches.rmse,
        "n_matched": matches.n_matched,
        "n_test": matches.n_test,
        "n_samples": config.n_samples,
        "ground_truth_validity": (sum(i.truth.valid for i in items) / len(items)) if items else 0.0,
    }
    summary.update(summarise_scores([c for i in items for c in i.candidates]))
    summary["spacegroup_agreement"] = spacegroup_agreement(items)
    summary["seconds_generate"] = round(t_generate, 2)
    summary["seconds_score"] = round(t_score, 2)
    return CSPRun(summary["generator"], summary, items)


def csp_settings(config: CSPConfig, test_path: str, n_test: int, limit: int | None) -> dict[str, Any]:
    """The settings block every CSP JSON carries, so a figure can be reproduced."""
    return {
        "task": "csp",
        "test": test_path,
        "n_test": n_test,
        "limit": limit,
        "n_samples": config.n_samples,
        "seed": config.seed,
        "workers": config.workers,
        "matcher": MATCHER_KWARGS,
        "protocol": "CDVAE/DiffCSP: match over all test crystals; K=1 needs valid prediction and "
        "ground truth, K>1 best of K valid predictions; RMSE = mean normalised RMS over matches",
        "with_report": config.with_report,
    }
