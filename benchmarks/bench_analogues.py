"""Analogue search speed and volume-rule accuracy on the shipped reference pool.

Queries: the compositions of a benchmark CSV (default: the first N of MPTS-52 test).
Times (1) loading the cached index, (2) candidate ranking (`find_candidates`) per query,
(3) ranking plus building the top candidate's structure. Volume rule: on a seeded 10%
of the pool held out from the fit, for every held-out entry whose best other analogue
(known compounds excluded) exists, the relative error |V_pred - V_true| / V_true of
(a) the analogue's unscaled volume, (b) the ratio rule (`VolumeRule.scale`) and (c) the
rule's absolute volume, all per atom.

    nice python benchmarks/bench_analogues.py --n 300 --volume-n 300 --json-out docs/results/analogue_speed.json
"""

from __future__ import annotations

import json
import time

import click
import numpy as np

from crystalgen.analogues.candidates import build_structure, find_candidates
from crystalgen.analogues.index import load_index
from crystalgen.analogues.volume import VolumeRule
from crystalgen.analogues.substitution import substitution_table
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.report import provenance, write_json


def _volume_errors(index, n_eval: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    held = rng.random(len(index)) < 0.1
    fit_part, eval_part = index.subset(~held), index.subset(held)
    rule = VolumeRule.fit(fit_part)
    errors = {"unscaled": [], "ratio_rule": [], "absolute_rule": []}
    for i in rng.permutation(len(eval_part))[:n_eval]:
        truth = eval_part.structure(int(i))
        found = [c for c in find_candidates(fit_part, truth.composition) if not c.known]
        if not found:
            continue
        v_true = truth.volume
        unscaled = build_structure(fit_part, found[0], None)
        scaled = build_structure(fit_part, found[0], rule)
        counts = {}
        for site in truth:
            counts[site.specie.Z] = counts.get(site.specie.Z, 0) + 1
        absolute = rule.volume(counts)
        for key, v in (("unscaled", unscaled.volume), ("ratio_rule", scaled.volume), ("absolute_rule", absolute)):
            if np.isfinite(v):
                errors[key].append(abs(v - v_true) / v_true)
    return {k: {"n": len(v), "median_rel_error": float(np.median(v)), "mean_rel_error": float(np.mean(v))}
            for k, v in errors.items() if v}


@click.command()
@click.option("--queries", "query_path", default="/work/shared/data/benchmark/mpts_52_test.csv.gz",
              type=click.Path(exists=True))
@click.option("--n", "n_queries", type=int, default=2000, show_default=True)
@click.option("--reference", default="training-pool", show_default=True)
@click.option("--volume-n", type=int, default=1000, show_default=True)
@click.option("--json-out", type=click.Path(), default=None)
def main(query_path: str, n_queries: int, reference: str, volume_n: int, json_out: str | None) -> None:
    t0 = time.perf_counter()
    index = load_index(reference)
    t_load = time.perf_counter() - t0
    substitution_table()
    queries = [s.composition for s in load_structures(query_path, limit=n_queries, seed=0, workers=2).structures]
    t0 = time.perf_counter()
    found = [find_candidates(index, q) for q in queries]
    t_rank = time.perf_counter() - t0
    t0 = time.perf_counter()
    found_again = [find_candidates(index, q) for q in queries]
    t_rank_warm = time.perf_counter() - t0
    rule = VolumeRule.fit(index)
    t0 = time.perf_counter()
    for cands in found_again:
        if cands:
            build_structure(index, cands[0], rule)
    t_build = time.perf_counter() - t0
    result = {
        **provenance("bench_analogues"),
        "reference": reference, "n_reference": len(index), "queries": query_path, "n_queries": len(queries),
        "seconds_load_index": round(t_load, 3),
        "queries_per_minute_cold": round(60 * len(queries) / t_rank),
        "queries_per_minute_warm": round(60 * len(queries) / t_rank_warm),
        "top1_builds_per_minute": round(60 * sum(1 for c in found if c) / max(t_build, 1e-9)),
        "fraction_with_analogue": sum(1 for c in found if c) / len(found),
        "mean_candidates": float(np.mean([len(c) for c in found])),
        "volume": _volume_errors(index, volume_n, 0),
    }
    click.echo(json.dumps(result, indent=2))
    if json_out:
        write_json(json_out, result)


if __name__ == "__main__":
    main()
