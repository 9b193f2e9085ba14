"""Throughput of the screening pipeline, candidates per second for each stage.

    python benchmarks/bench_screen.py                      # built-in config, Lennard-Jones ranking
    python benchmarks/bench_screen.py --chgnet             # CHGNet static energies instead
    python benchmarks/bench_screen.py --chgnet --relax     # CHGNet with FIRE relaxation
    python benchmarks/bench_screen.py --config examples/screen_chgnet.toml --out runs/screen_chgnet
    (an already finished --out folder is not rerun: its stored stage times are reported)

Each stage's rate is (candidates entering the stage) / (seconds spent in it, summed over
shards), so it is per worker process; the end-to-end line divides all candidates by the
wall time of the whole run (all workers together). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from crystalgen.screening.config import ScreenConfig
from crystalgen.screening.pipeline import run_screen
from crystalgen.screening.shards import plan_shards, read_shard

STAGES = ["sample", "validate", "filter", "deduplicate", "novelty", "score"]
REFERENCE = "/work/shared/data/train/pool.csv.gz"


def builtin_config(candidates: int, workers: int, chgnet: bool, relax: bool) -> ScreenConfig:
    """Three targets (a binary formula, a ternary formula, a ternary chemical system)."""
    calculator = "chgnet.model.dynamics:CHGNetCalculator" if chgnet else "ase.calculators.lj:LennardJones"
    kwargs = {"use_device": "cpu"} if chgnet else {}
    return ScreenConfig.from_dict({
        "run": {"generator": "pyxtal", "generator_options": {"max_atoms": 12}, "seed": 1,
                "shard_size": 8, "workers": workers},
        "targets": [{"formula": "NaCl", "candidates": candidates},
                    {"formula": "LiCoO2", "candidates": candidates},
                    {"chemsys": "Li-Fe-O", "candidates": candidates}],
        "filters": {"checks": ["distance", "lattice", "charge"], "max_atoms": 12},
        "novelty": {"reference": REFERENCE if Path(REFERENCE).exists() else None},
        "rank": {"by": "energy", "calculator": calculator, "calculator_kwargs": kwargs,
                 "relax": relax, "steps": 40},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="a screening TOML (default: the built-in config)")
    ap.add_argument("--candidates", type=int, default=32, help="per target, built-in config")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chgnet", action="store_true", help="rank by CHGNet energy (built-in config)")
    ap.add_argument("--relax", action="store_true", help="relax before the energy (built-in config)")
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--out", type=Path, help="run folder (default: a fresh temporary one)")
    args = ap.parse_args()

    config = (ScreenConfig.from_toml(args.config) if args.config
              else builtin_config(args.candidates, args.workers, args.chgnet, args.relax))
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_screen_"))
    t0 = time.perf_counter()
    result = run_screen(config, out, executor=args.executor, workers=args.workers, progress=True)
    wall = time.perf_counter() - t0
    if result.shards_run == 0:  # a finished run folder: report its stored stage times only
        print(f"{out} was already finished: stage times are from its shard files; no wall time")

    inputs = dict.fromkeys(STAGES, 0)
    seconds = dict.fromkeys(STAGES, 0.0)
    for spec in plan_shards(config):
        payload = read_shard(out, spec)
        for stage in STAGES:
            inputs[stage] += payload["inputs"][stage]
            seconds[stage] += payload["seconds"][stage]

    print(f"run folder: {out}; {len(result.candidates)} candidates, {result.shards_run} shards, "
          f"{args.workers} workers ({args.executor}), wall {wall:.1f} s")
    print("\n| stage | candidates in | seconds (sum over shards) | candidates/s per worker |")
    print("|---|---|---|---|")
    for stage in STAGES:
        rate = inputs[stage] / seconds[stage] if seconds[stage] > 0 else float("inf")
        print(f"| {stage} | {inputs[stage]} | {seconds[stage]:.2f} | {rate:.3g} |")
    for stage in ("merge", "export"):
        print(f"| {stage} (driver) | {len(result.candidates)} | {result.seconds[stage]:.2f} | "
              f"{len(result.candidates) / result.seconds[stage]:.3g} |")
    if result.shards_run:
        print(f"| **end to end** | {len(result.candidates)} | {wall:.2f} (wall) | {len(result.candidates) / wall:.3g} |")
    print("\nfunnel:", json.dumps(result.funnel["total"]))


if __name__ == "__main__":
    main()
