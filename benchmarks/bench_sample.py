"""Sampling throughput of the shipped model: valid structures per second.

    python benchmarks/bench_sample.py [--n 1024] [--batch-size 256] [--device cpu] [--threads 2]

For each formula, generates N crystals in batches (KV cache + DeltaNet state, grammar
masks), decodes them to pymatgen Structures and runs the full validator set, then
reports crystals/s and valid crystals/s, with and without the validators' cost, and the
share of time spent in the model, the grammar, decoding and validation.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from crystalgen.api import CrystalGenerator, GenerationRequest
from crystalgen.sampling import generate_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--formulas", nargs="*", default=["LiFePO4", "NaCl", "SrTiO3", "Li2MnO3"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = CrystalGenerator.from_pretrained(args.model, device=args.device)
    gen.sample(n=8, formula="NaCl", seed=0)  # warm-up: caches, lazy imports
    rows = []
    for formula in args.formulas:
        request = GenerationRequest.build(formula)
        t0 = time.perf_counter()
        seqs = []
        for start in range(0, args.n, args.batch_size):
            g = torch.Generator(device=args.device).manual_seed(start)
            size = min(args.batch_size, args.n - start)
            seqs += generate_batch(gen.model, [request.prefix] * size, [request.rule] * size, 1.0, g)
        t1 = time.perf_counter()
        results = [gen._to_result(s, request, validate=False, temperature=1.0, seed=None) for s in seqs]
        results = [r for r in results if r is not None]
        t2 = time.perf_counter()
        from crystalgen.validators import validate

        valid = sum(validate(r.structure).passed for r in results)
        t3 = time.perf_counter()
        row = {
            "formula": formula,
            "n": args.n,
            "decoded": len(results),
            "valid": valid,
            "generate_s": round(t1 - t0, 2),
            "decode_trace_s": round(t2 - t1, 2),
            "validate_s": round(t3 - t2, 2),
            "crystals_per_s": round(len(results) / (t2 - t0), 1),
            "valid_per_s": round(valid / (t3 - t0), 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""),
        "batch_size": args.batch_size,
        "rows": rows,
    }
    print(f"{'formula':<10}{'valid/s':>9}{'crystals/s':>12}{'valid %':>9}")
    for r in rows:
        print(f"{r['formula']:<10}{r['valid_per_s']:>9}{r['crystals_per_s']:>12}{100 * r['valid'] / max(r['n'], 1):>8.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
