"""Fit `strategy="auto"`'s energy weight (K=1) and model share (K>1) on validation crystals.

For each validation crystal: the analogue side's top candidates (the corpus minus the
validation crystals, ranked with the model as `auto` ranks them) and the model's own (the
samples `auto` draws, same seed, ordered by plan log-prob), `--depth` of each, each with its
plan log-prob, optionally CHGNet's energy per atom (`--energy`), and whether it matches the
truth as `crystalgen evaluate csp` scores (CDVAE StructureMatcher, the validity rule). Every
setting's rate is then computed from these features with the library's own rules
(`auto_ranking.energy_scores`, `AutoRanking.reserved_slots`); nothing is re-generated:

- K=1, energy: the top of `energy_top` candidates per side ranked by plan log-prob, the
  margin and `energy_weight` x CHGNet energy, over a grid of margins, weights and tops;
- K>1, share: the first K - r analogues and the model's first r candidates hold a match,
  r = the reserved slots of each share. This ignores the deduplication that lets `auto` go
  deeper into the model's list where a candidate repeats a kept one, so it is a lower bound.

Tuning sets (never test crystals): a validation split (`--val`, a seeded `--n`).

    nice python benchmarks/bench_auto_fit.py --model /work/runs/perov5_ft/best \
        --val ../shared/data/benchmark/perov_5_val.csv.gz --reference ../shared/data/train/perov_5_train.csv.gz \
        --prefilter 50 --n 150 --depth 5 --energy --json-out docs/results/auto_fit/perov5_val_energy.json
    nice python benchmarks/bench_auto_fit.py --val /work/runs/final3/pool_val500.csv.gz --n 100 --depth 20 \
        --k 20 --json-out docs/results/auto_fit/pool_val_share.json

The chosen setting maximises the tuning rate; ties go to the earlier grid point (smaller
weight, smaller share), so a setting must win a crystal to be chosen.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click

from crystalgen.analogues.energy import EnergyRanker
from crystalgen.analogues.generator import AnalogueConfig
from crystalgen.api import CrystalGenerator
from crystalgen.auto_ranking import AutoRanking, energy_scores, plan_log_prob
from crystalgen.evaluation.analogue import held_out_analogues
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.report import provenance, write_json
from crystalgen.evaluation.scoring import score_csp_item
from crystalgen.generation.plan_search import best_by_plan

MARGINS = [-math.inf, -40.0, -20.0, -10.0, -5.0, 0.0, 5.0, 10.0, 20.0, 40.0, math.inf]
WEIGHTS = [0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
SHARES = [round(x / 20, 2) for x in range(21)]


def features(model_dir: str | None, path: str, n: int, seed: int, reference: str | None, prefilter: int,
             depth: int, with_energy: bool) -> list[dict]:
    """Per crystal: both sides' candidates (rank order) with plan log-prob, energy and match."""
    data = load_structures(path, limit=n, seed=seed, workers=1)
    truths = list(data.structures)
    plain, _ = held_out_analogues(reference, list(data.ids), truths, AnalogueConfig(prefilter=prefilter), workers=1)
    gen = CrystalGenerator.from_pretrained(model_dir, reference=plain.index,
                                           analogue_config=AnalogueConfig(prefilter=prefilter))
    comps = [t.composition for t in truths]
    analogue = gen.analogues().predict_structures(comps, n=depth, validate=False)
    own = gen.predict_structures(comps, n=depth, strategy="model", seed=seed, validate=False)
    own = [best_by_plan(gen.model, m, depth) if m else m for m in own]  # ordered as `auto` orders them
    ranker = EnergyRanker() if with_energy else None
    rows = []
    for truth, a, m in zip(truths, analogue, own):
        cands = list(a) + list(m)
        item = score_csp_item((truth, [c.structure for c in cands], False)) if cands else None
        energies = ranker.energies([c.structure for c in cands]) if ranker else [None] * len(cands)
        sides = ["analogue"] * len(a) + ["model"] * len(m)
        rows.append({"truth_valid": bool(item.truth.valid) if item else None, "candidates": [
            {"side": side, "plan_log_prob": plan_log_prob(c), "energy": e,
             "match": item.rms[i] is not None, "valid": bool(item.candidates[i].valid)}
            for i, (side, c, e) in enumerate(zip(sides, cands, energies))]})
    return rows


