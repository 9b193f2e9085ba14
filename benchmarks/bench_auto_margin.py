"""Fit the margin of `strategy="auto"` (`crystalgen.auto_ranking`) on validation crystals.

For each validation crystal, K = 1: the analogue side's top candidate (the corpus minus the
validation crystals, ranked with the model as `auto` does) and the model's own top candidate
(the same samples `auto` draws, same seed), each with the model's plan log-prob, each scored
as `crystalgen evaluate csp` scores (CDVAE StructureMatcher, validity rule). `auto` with
margin d takes the model's candidate when its plan log-prob beats the analogue's by more than
d; the rate of every d on a grid is computed from these features, nothing is re-generated.

Tuning sets (never test crystals):
- `--val FILE`: a validation split (e.g. ../shared/data/benchmark/perov_5_val.csv.gz), a seeded `--n`;
- `--pool FILE`: the pool's MPTS-52 validation rows that the model's training split holds out
  (`bench_model_ranking.tuning_set`).

    nice python benchmarks/bench_auto_margin.py --model /work/runs/perov5_ft/best --val \
        ../shared/data/benchmark/perov_5_val.csv.gz --reference ../shared/data/train/perov_5_train.csv.gz \
        --prefilter 50 --n 200 --features-out docs/results/auto_margin/perov5_val.json
    nice python benchmarks/bench_auto_margin.py ... --val ../shared/data/benchmark/perov_5_test.csv.gz --test \
        --features-out docs/results/auto_margin/perov5_test200.json          # the same, scored only
    nice python benchmarks/bench_auto_margin.py --pool ../shared/data/train/pool.csv.gz --n 253 \
        --features-out docs/results/auto_margin/mpts52_pool_val.json
    python benchmarks/bench_auto_margin.py --features-in docs/results/auto_margin/perov5_val.json \
        --features-in docs/results/auto_margin/perov5_test200.json --json-out docs/results/auto_margin/perov5_fit.json \
        --margin-out <fine-tuned model dir>/auto_ranking.json

The fitted margin maximises the tuning sets' mean rate smoothed over +-2 nats (the curves are flat
over wide ranges, and a single crystal should not pick the point); ties go to the smaller |margin|.
`--margin-out DIR/auto_ranking.json` writes it where `CrystalGenerator.from_pretrained(DIR)` reads it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import click
import numpy as np

from crystalgen.analogues.generator import AnalogueConfig
from crystalgen.analogues.model_score import score_structures
from crystalgen.api import CrystalGenerator
from crystalgen.auto_ranking import AutoRanking, plan_log_prob
from crystalgen.evaluation.analogue import held_out_analogues
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.report import write_json
from crystalgen.evaluation.scoring import score_csp_item
from crystalgen.generation.plan_search import best_by_plan

GRID = [-math.inf] + [round(x, 2) for x in np.arange(-20.0, 20.01, 0.5)] + [math.inf]
WINDOW = 2.0


def features(model_dir: str | None, truths, ids, reference: str | None, prefilter: int, seed: int) -> list[dict]:
    """Per crystal: both sides' plan log-prob and whether each matches (None: no candidate)."""
    plain, _ = held_out_analogues(reference, ids, truths, AnalogueConfig(prefilter=prefilter), workers=1)
    gen = CrystalGenerator.from_pretrained(model_dir, reference=plain.index,
                                           analogue_config=AnalogueConfig(prefilter=prefilter))
    comps = [t.composition for t in truths]
    analogue = gen.analogues().predict_structures(comps, n=1, validate=False)
    own = gen.predict_structures(comps, n=1, strategy="model", seed=seed, validate=False)
    own = [best_by_plan(gen.model, m, 1) if m else m for m in own]  # scored as `auto` scores them
    out = []
    for truth, a, m in zip(truths, analogue, own):
        row = {}
        for side, found in (("analogue", a), ("model", m)):
            top = found[0] if found else None
            row[f"{side}_plan_log_prob"] = None if top is None else plan_log_prob(top)
            row[f"{side}_match"] = None if top is None else score_csp_item((truth, [top.structure], False)).best_rms is not None
            score = score_structures(gen.model, [top.structure])[0] if top is not None else None
            for key in ("value_log_lik", "n_plan_tokens", "n_values"):
                row[f"{side}_{key}"] = None if score is None else getattr(score, key)
        out.append(row)
    return out


