"""Peak memory of ``crystalgen sample`` against the number of crystals, streamed or not.

    python benchmarks/bench_stream_memory.py [--n 500 4000] [--chunk-size 500] [--workers 0]
                                             [--json docs/results/stream_memory.json]

Runs ``crystalgen sample --formula NaCl -n N --out DIR`` under ``/usr/bin/time -v`` for each
``N``, once with ``--chunk-size`` (each chunk written out and dropped) and once with the
whole request as one chunk (every crystal held until the end, as without streaming), and
records the command's peak resident memory. Flat memory: the streamed peak does not grow
with ``N``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak resident memory in MB, wall seconds) of a command run under GNU time."""
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return kb / 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[500, 4000])
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--formula", default="NaCl")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    crystalgen = str(Path(sys.executable).with_name("crystalgen"))
    rows = []
    for n in args.n:
        for chunk in (args.chunk_size, n):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "out"
                peak, wall = peak_rss_mb([crystalgen, "sample", "--formula", args.formula, "-n", str(n), "--seed", "0",
                                          "--workers", str(args.workers), "--chunk-size", str(chunk), "--out", str(out)])
                written = len(list(out.glob("*.cif")))
            row = {"n": n, "chunk_size": chunk, "streamed": chunk < n, "written": written,
                   "peak_rss_mb": round(peak, 1), "seconds": round(wall, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {"hardware": f"{platform.processor() or platform.machine()}", "date": time.strftime("%Y-%m-%d"),
               "command": "python " + " ".join(sys.argv), "formula": args.formula, "workers": args.workers,
               "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
