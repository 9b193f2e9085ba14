"""Plan search for the model alone: does the best of N samples by plan log-probability beat the first?

On the tuning crystals of `bench_model_ranking.py` (pool MPTS-52 validation rows the model
did not train on), the model samples N candidates per composition (`predict_structures(...,
strategy="model")`, seed 0, the cell content given); rows: the first sample (plain
sampling, K=1), the best of the N by teacher-forced plan log-prob (`generation.plan_search`),
and any of the N (the ceiling). Figures: match rate (CDVAE StructureMatcher settings, no
validity gate) and the fraction whose space group (spglib, symprec 0.1) is the truth's.

    nice python benchmarks/bench_plan_search.py --model MODEL_DIR --n 100 --samples 8 \\
        --json-out docs/results/plan_search_val100.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalgen.api import CrystalGenerator
from crystalgen.evaluation.metrics import MATCHER_KWARGS
from crystalgen.evaluation.report import provenance, write_json
from crystalgen.generation.plan_search import best_by_plan

sys.path.insert(0, str(Path(__file__).parent))
from bench_model_ranking import _training, tuning_set  # noqa: E402 (the same tuning crystals)


def _spacegroup(structure) -> int:
    try:
        return SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()
    except Exception:
        return 0


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True))
@click.option("--pool", default="../shared/data/train/pool.csv.gz", type=click.Path(exists=True), show_default=True)
@click.option("--n", "n_tune", type=int, default=100, show_default=True)
@click.option("--samples", type=int, default=8, show_default=True)
@click.option("--json-out", type=click.Path(), default=None)
def main(model_dir: str, pool: str, n_tune: int, samples: int, json_out: str | None) -> None:
    torch.set_num_threads(1)
    _, truths = tuning_set(pool, n_tune, 0.05, 0)
    gen = CrystalGenerator.from_pretrained(model_dir, workers=0)
    t0 = time.perf_counter()
    drawn = gen.predict_structures([t.composition for t in truths], n=samples, seed=0, strategy="model",
                                   validate=False)
    seconds_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    best = [best_by_plan(gen.model, results, 1) if results else [] for results in drawn]
    seconds_rank = time.perf_counter() - t0
    matcher = StructureMatcher(**MATCHER_KWARGS)

    def fits(truth, s) -> bool:
        try:
            return bool(matcher.fit(truth, s))
        except Exception:
            return False

    rows = {"first": [r[:1] for r in drawn], "best_by_plan": best, f"any_of_{samples}": drawn}
    table = {}
    for name, chosen in rows.items():
        match = sum(any(fits(t, r.structure) for r in c) for t, c in zip(truths, chosen))
        sg = sum(any(_spacegroup(r.structure) == _spacegroup(t) for r in c) for t, c in zip(truths, chosen))
        table[name] = {"match_rate": match / len(truths), "spacegroup_rate": sg / len(truths)}
    result = {
        **provenance("bench_plan_search"), "model": model_dir, "model_training": _training(model_dir),
        "tuning_set": f"{pool}: source mpts_52/val, is_validation(id, 0.05, seed 0), seeded {n_tune}",
        "n_test": len(truths), "n_samples": samples, "rows": table,
        "seconds_sample": round(seconds_sample, 1), "seconds_rank": round(seconds_rank, 1),
    }
    click.echo(json.dumps(result, indent=2))
    if json_out:
        write_json(json_out, result)
    gen.close()


if __name__ == "__main__":
    main()
