"""A digest of exactly what the shipped model samples for fixed seeds.

    python benchmarks/sampling_fingerprint.py [--n 64] [--workers 0 2] [--model DIR] [--json docs/results/sampling_fingerprint.json]

Samples a few requests (formulas, a chemical system, ``predict_structures``) with
``workers=0`` and ``workers=2`` and hashes each crystal's lattice, species, fractional
coordinates (float bits), log-likelihood and validation report (``digests``; without the
reports: ``structure_digests``). A refactor of the sampler that claims "no
behaviour change" must leave every digest identical on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform

import numpy as np
import torch

from crystalgen.api import CrystalGenerator


def digest(results, reports: bool = True) -> str:
    """SHA-256 over the exact float bits of every result, in order (with ``reports=False``
    the crystals and log-likelihoods alone, without the validators' measured values)."""
    h = hashlib.sha256()
    for r in results:
        if r is None:
            h.update(b"none")
            continue
        s = r.structure
        h.update(np.asarray(s.lattice.matrix, np.float64).tobytes())
        h.update(",".join(site.species_string for site in s).encode())
        h.update(np.asarray(s.frac_coords, np.float64).tobytes())
        h.update(np.float64(r.log_likelihood).tobytes())
        if reports:
            h.update(json.dumps(r.report, sort_keys=True, default=str).encode() if r.report else b"-")
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="worker counts to run")
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None, help="a saved model directory (default: the shipped model)")
    args = ap.parse_args()
    out: dict[str, str] = {}
    structures: dict[str, str] = {}
    for workers in args.workers:
        gen = CrystalGenerator.from_pretrained(args.model, workers=workers, strategy="model")
        runs = {}
        for formula in ("NaCl", "SrTiO3", "LiFePO4"):
            runs[formula] = gen.sample(n=args.n, formula=formula, seed=7, batch_size=32)
        runs["chemsys Li-Fe-O"] = gen.sample(n=args.n, chemsys="Li-Fe-O", seed=3, batch_size=32)
        runs["only_valid GaN"] = gen.sample(n=16, formula="GaN", seed=5, only_valid=True)
        runs["T0 NaCl"] = gen.sample(n=4, formula="NaCl", seed=1, temperature=0.0)
        runs["unguarded MoS2"] = gen.sample(n=16, formula="MoS2", seed=2, min_distance=0.0)
        per = gen.predict_structures(["NaCl", "SrTiO3", "Li4Fe4P4O16", "Xe9"], n=8, seed=11, batch_size=16)
        runs["predict_structures"] = [r for rs in per for r in rs]
        runs["predict_structure"] = gen.predict_structure("Ga2N2", n=8, seed=4)
        gen.close()
        for name, results in runs.items():
            out[f"w{workers}/{name}"] = digest(results)
            structures[f"w{workers}/{name}"] = digest(results, reports=False)
        print(json.dumps({k: v for k, v in out.items() if k.startswith(f"w{workers}/")}, indent=1), flush=True)
    summary = {"hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
               "n": args.n, "model": args.model or "shipped", "digests": out, "structure_digests": structures}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
