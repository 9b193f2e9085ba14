"""What each ranking term adds to analogue-guided CSP, on one fixed subset of test crystals.

For every test crystal (a seeded subset of MPTS-52 test by default) the top `--depth`
candidates of the plain ranking are built once and matched against the truth (CDVAE
StructureMatcher settings; corpus stripped of the test crystals by id and by match), and
CHGNet's single-point energy per atom is computed for each. Each ranking below then
re-orders the same candidates; the figure is the fraction of test crystals whose top-1
(top-K) candidate matches (no validity gate: `crystalgen evaluate csp` gives the official
rates). Rankings:
- plain: known compounds, then substitution log-probability, then e_above_hull;
- mendeleev: the issue's baseline order (least total Mendeleev-number difference);
- z1_first: plain, with candidates whose primitive cell has the target's atom count first;
- prototype: plain log p + log(number of corpus entries of that anonymous formula and space group);
- chgnet(w): log p - w (E - E_min), E = CHGNet energy per atom (eV/atom).

    nice python benchmarks/bench_analogue_ranking.py --n 300 --json-out docs/results/analogue_ranking.json
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import click
import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element

from crystalgen.analogues.candidates import build_structure, find_candidates
from crystalgen.analogues.energy import EnergyRanker
from crystalgen.analogues.exclusion import exclude_test_crystals
from crystalgen.analogues.index import load_index
from crystalgen.analogues.volume import VolumeRule
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.report import provenance, write_json
from crystalgen.evaluation.metrics import MATCHER_KWARGS


def _mendeleev_cost(c) -> float:
    return sum(abs(Element(a).mendeleev_no - Element(b).mendeleev_no) for a, b in c.mapping.pairs)


@click.command()
@click.option("--test", "test_path", default="../shared/data/benchmark/mpts_52_test.csv.gz", type=click.Path(exists=True),
              help="Crystals to predict (a seeded subset of --n); they are removed from the corpus first.")
@click.option("--reference", default="training-pool", show_default=True)
@click.option("--n", "n_test", type=int, default=300, show_default=True)
@click.option("--depth", type=int, default=20, show_default=True)
@click.option("--energy/--no-energy", default=True, show_default=True)
@click.option("--json-out", type=click.Path(), default=None)
def main(test_path: str, reference: str, n_test: int, depth: int, energy: bool, json_out: str | None) -> None:
    test = load_structures(test_path, limit=n_test, seed=0, workers=2)
    index, exclusion = exclude_test_crystals(load_index(reference), test.ids, test.structures, MATCHER_KWARGS, workers=2)
    rule = VolumeRule.fit(index)
    matcher = StructureMatcher(**MATCHER_KWARGS)
    ranker = EnergyRanker()
    proto = Counter((tuple(sorted(index.counts[i])), int(index.spacegroup[i])) for i in range(len(index)))
    rows = []
    t0 = time.perf_counter()
    for truth in test.structures:
        cands = find_candidates(index, truth.composition)
        # the baseline order may pick candidates outside the plain top `depth`: include its top ones too
        by_mendeleev = sorted(cands, key=lambda c: (_mendeleev_cost(c), c.entry))[:depth]
        pool = list({c.entry: c for c in cands[:depth] + by_mendeleev}.values())
        structures = [build_structure(index, c, rule) for c in pool]
        matched = []
        for s in structures:
            try:
                matched.append(bool(matcher.fit(truth, s)))
            except Exception:
                matched.append(False)
        energies = ranker.energies(structures) if energy else [0.0] * len(pool)
        rows.append((pool, matched, energies, len(truth)))
    seconds = time.perf_counter() - t0

    def rate(order_fn, k: int = 1) -> float:
        hits = 0
        for pool, matched, energies, n_atoms in rows:
            if pool:
                order = order_fn(pool, energies, n_atoms)
                hits += any(matched[i] for i in order[:k])
        return hits / len(rows)

    plain = lambda pool, e, n: list(range(len(pool)))  # noqa: E731 (find_candidates' order, kept by dict)
    plain_sorted = lambda pool, e, n: sorted(range(len(pool)), key=lambda i: (not pool[i].known, -pool[i].mapping.log_prob if not pool[i].known else 0, i))  # noqa: E731
    mendeleev = lambda pool, e, n: sorted(range(len(pool)), key=lambda i: (_mendeleev_cost(pool[i]), pool[i].entry))  # noqa: E731

    def z1_first(pool, e, n):
        return sorted(plain(pool, e, n), key=lambda i: index.site_offsets[pool[i].entry + 1] - index.site_offsets[pool[i].entry] != n)

    def prototype(pool, e, n):
        score = [c.mapping.log_prob + math.log(proto[(tuple(sorted(index.counts[c.entry])), c.spacegroup)]) for c in pool]
        return sorted(range(len(pool)), key=lambda i: (not pool[i].known, -score[i]))

    def chgnet(w):
        def order(pool, energies, n):
            finite = [x for x in energies if math.isfinite(x)]
            lo = min(finite) if finite else 0.0
            score = [c.mapping.log_prob - w * (x - lo) if math.isfinite(x) else -math.inf for c, x in zip(pool, energies)]
            return sorted(range(len(pool)), key=lambda i: (-score[i], i))
        return order

    rankings = {"plain": plain_sorted, "mendeleev": mendeleev, "z1_first": z1_first, "prototype": prototype}
    if energy:
        rankings.update({f"chgnet_w{w:g}": chgnet(w) for w in (1, 3, 10, 30, 100)})
    result = {
        **provenance("bench_analogue_ranking"),
        "test": test_path, "n_test": len(test.structures), "reference": reference, "depth": depth,
        "exclusion": exclusion.as_dict(), "seconds_build_match_energy": round(seconds, 1),
        "fraction_with_analogue": sum(1 for r in rows if r[0]) / len(rows),
        "oracle_in_pool": sum(any(r[1]) for r in rows) / len(rows),
        "top1": {name: rate(fn) for name, fn in rankings.items()},
        "top5": {name: rate(fn, 5) for name, fn in rankings.items()},
    }
    click.echo(json.dumps(result, indent=2))
    if json_out:
        write_json(json_out, result)


if __name__ == "__main__":
    main()
