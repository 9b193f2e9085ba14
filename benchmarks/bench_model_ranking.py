"""What the model adds to analogue-guided CSP: teacher-forced plan scores, refinement, combined ranking.

Tuning set: the training pool's MPTS-52 validation rows (`source == "mpts_52/val"`) that
the model's own validation split holds out (`training.dataset.is_validation(id, 0.05, 0)`,
the split of `examples/train_cpu_default.toml`), a seeded `--n` of them. They are removed
from the analogue corpus (by id and by StructureMatcher match, `analogues.exclusion`). For
each, the top `--depth` candidates of the plain ranking (`find_candidates`) are built,
scored by the model in one batched forward pass (`model_score`), refined by the model with
their plan forced (`refine`, temperature 0), optionally given CHGNet energies, and matched
against the truth (CDVAE StructureMatcher settings; no validity gate). Rankings re-order
the same candidates:

- plain: `find_candidates`' order;
- combined (`analogues.ranking.combined_scores`): log p_sub + a * plan log-prob
  + b * value log-lik + c * [primitive cell = target cell] - w * (E - E_min), known compounds first;
  weights fitted by grid search for top-1 on this set, and checked by 2-fold cross-validation.

Structure rows: the analogue's own coordinates, the model's refined ones, or the better of
the two by the model's value log-likelihood (`refine.prefer_refined`) or by CHGNet energy.

    nice python benchmarks/bench_model_ranking.py --model MODEL_DIR --n 200 --depth 20 \\
        --json-out docs/results/model_ranking_val200.json
    nice python benchmarks/bench_model_ranking.py --model MODEL_DIR --n 300 --depth 20 \\
        --test ../shared/data/benchmark/mpts_52_test.csv.gz \\
        --weights-from docs/results/model_ranking_val200.json --json-out docs/results/model_ranking_mpts52_test300.json

With --test, the weights come from the tuning run (nothing is fitted on test crystals).
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from crystalgen.analogues.candidates import build_structure, find_candidates
from crystalgen.analogues.energy import EnergyRanker
from crystalgen.analogues.exclusion import exclude_test_crystals
from crystalgen.analogues.index import load_index
from crystalgen.analogues.model_score import encode_candidate, score_sequences
from crystalgen.analogues.ranking import RankWeights, combined_order
from crystalgen.analogues.refine import prefer_refined, refine
from crystalgen.analogues.volume import VolumeRule
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import MATCHER_KWARGS
from crystalgen.evaluation.report import provenance, write_json
from crystalgen.model import CrystalModel
from crystalgen.training.dataset import is_validation

csv.field_size_limit(1 << 30)
GRID = {"plan": (0.0, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0), "values": (0.0, 0.03, 0.1, 0.3),
        "same_cell": (0.0, 1.0, 2.0, 5.0, 100.0), "energy": (0.0, 3.0, 10.0, 30.0, 100.0, 300.0)}
#: (row, structure used, fitted with the CHGNet term)
FITTED_ROWS = (("combined", "own", False), ("combined+refine", "better", False),
               ("combined+chgnet", "own", True), ("combined+chgnet+refine", "better", True))


def tuning_set(pool: str, n: int, val_fraction: float, seed: int) -> tuple[list[str], list[Structure]]:
    rows = []
    with gzip.open(pool, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == "mpts_52/val" and is_validation(row["material_id"], val_fraction, seed):
                rows.append(row)
    if n < len(rows):
        rows = [rows[i] for i in np.sort(np.random.default_rng(0).choice(len(rows), n, replace=False))]
    return [r["material_id"] for r in rows], [Structure.from_str(r["cif"], fmt="cif") for r in rows]


def _fits(matcher: StructureMatcher, truth: Structure, s: Structure | None) -> bool:
    if s is None:
        return False
    try:
        return bool(matcher.fit(truth, s))
    except Exception:
        return False


def top_k(queries: list[dict], weights: RankWeights | None, structure: str, k: int = 1) -> float:
    """Fraction of queries whose top-k candidates (plain order when weights is None) hold a match."""
    hits = 0
    for q in queries:
        cands = q["candidates"]
        if not cands:
            continue
        order = list(range(len(cands))) if weights is None else combined_order(cands, weights)
        key = {"own": lambda c: c["match_own"], "refined": lambda c: c["match_refined"],
               "better": lambda c: c["match_refined"] if c["prefer_refined"] else c["match_own"],
               "lower_energy": lambda c: c["match_refined"] if _lower_energy(c) else c["match_own"]}[structure]
        hits += any(key(cands[i]) for i in order[:k])
    return hits / max(len(queries), 1)


def _lower_energy(c: dict) -> bool:
    return c["refined_energy"] is not None and c["energy"] is not None and c["refined_energy"] < c["energy"]


def fit(queries: list[dict], structure: str, energy: bool) -> tuple[RankWeights, float]:
    best, best_rate = RankWeights(), -1.0
    for a, b, c, w in itertools.product(GRID["plan"], GRID["values"], GRID["same_cell"],
                                        GRID["energy"] if energy else (0.0,)):
        weights = RankWeights(plan=a, values=b, same_cell=c, energy=w)
        rate = top_k(queries, weights, structure)
        if rate > best_rate + 1e-12:
            best, best_rate = weights, rate
    return best, best_rate


@click.command()
@click.option("--model", "model_dir", type=click.Path(exists=True), default=None, help="Required unless --features-in.")
@click.option("--pool", default="../shared/data/train/pool.csv.gz", type=click.Path(exists=True), show_default=True)
@click.option("--reference", default="training-pool", show_default=True)
@click.option("--n", "n_tune", type=int, default=200, show_default=True)
@click.option("--depth", type=int, default=10, show_default=True)
@click.option("--energy/--no-energy", default=True, show_default=True)
@click.option("--refine/--no-refine", "do_refine", default=True, show_default=True,
              help="Refine every candidate (the refinement rows); off: those rows are left out.")
@click.option("--json-out", type=click.Path(), default=None)
@click.option("--features-out", type=click.Path(), default=None, help="Per-candidate features as JSON (re-fit offline).")
@click.option("--test", "test_path", type=click.Path(exists=True), default=None,
              help="Score a seeded --n of this test file instead, with the weights of --weights-from (no fit).")
@click.option("--weights-from", type=click.Path(exists=True), default=None, help="A tuning run's JSON (its fitted weights).")
@click.option("--features-in", type=click.Path(exists=True), default=None,
              help="Re-rank the saved features of an earlier run (its --features-out) instead of computing them.")
def main(model_dir, pool, reference, n_tune, depth, energy, do_refine, json_out, features_out, test_path, weights_from,
         features_in) -> None:
    if features_in:
        saved = json.loads(Path(features_in).read_text())
        report(saved["queries"], saved["meta"], energy, test_path, weights_from, json_out)
        return
    if not model_dir:
        raise click.UsageError("--model is required (unless --features-in)")
    torch.set_num_threads(1)
    model = CrystalModel.from_pretrained(model_dir)
    if test_path:
        if not weights_from:
            raise click.UsageError("--test needs --weights-from (weights are fitted on the tuning set only)")
        test = load_structures(test_path, limit=n_tune, seed=0, workers=1)
        ids, truths = test.ids, test.structures
    else:
        ids, truths = tuning_set(pool, n_tune, 0.05, 0)
    index, exclusion = exclude_test_crystals(load_index(reference), ids, truths, MATCHER_KWARGS, workers=1)
    rule = VolumeRule.fit(index)
    matcher = StructureMatcher(**MATCHER_KWARGS)
    ranker = EnergyRanker() if energy else None
    queries, t0, seconds = [], time.perf_counter(), {"build_match": 0.0, "score": 0.0, "refine": 0.0, "energy": 0.0}
    for truth in truths:
        t = time.perf_counter()
        found = find_candidates(index, truth.composition)[:depth]
        structures = [build_structure(index, c, rule) for c in found]
        encoded = [encode_candidate(s) for s in structures]
        seconds["build_match"] += time.perf_counter() - t
        t = time.perf_counter()
        ok = [e for e in encoded if e is not None]
        scores = iter(score_sequences(model, ok))
        seconds["score"] += time.perf_counter() - t
        t = time.perf_counter()
        refined = iter(refine(model, ok) if do_refine else [None] * len(ok))
        seconds["refine"] += time.perf_counter() - t
        t = time.perf_counter()
        energies = ranker.energies(structures) if ranker else [0.0] * len(structures)
        refined = list(refined)
        refined_energies = iter(ranker.energies([r.structure for r in refined if r is not None]) if ranker else [])
        refined_energy = [None if r is None or ranker is None else next(refined_energies) for r in refined]
        refined, refined_energy = iter(refined), iter(refined_energy)
        seconds["energy"] += time.perf_counter() - t
        t = time.perf_counter()
        cands = []
        for c, s, e, energy_pa in zip(found, structures, encoded, energies):
            score, ref, ref_e = (next(scores), next(refined), next(refined_energy)) if e is not None else (None,) * 3
            cands.append({
                "log_prob": c.mapping.log_prob, "known": c.known, "same_cell": c.z_ratio == 1,
                "plan_log_prob": None if score is None else score.plan_log_prob,
                "value_log_lik": None if score is None else score.value_log_lik,
                "refined_log_lik": None if ref is None else ref.value_log_lik,
                "energy": energy_pa if math.isfinite(energy_pa) else None,
                "refined_energy": ref_e if ref_e is not None and math.isfinite(ref_e) else None,
                "prefer_refined": prefer_refined(score, ref),
                "match_own": _fits(matcher, truth, s),
                "match_refined": _fits(matcher, truth, None if ref is None else ref.structure),
            })
        seconds["build_match"] += time.perf_counter() - t
        queries.append({"formula": truth.composition.formula, "candidates": cands})
    meta = {"refine": do_refine, "model": str(model_dir), "model_training": _training(model_dir), "n_requested": n_tune, "depth": depth,
            "reference": reference, "exclusion": exclusion.as_dict(), "pool": pool,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "wall_s": round(time.perf_counter() - t0, 1)}
    if features_out:
        Path(features_out).write_text(json.dumps({"meta": meta, "queries": queries}))
    report(queries, meta, energy, test_path, weights_from, json_out)


def report(queries: list[dict], meta: dict, energy: bool, test_path: str | None, weights_from: str | None,
           json_out: str | None) -> None:
    """The rows (fitted on these queries, or with the weights of `weights_from` on a test set)."""

    rows = {"plain": {"structure": "own", "weights": None}}
    fitted = {}
    tuned = json.loads(Path(weights_from).read_text())["rows"] if test_path else {}
    refined_rows = meta.get("refine", True)
    for name, structure, use_energy in FITTED_ROWS:
        if (use_energy and not energy) or (structure != "own" and not refined_rows):
            continue
        if test_path:
            weights = RankWeights(**tuned[name]["weights"])
        else:
            weights, _ = fit(queries, structure, use_energy)
        fitted[name] = weights
        rows[name] = {"structure": structure, "weights": weights}
    if refined_rows:
        rows["plain+refine (refined structure always)"] = {"structure": "refined", "weights": None}
        rows["plain+refine (better by likelihood)"] = {"structure": "better", "weights": None}
    if energy and refined_rows:
        rows["plain+refine (lower CHGNet energy)"] = {"structure": "lower_energy", "weights": None}
        if "combined+chgnet" in fitted:
            rows["combined+chgnet+refine (lower CHGNet energy)"] = {"structure": "lower_energy",
                                                                   "weights": fitted["combined+chgnet"]}
    table = {name: {"top1": top_k(queries, r["weights"], r["structure"]),
                    "top5": top_k(queries, r["weights"], r["structure"], 5),
                    "top20": top_k(queries, r["weights"], r["structure"], 20),
                    "weights": None if r["weights"] is None else r["weights"].as_dict()} for name, r in rows.items()}
    # 2-fold cross-validation of the fitted weights: fit on one half, score the other
    halves = [queries[0::2], queries[1::2]]
    cross = {}
    for name, r in rows.items():
        if name in fitted and not test_path:
            use_energy = "chgnet" in name
            held = [top_k(halves[1 - h], fit(halves[h], r["structure"], use_energy)[0], r["structure"]) for h in (0, 1)]
            cross[name] = sum(held) / 2
    n_cands = sum(len(q["candidates"]) for q in queries)
    result = {
        **provenance("bench_model_ranking"),
        "model": meta["model"], "model_training": meta["model_training"],
        "tuning_set": None if test_path else (f"{meta['pool']}: source mpts_52/val, is_validation(id, 0.05, seed 0), "
                                              f"seeded {meta['n_requested']}"),
        "test": test_path, "weights_from": weights_from,
        "n_test": len(queries), "depth": meta["depth"], "reference": meta["reference"], "exclusion": meta["exclusion"],
        "fraction_with_analogue": sum(1 for q in queries if q["candidates"]) / max(len(queries), 1),
        "oracle_in_pool_own": sum(any(c["match_own"] for c in q["candidates"]) for q in queries) / len(queries),
        "oracle_in_pool_refined": sum(any(c["match_refined"] for c in q["candidates"]) for q in queries) / len(queries),
        "encoded_fraction": sum(c["plan_log_prob"] is not None for q in queries for c in q["candidates"]) / max(n_cands, 1),
        "refined_preferred_fraction": sum(c["prefer_refined"] for q in queries for c in q["candidates"]) / max(n_cands, 1),
        "rows": table, "cross_validated_top1": cross, "seconds": meta["seconds"], "wall_s": meta["wall_s"],
    }
    click.echo(json.dumps(result, indent=2))
    if json_out:
        write_json(json_out, result)


def _training(model_dir: str) -> dict | None:
    path = Path(model_dir) / "training.json"
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    main()
