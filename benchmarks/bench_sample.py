"""Sampling throughput of the shipped model: valid structures per second, end to end.

    python benchmarks/bench_sample.py [--n 4096] [--batch-size 512] [--workers N] [--device cpu]
                                      [--min-distance 0.5]

For each formula, times ``CrystalGenerator.sample(n, formula=..., seed=0)`` exactly as a
user calls it: grammar-constrained generation with the decoding cache and continuous
batching, decoding to pymatgen Structures, the full validator set (distances, lattice,
SMACT charge balance, spglib at two tolerances, composition) and the reasoning trace.
Valid = every validator check passed. The worker pool is started before the clock runs
(it lives as long as the generator, like in a screening pipeline).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from crystalgen.api import DEFAULT_BATCH_SIZE, CrystalGenerator
from crystalgen.validators.distance import MIN_DISTANCE_A


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="sampling processes (default: one per core on a CPU)")
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--formulas", nargs="*", default=["NaCl", "SrTiO3", "Li2MnO3", "LiFePO4"])
    ap.add_argument("--min-distance", type=float, default=MIN_DISTANCE_A,
                    help="the sampler's distance guard in Å (0: the model unguarded)")
    ap.add_argument("--covalent-ratio", type=float, default=0.65,
                    help="the guard's physical part: each pair this fraction of its covalent radii sum apart (0: off)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    gen = CrystalGenerator.from_pretrained(args.model, device=args.device, workers=args.workers,
                                           min_distance=args.min_distance)
    # warm-up: lazy imports, caches, and the worker pool (two shards)
    gen.sample(n=2 * 2 * args.batch_size if gen.workers > 1 else 8, formula="NaCl", seed=123,
               batch_size=args.batch_size)
    rows = []
    for formula in args.formulas:
        t0 = time.perf_counter()
        results = gen.sample(n=args.n, formula=formula,
                             options=gen.options(seed=0, batch_size=args.batch_size, covalent_ratio=args.covalent_ratio))
        dt = time.perf_counter() - t0
        valid = sum(bool(r.valid) for r in results)
        row = {
            "formula": formula,
            "n": args.n,
            "crystals": len(results),
            "valid": valid,
            "seconds": round(dt, 2),
            "crystals_per_s": round(len(results) / dt, 1),
            "valid_per_s": round(valid / dt, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    gen.close()
    summary = {
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device {args.device}" + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""),
        "workers": gen.workers,
        "batch_size": args.batch_size,
        "min_distance": args.min_distance,
        "covalent_ratio": args.covalent_ratio,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
        "rows": rows,
    }
    print(f"{'formula':<10}{'valid/s':>9}{'crystals/s':>12}{'valid %':>9}   (workers: {gen.workers}, "
          f"min distance {args.min_distance} Å)")
    for r in rows:
        print(f"{r['formula']:<10}{r['valid_per_s']:>9}{r['crystals_per_s']:>12}{100 * r['valid'] / max(r['crystals'], 1):>8.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
