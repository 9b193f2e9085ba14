"""How far each part of a training corpus is from a test set, on the two de novo
distribution figures (`crystalgen evaluate dng`'s Wasserstein distances of density and of
number of elements): the floor a model that imitates that training data perfectly would hit.

    python benchmarks/dng_training_sources.py --train ../shared/data/train/pool.csv.gz \
        --test ../shared/data/benchmark/mpts_52_test.csv.gz [--test-limit 500] [--per-source 600] \
        [--group mpts_52/val,lemat/mp] [--json docs/results/dng_training_sources.json]

The test crystals are the seeded subset `evaluate dng --test-limit` scores against (the
file is used for scoring only). Each `source` of the training CSV is a seeded sample of
up to `--per-source` rows; `all` is the corpus as a whole (each source in its share of the
corpus), and each `--group` is a named union of sources (a fine-tuning subset).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from crystalgen.data.readers import iter_raw, parse_entry
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import n_elements, wasserstein
from crystalgen.evaluation.report import provenance, write_json


def figures(structures, test) -> dict:
    density = [s.density for s in structures]
    elements = [n_elements(s) for s in structures]
    return {
        "n": len(structures),
        "wdist_density": round(wasserstein(density, [s.density for s in test]), 3),
        "wdist_num_elems": round(wasserstein(elements, [n_elements(s) for s in test]), 3),
        "mean_density": round(float(np.mean(density)), 3),
        "mean_num_sites": round(float(np.mean([s.num_sites for s in structures])), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="training CSV with a `source` column")
    ap.add_argument("--test", required=True)
    ap.add_argument("--test-limit", type=int, default=500)
    ap.add_argument("--per-source", type=int, default=600)
    ap.add_argument("--group", action="append", default=[], help="comma-separated sources scored as one set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    test = load_structures(args.test, limit=args.test_limit, seed=args.seed).structures
    by_source = defaultdict(list)
    for entry in iter_raw(args.train):
        by_source[str(entry.properties.get("source", "unknown"))].append(entry)
    rng = np.random.default_rng(args.seed)
    total = sum(len(v) for v in by_source.values())
    picked, shares = {}, {}
    for source, entries in sorted(by_source.items()):
        take = rng.choice(len(entries), size=min(args.per_source, len(entries)), replace=False)
        picked[source] = [r.structure for r in map(parse_entry, (entries[int(i)] for i in take)) if r.structure]
        shares[source] = len(entries) / total

    def union(sources: list[str], weighted: bool) -> list:
        """Up to `--per-source` crystals per source; weighted: each source in its share of the corpus."""
        out = []
        for s in sources:
            k = round(len(picked[s]) * shares[s] / max(shares[x] for x in sources)) if weighted else len(picked[s])
            out += picked[s][: max(k, 1)]
        return out

    rows = {source: figures(structures, test) | {"rows_in_corpus": len(by_source[source])}
            for source, structures in picked.items()}
    rows["all"] = figures(union(sorted(picked), weighted=True), test) | {"rows_in_corpus": total}
    for group in args.group:
        sources = group.split(",")
        rows[group] = (figures(union(sources, weighted=True), test)
                       | {"rows_in_corpus": sum(len(by_source[s]) for s in sources)})
    out = {
        **provenance("dng_training_sources"),
        "n_test": len(test),
        "test_mean_density": round(float(np.mean([s.density for s in test])), 3),
        "test_mean_num_sites": round(float(np.mean([s.num_sites for s in test])), 2),
        "sources": rows,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