def _side(row: dict, side: str) -> list[dict]:
    return [c for c in row["candidates"] if c["side"] == side]


def rate_energy(rows: list[dict], margin: float, weight: float, top: int) -> float:
    """K=1 rate of `auto` with the energy term over the top `top` of each side."""
    hits = 0
    for row in rows:
        pool = _side(row, "analogue")[:top] + _side(row, "model")[:top]
        if not pool or not row["truth_valid"]:
            continue
        keys = energy_scores([c["plan_log_prob"] for c in pool], [c["side"] == "model" for c in pool],
                             [math.inf if c["energy"] is None else c["energy"] for c in pool], margin, weight)
        best = min(range(len(pool)), key=lambda i: (keys[i][0], -keys[i][1], i))
        hits += pool[best]["match"]
    return hits / len(rows)


def rate_head_to_head(rows: list[dict], margin: float) -> float:
    """K=1 rate of `auto` without energy (the sides' first candidates, head to head)."""
    hits = 0
    for row in rows:
        a, m = _side(row, "analogue")[:1], _side(row, "model")[:1]
        if not row["truth_valid"] or not (a or m):
            continue
        model_first = not a or (m and m[0]["plan_log_prob"] is not None and a[0]["plan_log_prob"] is not None
                                and m[0]["plan_log_prob"] - a[0]["plan_log_prob"] > margin)
        hits += (m if model_first else a)[0]["match"]
    return hits / len(rows)


def rate_share(rows: list[dict], k: int, share: float) -> float:
    """Lower bound of the K=k rate of analogues-first `auto` with `share` of the slots kept for the model."""
    hits = 0
    for row in rows:
        a, m = _side(row, "analogue"), _side(row, "model")
        reserve = min(AutoRanking(model_share=share).reserved_slots(k), len(m))
        chosen = a[: k - reserve] + m[:reserve]
        chosen += m[reserve: reserve + k - len(chosen)]  # too few analogues: the model fills up
        hits += any(c["match"] for c in chosen)
    return hits / len(rows)


def energy_alone(rows: list[dict], top: int) -> dict:
    """What CHGNet energy alone says: the K=1 rate of the lowest-energy candidate among each
    side's top `top` (and both together), against each side's first, and the mean energies."""
    out: dict = {}
    for name, sides in (("analogue", ("analogue",)), ("model", ("model",)), ("both", ("analogue", "model"))):
        lowest = first = 0
        for row in rows:
            pool = [c for side in sides for c in _side(row, side)[:top]]
            scored = [c for c in pool if c["energy"] is not None and math.isfinite(c["energy"])]
            if row["truth_valid"] and scored:
                lowest += min(scored, key=lambda c: c["energy"])["match"]
                first += pool[0]["match"]
        energies = [c["energy"] for row in rows for side in sides for c in _side(row, side)[:top]
                    if c["energy"] is not None and math.isfinite(c["energy"])]
        out[name] = {"lowest_energy_top1": lowest / len(rows), "first_top1": first / len(rows),
                     "any_match": sum(any(c["match"] for side in sides for c in _side(r, side)[:top])
                                      for r in rows) / len(rows),
                     "mean_energy_per_atom": sum(energies) / len(energies) if energies else None}
    return out