def rate(rows: list[dict], margin: float) -> float:
    """Top-1 match rate of `auto` with this margin."""
    hits = 0
    for r in rows:
        if r["analogue_match"] is None:
            hits += bool(r["model_match"])
            continue
        lm, la = r["model_plan_log_prob"], r["analogue_plan_log_prob"]
        model_first = r["model_match"] is not None and lm is not None and la is not None and lm - la > margin
        hits += bool(r["model_match"] if model_first else r["analogue_match"])
    return hits / len(rows) if rows else 0.0


def curve(rows: list[dict]) -> dict[str, float]:
    return {str(m): rate(rows, m) for m in GRID}


@click.command()
@click.option("--model", "model_dir", default=None, help="Model directory (default: the shipped model).")
@click.option("--val", "val_path", default=None, help="Validation split file (CSV.gz with cif).")
@click.option("--pool", "pool_path", default=None, help="The pool: its held-out MPTS-52 validation rows.")
@click.option("--reference", default=None, help="Analogue corpus (default: the shipped pool); the tuning crystals are removed.")
@click.option("--prefilter", type=int, default=0)
@click.option("--n", "n", type=int, default=150)
@click.option("--seed", type=int, default=0)
@click.option("--test", "is_test", is_flag=True,
              help="--val is a test file: its features are reported at the margin fitted on the tuning sets, never fitted.")
@click.option("--features-out", default=None)
@click.option("--features-in", multiple=True)
@click.option("--json-out", default=None)
@click.option("--margin-out", default=None, help="Write the fitted margin here (auto_ranking.json of a model directory).")
def main(model_dir, val_path, pool_path, reference, prefilter, n, seed, is_test, features_out, features_in,
         json_out, margin_out) -> None:
    sets: dict[str, dict] = {}
    if val_path or pool_path:
        t0 = time.perf_counter()
        if val_path:
            data = load_structures(val_path, limit=n, seed=seed, workers=1)
            ids, truths = list(data.ids), list(data.structures)
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_model_ranking import tuning_set

            ids, truths = tuning_set(pool_path, n, 0.05, 0)
        rows = features(model_dir, truths, ids, reference, prefilter, seed)
        name = Path(val_path or pool_path).name
        sets[name] = {"settings": {"model": model_dir or "shipped", "tuning": val_path or f"{pool_path} (mpts_52/val "
                                   "rows held out of the model's training split)", "reference": reference or "training-pool",
                                   "prefilter": prefilter, "n": len(rows), "seed": seed,
                                   "role": "test" if is_test else "tuning",
                                   "seconds": round(time.perf_counter() - t0, 1)}, "rows": rows}
        if features_out:
            Path(features_out).write_text(json.dumps(sets[name]))
    for path in features_in:
        data = json.loads(Path(path).read_text())
        sets[Path(path).stem] = data
    summary = {}
    for name, data in sets.items():
        rows = data["rows"]
        c = curve(rows)
        summary[name] = {"settings": data["settings"], "n": len(rows), "analogue": c[str(math.inf)],
                         "model": rate(rows, -math.inf) if all(r["model_match"] is not None for r in rows) else None,
                         "model_top1": sum(bool(r["model_match"]) for r in rows) / len(rows),
                         "analogue_top1": sum(bool(r["analogue_match"]) for r in rows) / len(rows),
                         "curve": c}
    tuning = [d for d in sets.values() if d["settings"].get("role", "tuning") == "tuning"]
    mean = {str(m): float(np.mean([rate(d["rows"], m) for d in tuning])) for m in GRID}
    finite = [m for m in GRID if math.isfinite(m)]
    smooth = {m: float(np.mean([mean[str(x)] for x in finite if abs(x - m) <= WINDOW])) for m in finite}
    best = max(finite, key=lambda m: (round(smooth[m], 9), -abs(m)))
    report = {"sets": summary, "mean_curve": mean, "smoothing_window": WINDOW, "best_margin": best,
              "best_mean_rate": mean[str(best)], "tuning_sets": [d["settings"]["tuning"] for d in tuning],
              "at_best": {name: rate(d["rows"], best) for name, d in sets.items()},
              "default_margin": AutoRanking().margin,
              "at_default": {name: rate(d["rows"], AutoRanking().margin) for name, d in sets.items()}}
    for name, s in summary.items():
        print(f"{name}: n={s['n']} analogue top-1 {s['analogue_top1']:.3f} model top-1 {s['model_top1']:.3f} "
              f"auto at best margin {best}: {report['at_best'][name]:.3f}")
    print(f"best margin {best}: mean rate {mean[str(best)]:.4f}")
    if json_out:
        write_json(json_out, report)
    if margin_out:
        Path(margin_out).write_text(json.dumps({"margin": best, "fitted_on": report["tuning_sets"]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
