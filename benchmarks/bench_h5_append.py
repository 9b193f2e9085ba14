"""What the crash-safe ``.h5`` append costs against appending in place, per 4096-crystal chunk.

    python benchmarks/bench_h5_append.py [--chunk 4096] [--chunks 6] [--json docs/results/h5_append.json]

Samples 32 NaCl/SrTiO3/LiFePO4 crystals with the shipped model (validated, so traces and
reports are full size), tiles their rows to chunks of ``--chunk`` crystals, and appends
``--chunks`` chunks to two files: in place (``h5py.File(path, "a")``, what a killed run
can corrupt) and through ``crystalgen.io``'s spare-and-replace appender (what
``crystalgen sample --out x.h5`` does: catch the spare up with the previous chunk, add
this one, fsync, hard-link, rename). A chunk's rows (CIF text, JSON traces and reports)
are computed once: that cost is the same for both and is reported separately
(``rows_s_per_chunk``, extrapolated from the 32 crystals).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from crystalgen.api import CrystalGenerator, GenerationRequest, SamplingOptions
from crystalgen.io import _h5_columns, _h5_extend, _H5Appender


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    gen = CrystalGenerator.from_pretrained(workers=0)
    opts = SamplingOptions(seed=0, batch_size=16, validate=True, progress=False)
    results = [r for f in ("NaCl", "SrTiO3", "LiFePO4") for r in gen.generate(GenerationRequest.build(f), 11, options=opts)][:32]
    t0 = time.perf_counter()
    columns, sites = _h5_columns(results)
    rows_seconds = (time.perf_counter() - t0) * args.chunk / len(results)
    reps = -(-args.chunk // len(results))
    chunk_sites = np.tile(sites, reps)[: args.chunk]
    chunk_columns = {}
    for name, data in columns.items():
        if name in ("species", "frac_coords"):
            data = np.concatenate([data] * reps)[: int(chunk_sites.sum())]
        else:
            data = np.concatenate([data] * reps)[: args.chunk]
        chunk_columns[name] = data

    rows = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        in_place, safe = Path(tmp) / "in_place.h5", Path(tmp) / "safe.h5"
        appender = _H5Appender(safe)
        for k in range(args.chunks):
            t0 = time.perf_counter()
            with h5py.File(in_place, "a") as f:
                _h5_extend(f, chunk_columns, chunk_sites)
            t_in_place = time.perf_counter() - t0
            t0 = time.perf_counter()
            if k == 0:
                with h5py.File(safe, "w") as f:
                    _h5_extend(f, chunk_columns, chunk_sites)
            else:
                appender.append(chunk_columns, chunk_sites, k * args.chunk)
            t_safe = time.perf_counter() - t0
            rows.append({"chunk": k + 1, "file_mb": round(safe.stat().st_size / 1e6, 1),
                         "in_place_s": round(t_in_place, 3), "spare_and_replace_s": round(t_safe, 3)})
            print(rows[-1], flush=True)
        appender.close()
        with h5py.File(safe) as a, h5py.File(in_place) as b:
            assert all(np.array_equal(a[n][()], b[n][()]) for n in a), "the two files differ"

    out = {
        "settings": {"chunk": args.chunk, "chunks": args.chunks, "source_crystals": len(results),
                     "command": f"python benchmarks/bench_h5_append.py --chunk {args.chunk} --chunks {args.chunks}",
                     "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")},
        "rows_s_per_chunk": round(rows_seconds, 2),
        "chunks": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
