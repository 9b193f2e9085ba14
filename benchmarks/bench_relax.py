"""What relaxing the top analogue candidates adds: top-1 before and after a CHGNet relax and re-rank.

For every test crystal the analogue generator (corpus stripped of the test crystals by id
and by match, CDVAE StructureMatcher settings) returns its top `--top` distinct candidates;
each is relaxed (`crystalgen.analogues.relax`, CHGNet) and matched against the truth before
and after. Figures (no validity gate; `crystalgen evaluate csp --relax` gives official rates):
- top1_unrelaxed: the generator's first candidate matches;
- top1_relaxed: after relaxing the top candidates and re-ranking by energy, the first matches;
- topk_unrelaxed / topk_relaxed: any of the top candidates matches, before / after relaxing;
- relax statistics: abandoned relaxes and why, steps, seconds per relax.
The JSON is rewritten every 5 crystals (`n_done`), so a run cut short still reports its prefix.

    nice python benchmarks/bench_relax.py --test /work/runs/eval/pool_mpts52val_300.csv.gz --n 200 --top 3 \
        --json-out docs/results/relax_val200.json
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import click
from pymatgen.analysis.structure_matcher import StructureMatcher

from crystalgen.analogues.candidates import NoAnalogueError
from crystalgen.analogues.relax import RelaxConfig, Relaxer
from crystalgen.evaluation.analogue import held_out_analogues
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import MATCHER_KWARGS
from crystalgen.evaluation.report import provenance, write_json


def _fits(matcher: StructureMatcher, truth, structure) -> bool:
    try:
        return bool(matcher.fit(truth, structure))
    except Exception:
        return False


def _energy(outcome) -> float:
    return outcome.energy_after if math.isfinite(outcome.energy_after) else math.inf


@click.command()
@click.option("--test", "test_path", default="../shared/data/benchmark/mpts_52_test.csv.gz", type=click.Path(exists=True))
@click.option("--reference", default=None, help="Analogue corpus (default: the shipped pool).")
@click.option("--n", "n_test", type=int, default=200, show_default=True)
@click.option("--top", type=int, default=3, show_default=True, help="Candidates relaxed per test crystal.")
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--json-out", type=click.Path(), default=None)
def main(test_path: str, reference: str | None, n_test: int, top: int, steps: int, json_out: str | None) -> None:
    test = load_structures(test_path, limit=n_test, seed=0, workers=2)
    generator, settings = held_out_analogues(reference, test.ids, test.structures, workers=2)
    relaxer = Relaxer(config=RelaxConfig(top=top, steps=steps))
    matcher = StructureMatcher(**MATCHER_KWARGS)
    counts = Counter()
    reasons: Counter = Counter()
    relax_seconds, relax_steps, n_relaxed = 0.0, 0, 0
    t0 = time.perf_counter()

    def report(n_done: int) -> dict:
        n = max(n_done, 1)
        return {
            **provenance("bench_relax"),
            "test": test_path, "n_test": len(test.structures), "n_done": n_done, "top": top,
            "relax": {"calculator": "CHGNet 0.4.2", "steps": steps, "fmax": relaxer.config.fmax},
            "analogues": settings,
            "fraction_with_analogue": counts["with_analogue"] / n,
            "top1_unrelaxed": counts["top1_unrelaxed"] / n, "top1_relaxed": counts["top1_relaxed"] / n,
            f"top{top}_unrelaxed": counts["topk_unrelaxed"] / n, f"top{top}_relaxed": counts["topk_relaxed"] / n,
            "rerank_changed_top1": counts["rerank_changed_top1"] / n,
            "n_relaxes": n_relaxed, "abandoned": dict(reasons), "mean_steps": relax_steps / max(n_relaxed, 1),
            "seconds_per_relax": relax_seconds / max(n_relaxed, 1), "seconds_total": round(time.perf_counter() - t0, 1),
        }

    for done, truth in enumerate(test.structures, 1):
        if json_out and done % 5 == 1:  # figures so far (a seeded prefix of the subset), in case the run is cut short
            write_json(json_out, report(done - 1))
        try:
            found = generator.predict_structure(truth.composition, n=top, validate=False)
        except (NoAnalogueError, ValueError):
            continue
        counts["with_analogue"] += 1
        outcomes = []
        for result in found:
            t = time.perf_counter()
            outcomes.append(relaxer.relax(result.structure))
            relax_seconds += time.perf_counter() - t
        before = [_fits(matcher, truth, r.structure) for r in found]
        after = [_fits(matcher, truth, o.structure) for o in outcomes]
        order = sorted(range(len(outcomes)), key=lambda i: (_energy(outcomes[i]), i))
        counts["top1_unrelaxed"] += before[0]
        counts["top1_relaxed"] += after[order[0]]
        counts["topk_unrelaxed"] += any(before)
        counts["topk_relaxed"] += any(after)
        counts["rerank_changed_top1"] += order[0] != 0
        for o in outcomes:
            n_relaxed += 1
            relax_steps += o.steps
            if not o.relaxed:
                reasons[(o.reason or "").split(" after ")[0].split(" (")[0]] += 1
    result = report(len(test.structures))
    click.echo(json.dumps(result, indent=2))
    if json_out:
        write_json(json_out, result)


if __name__ == "__main__":
    main()
