"""Benchmark of the evaluation harness on the real benchmark files.

Runs `crystalgen evaluate` as a user would and records each run's wall time next to its
JSON and PNG, for docs/evaluation.md:

  csp1   MPTS-52 test, 1,000 crystals, 1 sample: the oracle (harness self-check and
         scoring cost) and the PyXtal baseline in one run
  csp20  MPTS-52 test, 100 crystals, 20 samples: oracle + PyXtal
  perov1, carbon1   Perov-5 / Carbon-24 test, 1,000 crystals, 1 sample: oracle + PyXtal
  dng    1,000 PyXtal crystals (compositions from the training pool) against the
         MPTS-52 test set (coverage on a 500-crystal subset) and the training pool

Usage: nice python benchmarks/bench_evaluate.py --data ../shared/data --out docs/evaluation [--runs csp1,csp20,perov1,carbon1,dng]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def commands(data: Path, out: Path) -> dict[str, list[str]]:
    mpts = str(data / "benchmark" / "mpts_52_test.csv.gz")
    pool = str(data / "train" / "pool.csv.gz")
    return {
        "csp1": ["csp", "--test", mpts, "--limit", "1000", "--samples", "1", "--baseline", "oracle"],
        "csp20": ["csp", "--test", mpts, "--limit", "100", "--samples", "20", "--baseline", "oracle"],
        "perov1": ["csp", "--test", str(data / "benchmark" / "perov_5_test.csv.gz"), "--limit", "1000",
                   "--samples", "1", "--baseline", "oracle"],
        "carbon1": ["csp", "--test", str(data / "benchmark" / "carbon_24_test.csv.gz"), "--limit", "1000",
                    "--samples", "1", "--baseline", "oracle"],
        "dng": ["dng", "-n", "1000", "--baseline", "pyxtal", "--test", mpts, "--test-limit", "500", "--train", pool],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation"))
    parser.add_argument("--runs", default="csp1,csp20,perov1,carbon1,dng")
    parser.add_argument("--workers", default="2")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = commands(args.data, args.out)
    for name in args.runs.split(","):
        json_out, png_out = args.out / f"{name}.json", args.out / f"{name}.png"
        cmd = [sys.executable, "-c", "from crystalgen.cli import main; main()", "evaluate", *table[name],
               "--workers", args.workers, "--json", str(json_out), "--png", str(png_out)]
        print("$ crystalgen evaluate " + " ".join(cmd[4:]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        report = json.loads(json_out.read_text())
        report["wall_seconds"] = round(wall, 1)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{name}: {wall:.0f} s wall", flush=True)


if __name__ == "__main__":
    main()