def fit(rows: list[dict], k: int, with_energy: bool, depth: int) -> dict:
    out: dict = {"n": len(rows),
                 "analogue_top1": rate_head_to_head(rows, math.inf), "model_top1": rate_head_to_head(rows, -math.inf),
                 "oracle_top1": sum(bool(r["truth_valid"]) and any(c["match"] for c in _side(r, "analogue")[:1]
                                                                     + _side(r, "model")[:1]) for r in rows) / len(rows),
                 "head_to_head": {str(m): rate_head_to_head(rows, m) for m in MARGINS}}
    if with_energy:
        grid = [(top, m, w) for top in sorted({1, 2, 3, depth}) if top <= depth for w in WEIGHTS for m in MARGINS]
        rates = {f"top={t} margin={m} weight={w}": rate_energy(rows, m, w, t) for t, m, w in grid}
        best = max(grid, key=lambda g: rates[f"top={g[0]} margin={g[1]} weight={g[2]}"])
        positive = max((g for g in grid if g[2] > 0), key=lambda g: rates[f"top={g[0]} margin={g[1]} weight={g[2]}"])
        out.update(energy_grid=rates, best_energy={"energy_top": best[0], "margin": best[1], "energy_weight": best[2],
                                                   "rate": rates[f"top={best[0]} margin={best[1]} weight={best[2]}"]},
                   best_positive_weight={"energy_top": positive[0], "margin": positive[1],
                                         "energy_weight": positive[2],
                                         "rate": rates[f"top={positive[0]} margin={positive[1]} weight={positive[2]}"]},
                   energy_alone=energy_alone(rows, depth))
    if k > 1:
        rates = {str(s): rate_share(rows, k, s) for s in SHARES}
        best = max(SHARES, key=lambda s: rates[str(s)])
        out.update(k=k, share_curve=rates, best_share={"model_share": best, "rate": rates[str(best)]},
                   model_alone=sum(any(c["match"] for c in _side(r, "model")[:k]) for r in rows) / len(rows),
                   union=sum(any(c["match"] for c in _side(r, "analogue")[:k] + _side(r, "model")[:k])
                             for r in rows) / len(rows))
    return out


@click.command()
@click.option("--model", "model_dir", default=None, help="Model directory (default: the shipped model).")
@click.option("--val", "val_path", default=None, help="Validation crystals (CSV(.gz) with cif).")
@click.option("--reference", default=None, help="Analogue corpus (default: the shipped pool); --val is removed.")
@click.option("--prefilter", type=int, default=0)
@click.option("--n", "n", type=int, default=100)
@click.option("--seed", type=int, default=0)
@click.option("--depth", type=int, default=5, help="Candidates per side.")
@click.option("--k", "k", type=int, default=1, help="K of the share fit (1: no share fit).")
@click.option("--energy", "with_energy", is_flag=True, help="CHGNet energies and the K=1 energy fit.")
@click.option("--features-in", default=None, help="Re-fit from a --json-out file's features.")
@click.option("--json-out", default=None)
def main(model_dir, val_path, reference, prefilter, n, seed, depth, k, with_energy, features_in, json_out) -> None:
    if features_in:
        saved = json.loads(Path(features_in).read_text())
        settings, rows = saved["settings"], saved["rows"]
    else:
        t0 = time.perf_counter()
        rows = features(model_dir, val_path, n, seed, reference, prefilter, depth, with_energy)
        settings = {"model": model_dir or "shipped", "val": val_path, "reference": reference or "training-pool",
                    "prefilter": prefilter, "n": len(rows), "seed": seed, "depth": depth, "k": k,
                    "energy": with_energy, "seconds": round(time.perf_counter() - t0, 1)}
    report = {**provenance("bench_auto_fit"), "settings": settings, **fit(rows, k, settings["energy"], settings["depth"]), "rows": rows}
    summary = {key: report[key] for key in ("n", "analogue_top1", "model_top1", "oracle_top1", "best_energy",
                                            "best_positive_weight", "energy_alone", "best_share", "model_alone",
                                            "union") if key in report}
    print(json.dumps(summary, indent=1))
    if json_out:
        write_json(json_out, report)


if __name__ == "__main__":
    main()
