"""Where the density Wasserstein distance of de novo crystals comes from: the plan's
volume bin (the model's choice), the cell within that bin, or the composition.

    python benchmarks/diagnose_density.py --test ../shared/data/benchmark/mpts_52_test.csv.gz
        [--test-limit 500] [--n 300] [--seed 0] [--json docs/results/dng_density_sources.json]

Samples with the API's defaults and, for the crystals that pass every check (the ones
``crystalgen evaluate dng`` scores), compares with the test densities (seeded subset,
as ``evaluate dng --test-limit``; the file is used for scoring only):

- ``as_generated``: the crystals' densities (what ``evaluate dng`` reports);
- ``plan_bin_centre``: each crystal's mass over its atoms times the geometric centre of
  its plan's volume-per-atom bin: the density the plan asked for, the cell aside;
- ``test_volume_per_atom``: mass per atom of the generated compositions over the test
  set's median volume per atom: what the composition alone contributes;

plus Wasserstein distances of volume per atom and of mass per atom on their own.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from crystalgen.api import CrystalGenerator
from crystalgen.evaluation.report import provenance, write_json
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import wasserstein

AMU_A3_TO_G_CM3 = 1.66053906660  # 1 amu / Å^3 in g/cm^3


def dng_diagnosis_args(description: str) -> argparse.Namespace:
    """The options of the de novo diagnoses: the test file and its `evaluate dng --test-limit`
    subset, crystals to sample, seed, model (None: the shipped one), JSON output."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", required=True)
    ap.add_argument("--test-limit", type=int, default=500)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", default=None)
    return ap.parse_args()


def main() -> None:
    args = dng_diagnosis_args(__doc__)
    torch.set_num_threads(1)
    test = load_structures(args.test, limit=args.test_limit, seed=0).structures
    gen = CrystalGenerator.from_pretrained(args.model, workers=0)
    valid = [r for r in gen.sample(n=args.n, seed=args.seed) if r.valid]
    mass = np.array([r.structure.composition.weight / r.structure.num_sites for r in valid])  # amu per atom
    vpa = np.array([r.structure.volume / r.structure.num_sites for r in valid])
    # the geometric centre of each plan's bin (the open-ended outer bins: their finite edge)
    planned = np.array([math.sqrt(lo * hi) if 0 < lo and math.isfinite(hi) else (hi if lo <= 0 else lo)
                        for lo, hi in (r.trace["plan"]["volume_per_atom"] for r in valid)])
    t_mass = np.array([s.composition.weight / s.num_sites for s in test])
    t_vpa = np.array([s.volume / s.num_sites for s in test])
    t_density = [s.density for s in test]
    density = {
        "as_generated": wasserstein([r.structure.density for r in valid], t_density),
        "plan_bin_centre": wasserstein(list(mass / planned * AMU_A3_TO_G_CM3), t_density),
        "test_volume_per_atom": wasserstein(list(mass / np.median(t_vpa) * AMU_A3_TO_G_CM3), t_density),
    }
    out = {
        **provenance("diagnose_density"),
        "n": args.n, "valid": len(valid), "n_test": len(test),
        "wdist_density": {k: round(v, 3) for k, v in density.items()},
        "wdist_volume_per_atom": {"as_generated": round(wasserstein(list(vpa), list(t_vpa)), 3),
                                  "plan_bin_centre": round(wasserstein(list(planned[np.isfinite(planned)]),
                                                                       list(t_vpa)), 3)},
        "wdist_mass_per_atom": round(wasserstein(list(mass), list(t_mass)), 3),
        "mean": {"density": round(float(np.mean([r.structure.density for r in valid])), 3),
                 "test_density": round(float(np.mean(t_density)), 3),
                 "volume_per_atom": round(float(vpa.mean()), 3), "test_volume_per_atom": round(float(t_vpa.mean()), 3),
                 "mass_per_atom": round(float(mass.mean()), 3), "test_mass_per_atom": round(float(t_mass.mean()), 3)},
        "cell_in_plan_bin": round(float(np.mean([r.trace["consistency"]["density"] for r in valid])), 4),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
