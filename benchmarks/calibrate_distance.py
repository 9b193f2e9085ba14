"""Calibrate the physical distance threshold on real crystals.

For each crystal, the smallest interatomic distance divided by the sum of the two
atoms' covalent radii (ASE's Cordero radii, the ones the validator uses); writes its
percentiles and the share of crystals at or above each candidate threshold, so the
validator's ``MIN_COVALENT_RATIO`` rests on a figure anyone can regenerate:

    nice python benchmarks/calibrate_distance.py \\
        /work/shared/data/benchmark/mpts_52_test.csv.gz --limit 1500 \\
        --json-out docs/results/distance_calibration.json
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import click
import numpy as np

from crystalgen.evaluation.datasets import load_structures
from crystalgen.validators.distance import MIN_COVALENT_RATIO, min_distances

THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
PERCENTILES = (0, 0.1, 0.5, 1, 2, 5, 10, 25, 50)


@click.command()
@click.argument("path", default="/work/shared/data/benchmark/mpts_52_test.csv.gz", type=click.Path(exists=True))
@click.option("--limit", type=int, default=1500, show_default=True, help="seeded random subset (0 = all)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def main(path: str, limit: int, seed: int, workers: int, json_out: str | None) -> None:
    data = load_structures(path, limit=limit or None, seed=seed, workers=workers)
    ratios, worst = [], []
    for sid, s in zip(data.ids, data.structures):
        d_min, ratio = min_distances(s)
        if np.isfinite(ratio):
            ratios.append(ratio)
            worst.append((ratio, sid, s.composition.reduced_formula, d_min))
    r = np.array(ratios)
    worst.sort()
    result = {
        "dataset": Path(path).name,
        "n_structures": len(r),
        "n_unparsable": data.n_unparsable,
        "settings": {"limit": limit, "seed": seed, "radii": "ase.data.covalent_radii (Cordero 2008)"},
        "percentiles": {str(p): float(np.percentile(r, p)) for p in PERCENTILES},
        "fraction_at_or_above": {str(t): float(np.mean(r >= t)) for t in THRESHOLDS},
        "lowest": [{"id": i, "formula": f, "ratio": round(x, 4), "min_distance": round(d, 4)}
                   for x, i, f, d in worst[:10]],
        "threshold_in_use": MIN_COVALENT_RATIO,
        "date": date.today().isoformat(),
    }
    click.echo(json.dumps({k: result[k] for k in ("n_structures", "percentiles", "fraction_at_or_above")}, indent=1))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1) + "\n")
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
