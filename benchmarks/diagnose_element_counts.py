"""How many elements de novo crystals have, with the charge-aware plan masks and without,
against a test set: where the number-of-elements Wasserstein distance of
`crystalgen evaluate dng` comes from.

    python benchmarks/diagnose_element_counts.py --test ../shared/data/benchmark/mpts_52_test.csv.gz \
        [--test-limit 500] [--n 300] [--seed 0] [--model DIR] [--json docs/results/dng_element_counts.json]

Counts every generated crystal (valid or not), so the masks' effect on the plans is seen
before validity filters it; the test crystals are the seeded subset `evaluate dng
--test-limit` scores against (the file is used for scoring only).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import torch

from crystalgen.api import CrystalGenerator
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import n_elements, wasserstein
from crystalgen.evaluation.report import provenance, write_json
from diagnose_density import dng_diagnosis_args


def histogram(counts: list[int]) -> dict:
    return {"histogram": {str(k): v for k, v in sorted(Counter(counts).items())},
            "mean": round(float(np.mean(counts)), 3), "n": len(counts)}


def main() -> None:
    args = dng_diagnosis_args(__doc__)
    torch.set_num_threads(1)
    test = [n_elements(s) for s in load_structures(args.test, limit=args.test_limit, seed=args.seed).structures]
    rows = {}
    for charge_neutral in (True, False):
        gen = CrystalGenerator.from_pretrained(args.model, workers=0, charge_neutral=charge_neutral)
        results = [r for r in gen.sample(n=args.n, seed=args.seed) if r.structure is not None]
        counts = [n_elements(r.structure) for r in results]
        rows["charge_masks" if charge_neutral else "no_charge_masks"] = histogram(counts) | {
            "wdist_num_elems_all_generated": round(wasserstein(counts, test), 3),
            "mean_num_sites": round(float(np.mean([r.structure.num_sites for r in results])), 2),
        }
    out = {
        **provenance("diagnose_element_counts"),
        "model": args.model or "shipped",
        "test": histogram(test),
        "rows": rows,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
