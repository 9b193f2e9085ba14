"""De novo and chemical-system requests: pass rate and valid crystals per second, with the
charge-aware plans and the volume guard on ("after") and off ("before", the plan as trained).

    python benchmarks/bench_dng_requests.py [--n 256] [--model DIR] [--requests ...] [--settings ...]
        [--json docs/results/dng_requests.json]

Each request (``--chemsys Li-Fe-O``, ``--elements Mg,Si,O``, plain de novo) is sampled
with every setting in turn, in one process (``workers=0``), each after a small warm-up
(grammar caches, lazy imports), seed 0, the distance guard at its defaults. Valid = every
validator check passed. Rates are given per wall second and per CPU second of the process
(the second is the fair comparison on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from crystalgen.api import CrystalGenerator
from crystalgen.evaluation.report import provenance

REQUESTS = {"Li-Fe-O": {"chemsys": "Li-Fe-O"}, "Mg,Si,O": {"elements": ["Mg", "Si", "O"]}, "de novo": {}}
SETTINGS = {
    "before": {"charge_neutral": False, "volume_guard": False},
    "after": {},
    "after, intermetallic allowed": {"allow_intermetallic": True},
}


def _rate(results, key: str) -> float | None:
    verdicts = [r.report["checks"][key]["pass"] for r in results if r.report and key in r.report["checks"]]
    return round(sum(bool(v) for v in verdicts) / len(verdicts), 4) if verdicts else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--requests", nargs="*", default=list(REQUESTS), choices=list(REQUESTS))
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = CrystalGenerator.from_pretrained(args.model, workers=0)
    rows = []
    for name in args.requests:
        for setting in args.settings:
            options = SETTINGS[setting]
            gen.sample(n=8, seed=123, **REQUESTS[name], **options)  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            results = gen.sample(n=args.n, seed=0, **REQUESTS[name], **options)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            valid = sum(bool(r.valid) for r in results)
            density = [r.trace["consistency"]["density"] for r in results if r.trace]
            row = {
                "request": name, "setting": setting, "options": options, "n": args.n, "crystals": len(results),
                "valid": valid, "pass_rate": round(valid / max(len(results), 1), 4),
                "compositional_validity": _rate(results, "charge"), "physical_validity": _rate(results, "distance"),
                "plan_density_agreement": round(sum(density) / len(density), 4) if density else None,
                "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                "valid_per_s": round(valid / wall, 2), "valid_per_cpu_s": round(valid / cpu, 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        **provenance("bench_dng_requests"),
        "settings": {"torch_threads": 1, "processes": 1, "seed": 0, "n": args.n, "workers": 0, "min_distance": gen.min_distance, "variants": {k: SETTINGS[k] for k in args.settings}},
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
